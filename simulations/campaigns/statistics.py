"""Theory vs finite-D simulation: tidy comparison tables and D → ∞ extrapolation.

For a metric measured at several ``D`` over seeds: per-``D`` mean, standard error
(``std(ddof=1)/√n``), gap to theory and z-score ``gap/s.e.``; and a weighted
least-squares fit ``mean(D) = a + b·D^{-p}`` (``p = 1`` by default; ``p = 1/2`` for the
slow corrections of soft-thresholded spectra), whose intercept ``a ± s.e.`` is the
extrapolation compared with theory. Acceptance: the gap shrinks with ``D`` and the
extrapolation agrees within 3 s.e. or 3 %.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from solvable_attention.averages import control_variate_mean_se, mean_se

from .records import write_file_atomic


@dataclass(frozen=True)
class ComparisonRow:
    """One metric at one ``D``: theory, simulation mean ± s.e. over ``n`` seeds, gap, z-score.

    Attributes:
        metric: the metric's name (docs/model.md §4), e.g. ``"finetune.test_error"``.
        D: the embedding dimension of the simulations.
        theory: the state evolution's value (``D → ∞``).
        mean: the simulation mean over seeds (or its control-variate estimate).
        se: its standard error (``nan`` for a single seed).
        n: the number of seeds.
        gap: ``mean − theory``.
        z: ``gap / se`` (``nan`` when ``se`` is 0 or not finite).
    """

    metric: str
    D: int
    theory: float
    mean: float
    se: float
    n: int
    gap: float
    z: float

    def to_dict(self) -> dict:
        """The fields as a dictionary.

        Returns:
            ``{field: value}``.
        """
        return asdict(self)


@dataclass(frozen=True)
class Extrapolation:
    """Fit ``mean(D) = a + b D^{-power}``: the intercept ``a ± se`` against the theory ``± theory_se``.

    Attributes:
        metric: the metric's name.
        power: ``p`` in ``D^{-p}``.
        value: the intercept ``a``, the ``D → ∞`` extrapolation.
        se: its standard error.
        slope: ``b``.
        chi2_dof: ``χ²`` per degree of freedom of the weighted fit (``nan`` with 2 values of ``D``).
        theory: the theory's value.
        theory_se: the theory's own Monte Carlo standard error (0 for closed forms).
    """

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
        """``√(se² + theory_se²)``."""
        return float(np.hypot(self.se, self.theory_se))

    @property
    def z(self) -> float:
        """``(value − theory)/combined_se`` (``inf`` when ``combined_se = 0``)."""
        return (self.value - self.theory) / self.combined_se if self.combined_se > 0 else float("inf")

    @property
    def relative_gap(self) -> float:
        """``|value − theory| / |theory|`` (denominator at least ``1e-12``)."""
        return abs(self.value - self.theory) / max(abs(self.theory), 1e-12)

    def out_of_range(self, n_se: float = 3.0) -> bool:
        """Whether the extrapolated value leaves the metric's range (:func:`metric_bounds`, e.g. an alignment
        above 1) by more than ``n_se`` of its standard error: the fit in ``D^{-power}`` does not describe it.

        Args:
            n_se: tolerance in standard errors.

        Returns:
            The verdict (``False`` for unbounded metrics).
        """
        lo, hi = metric_bounds(self.metric)
        return self.value < lo - n_se * self.se or self.value > hi + n_se * self.se

    def agrees(self, n_se: float = 3.0, rel: float = 0.03) -> bool:
        """Whether the extrapolation agrees with the theory.

        Args:
            n_se: tolerance in combined standard errors.
            rel: relative tolerance.

        Returns:
            ``|value − theory| ≤ n_se · combined_se`` or ``relative_gap ≤ rel``, and the value within the
            metric's range (:meth:`out_of_range` false).
        """
        if self.out_of_range(n_se):
            return False
        return abs(self.value - self.theory) <= n_se * self.combined_se or self.relative_gap <= rel

    def to_dict(self) -> dict:
        """The fields plus ``z``, ``relative_gap`` and ``agrees`` (default tolerances).

        Returns:
            ``{name: value}``.
        """
        d = asdict(self)
        d.update(z=self.z, relative_gap=self.relative_gap, agrees=self.agrees(), out_of_range=self.out_of_range())
        return d


# The range of a bounded metric, by the last component of its name: a cosine lies in [0, 1]; errors, losses and
# second moments are non-negative.
METRIC_BOUNDS = {"alignment": (0.0, 1.0), "test_error": (0.0, np.inf), "test_error_baseline": (0.0, np.inf),
                 "train_loss": (0.0, np.inf), "mse_S": (0.0, np.inf), "q": (0.0, np.inf), "m_abs": (0.0, np.inf),
                 "rank_fraction": (0.0, 1.0)}
# Fewer seeds per D than this estimate a standard error poorly (its relative error is ~1/√(2(n − 1)): 27 % at
# n = 8, 71 % at n = 2); the table says so.
MIN_SEEDS = 8


def metric_bounds(metric: str) -> tuple[float, float]:
    """The range of a metric (``(-inf, inf)`` when unbounded), from the last component of its name.

    Args:
        metric: e.g. ``"finetune.alignment"``.

    Returns:
        ``(lower, upper)``.
    """
    return METRIC_BOUNDS.get(metric.rsplit(".", 1)[-1], (-np.inf, np.inf))


def comparison_rows(metric: str, theory: float, by_D: dict, controls: dict | None = None,
                    control_mean: float | None = None) -> list[ComparisonRow]:
    """``by_D``: ``{D: [values over seeds]}`` → one :class:`ComparisonRow` per ``D`` (sorted).

    With ``controls`` (``{D: [control over the same seeds]}``) and its known ``control_mean``, each
    mean is the control-variate estimate of :func:`control_variate_mean_se`.

    Args:
        metric: the metric's name.
        theory: its theory value.
        by_D: ``{D: [values over seeds]}``.
        controls: ``{D: [control over the same seeds]}``, or ``None`` for plain means.
        control_mean: the control's known mean (with ``controls``).

    Returns:
        One :class:`ComparisonRow` per ``D``, by increasing ``D``.

    Raises:
        ValueError: with ``controls``, a ``D`` with fewer than 3 seeds, a constant control, or values
            and control of different lengths (:func:`control_variate_mean_se`).
    """
    rows = []
    for D in sorted(by_D):
        if controls is None:
            mean, se, n = mean_se(by_D[D])
        else:
            mean, se, n = control_variate_mean_se(by_D[D], controls[D], control_mean)
        gap = mean - theory
        rows.append(ComparisonRow(metric, int(D), float(theory), mean, se, n, gap,
                                  gap / se if se and se > 0 else float("nan")))
    return rows


def extrapolate(rows: list[ComparisonRow], power: float = 1.0, theory_se: float = 0.0) -> Extrapolation:
    """Weighted least squares of ``mean = a + b D^{-power}`` (weights ``1/s.e.²``) over ``rows``.

    ``theory_se``: Monte Carlo standard error of the theory value (enters the verdict).
    Needs at least 2 values of ``D``; with 2 the fit is exact and ``chi2_dof`` is NaN. Rows with a
    zero or non-finite s.e. get the largest finite s.e. as weight.

    Args:
        rows: one metric's rows, one per ``D``.
        power: ``p`` in ``D^{-p}`` (1 by default; ``1/2`` for soft-thresholded spectra).
        theory_se: the theory's Monte Carlo standard error.

    Returns:
        The :class:`Extrapolation`.

    Raises:
        ValueError: fewer than 2 rows.
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
    """Whether ``|gap|`` at the largest ``D`` is below ``|gap|`` at the smallest, or within 2 s.e. of 0.

    Args:
        rows: one metric's rows, by increasing ``D`` (at least one).

    Returns:
        The verdict.
    """
    first, last = rows[0], rows[-1]
    return abs(last.gap) < abs(first.gap) or abs(last.gap) <= 2 * last.se


# --------------------------------------------------------------------------- the tidy table

@dataclass(frozen=True)
class ComparisonTable:
    """Theory vs simulation for several metrics: one :class:`ComparisonRow` per metric × ``D`` and one
    :class:`Extrapolation` (fit ``a + b D^{-power}``) per metric that has >= 2 values of ``D``.

    Attributes:
        rows: the :class:`ComparisonRow` s, metric-major, ``D`` increasing.
        extrapolations: the :class:`Extrapolation` s, one per metric with >= 2 values of ``D``.
    """

    rows: tuple
    extrapolations: tuple

    @property
    def metrics(self) -> list[str]:
        """The metrics, in order of first appearance."""
        return list(dict.fromkeys(r.metric for r in self.rows))

    @property
    def few_seeds(self) -> list:
        """The values of ``D`` with fewer than :data:`MIN_SEEDS` seeds (their s.e. is poorly estimated)."""
        return sorted({r.D for r in self.rows if r.n < MIN_SEEDS})

    def rows_of(self, metric: str) -> list[ComparisonRow]:
        """One metric's rows.

        Args:
            metric: the metric's name.

        Returns:
            Its :class:`ComparisonRow` s (empty if unknown).
        """
        return [r for r in self.rows if r.metric == metric]

    def extrapolation_of(self, metric: str):
        """One metric's extrapolation.

        Args:
            metric: the metric's name.

        Returns:
            Its :class:`Extrapolation`, or ``None`` (fewer than 2 values of ``D``, or unknown).
        """
        return next((e for e in self.extrapolations if e.metric == metric), None)

    def records(self) -> list[dict]:
        """Tidy records: ``kind="simulation"`` rows (one per metric × D) then ``kind="extrapolation"``
        rows (``D = inf``: the fitted intercept as ``mean ± se``, its gap and combined z-score).

        Returns:
            The list of record dictionaries.
        """
        out = [dict(kind="simulation", **r.to_dict()) for r in self.rows]
        for e in self.extrapolations:
            out.append(dict(kind="extrapolation", metric=e.metric, D=float("inf"), theory=e.theory, mean=e.value,
                            se=e.se, n=len(self.rows_of(e.metric)), gap=e.value - e.theory, z=e.z,
                            theory_se=e.theory_se, power=e.power, slope=e.slope, chi2_dof=e.chi2_dof,
                            agrees=e.agrees(), out_of_range=e.out_of_range(),
                            gap_shrinks=gap_shrinks(self.rows_of(e.metric))))
        return out

    def write_csv(self, path) -> None:
        """Write :meth:`records` as CSV (columns: the union of the records' keys).

        Args:
            path: the CSV file to write (overwritten).
        """
        import csv

        records = self.records()
        columns = list(dict.fromkeys(k for r in records for k in r))
        def write(tmp):
            with open(tmp, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=columns)
                w.writeheader()
                w.writerows(records)

        write_file_atomic(path, write)

    def format(self) -> str:
        """A plain-text table for the terminal.

        Returns:
            The table, one line per record under a header.
        """
        lines = [f"{'metric':<28} {'D':>6} {'theory':>10} {'sim mean':>10} {'s.e.':>9} {'gap':>10} {'z':>7}"]
        for r in self.records():
            D = "inf" if r["kind"] == "extrapolation" else str(r["D"])
            verdict = "OUT OF RANGE" if r.get("out_of_range") else ("agrees" if r.get("agrees") else "DISAGREES")
            tail = f"  {verdict}" if r["kind"] == "extrapolation" else ""
            lines.append(f"{r['metric']:<28} {D:>6} {r['theory']:>10.5g} {r['mean']:>10.5g} {r['se']:>9.3g} "
                         f"{r['gap']:>+10.3g} {r['z']:>+7.2f}{tail}")
        if self.few_seeds:
            lines.append(f"note: fewer than {MIN_SEEDS} seeds at D = {', '.join(map(str, self.few_seeds))}: the "
                         "standard errors, z-scores and verdicts are poorly estimated")
        return "\n".join(lines)


def comparison_table(theory: dict, values: dict, *, theory_se: dict | None = None,
                     power: float = 1.0) -> ComparisonTable:
    """The tidy theory-vs-simulation table.

    ``theory``: ``{metric: value}``; ``values``: ``{metric: {D: [simulated values over seeds]}}``;
    ``theory_se``: ``{metric: Monte Carlo s.e. of the theory}`` (default 0). Metrics of ``values``
    without a theory value are an error (nothing is compared silently to nothing).

    Args:
        theory: ``{metric: theory value}``.
        values: ``{metric: {D: [simulated values over seeds]}}``.
        theory_se: ``{metric: Monte Carlo s.e. of the theory}`` (default 0).
        power: ``p`` of the extrapolation ``a + b D^{-p}``.

    Returns:
        The :class:`ComparisonTable` (an extrapolation for each metric with >= 2 values of ``D``).

    Raises:
        ValueError: a metric of ``values`` without a theory value.
    """
    theory_se = theory_se or {}
    missing = [m for m in values if m not in theory]
    if missing:
        raise ValueError(f"no theory value for metrics {missing}")
    rows, extrapolations = [], []
    for metric, by_D in values.items():
        metric_rows = comparison_rows(metric, float(theory[metric]), by_D)
        rows.extend(metric_rows)
        if len(metric_rows) >= 2:
            extrapolations.append(extrapolate(metric_rows, power, float(theory_se.get(metric, 0.0))))
    return ComparisonTable(tuple(rows), tuple(extrapolations))
