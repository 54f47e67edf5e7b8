"""Theory vs finite-D simulation: tidy comparison tables and D → ∞ extrapolation.

For a metric measured at several ``D`` over seeds: per-``D`` mean, standard error
(``std(ddof=1)/√n``), gap to theory and z-score ``gap/s.e.``; and a weighted
least-squares fit ``mean(D) = a + b·D^{-p}`` (``p = 1`` by default; ``p = 1/2`` for the
slow corrections of soft-thresholded spectra), whose intercept ``a ± s.e.`` is the
extrapolation compared with theory. Acceptance (DEVELOPERS.md "Statistics that hold"):
the gap shrinks with ``D`` and the extrapolation agrees within 3 s.e. or 3 %.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class ComparisonRow:
    """One metric at one ``D``: theory, simulation mean ± s.e. over ``n`` seeds, gap, z-score."""

    metric: str
    D: int
    theory: float
    mean: float
    se: float
    n: int
    gap: float
    z: float

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Extrapolation:
    """Fit ``a + b D^{-power}``: intercept ``a ± a_se`` vs theory ``± theory_se`` (the theory's own
    Monte Carlo error, 0 for closed forms); ``chi2`` per degree of freedom. ``z`` uses the combined
    standard error ``√(a_se² + theory_se²)``."""

    metric: str
    power: float
    value: float
    se: float
    slope: float
    chi2_dof: float
    theory: float
    theory_se: float = 0.0

    @property
    def combined_se(self) -> float:
        return float(np.hypot(self.se, self.theory_se))

    @property
    def z(self) -> float:
        return (self.value - self.theory) / self.combined_se if self.combined_se > 0 else float("inf")

    @property
    def relative_gap(self) -> float:
        return abs(self.value - self.theory) / max(abs(self.theory), 1e-12)

    def agrees(self, n_se: float = 3.0, rel: float = 0.03) -> bool:
        return abs(self.value - self.theory) <= n_se * self.combined_se or self.relative_gap <= rel

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(z=self.z, relative_gap=self.relative_gap, agrees=self.agrees())
        return d


def mean_se(values) -> tuple[float, float, int]:
    v = np.asarray(values, float)
    n = v.size
    if n == 0:
        return float("nan"), float("nan"), 0
    se = float(v.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    return float(v.mean()), se, n


def comparison_rows(metric: str, theory: float, by_D: dict) -> list[ComparisonRow]:
    """``by_D``: ``{D: [values over seeds]}`` → one :class:`ComparisonRow` per ``D`` (sorted)."""
    rows = []
    for D in sorted(by_D):
        mean, se, n = mean_se(by_D[D])
        gap = mean - theory
        rows.append(ComparisonRow(metric, int(D), float(theory), mean, se, n, gap,
                                  gap / se if se and se > 0 else float("nan")))
    return rows


def extrapolate(rows: list[ComparisonRow], power: float = 1.0, theory_se: float = 0.0) -> Extrapolation:
    """Weighted least squares of ``mean = a + b D^{-power}`` (weights ``1/s.e.²``) over ``rows``.

    ``theory_se``: Monte Carlo standard error of the theory value (enters the verdict).
    Needs at least 2 values of ``D``; with 2 the fit is exact and ``chi2_dof`` is NaN.
    """
    if len(rows) < 2:
        raise ValueError("extrapolation needs rows at >= 2 values of D")
    x = np.array([r.D for r in rows], float) ** (-power)
    y = np.array([r.mean for r in rows])
    se = np.array([r.se for r in rows])
    se = np.where(np.isfinite(se) & (se > 0), se, np.nanmax(se[np.isfinite(se)]) if np.any(np.isfinite(se)) else 1.0)
    A = np.stack([np.ones_like(x), x], axis=1) / se[:, None]
    b = y / se
    cov = np.linalg.inv(A.T @ A)
    coef = cov @ A.T @ b
    resid = b - A @ coef
    dof = len(rows) - 2
    chi2 = float(resid @ resid / dof) if dof > 0 else float("nan")
    return Extrapolation(rows[0].metric, power, float(coef[0]), float(np.sqrt(cov[0, 0])), float(coef[1]), chi2,
                         rows[0].theory, float(theory_se))


def gap_shrinks(rows: list[ComparisonRow]) -> bool:
    """Whether ``|gap|`` at the largest ``D`` is below ``|gap|`` at the smallest, or within 2 s.e. of 0."""
    first, last = rows[0], rows[-1]
    return abs(last.gap) < abs(first.gap) or abs(last.gap) <= 2 * last.se
