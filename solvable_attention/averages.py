"""Mean ± standard error: the one estimator of an average and its error used across the package.

Over seeds of a simulation, over Monte Carlo samples of the theory, over replicas: ``mean`` and
``se = std(ddof=1)/√n`` (``nan`` for ``n < 2``), optionally importance-weighted (delta method), or with
a control variate of known mean (regression estimator). Returned as :class:`MeanSE`, a named tuple
``(mean, se, n)`` that unpacks like a tuple.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np


class MeanSE(NamedTuple):
    """An estimate of an average with its standard error; unpacks as ``mean, se, n``.

    Attributes:
        mean: the estimate (same units as the values averaged).
        se: its standard error (``nan`` when it cannot be estimated, e.g. ``n < 2``).
        n: the number of values behind it.
    """

    mean: float
    se: float
    n: int

    def format(self, digits: int = 6) -> str:
        """``"mean ± se"`` (the mean alone when ``n < 2`` or the s.e. is not finite).

        Args:
            digits: significant digits of the mean (the s.e. gets 2).

        Returns:
            The formatted text.
        """
        if self.n < 2 or not math.isfinite(self.se):
            return f"{self.mean:.{digits}g}"
        return f"{self.mean:.{digits}g} ± {self.se:.2g}"


def mean_se(values, weights=None) -> MeanSE:
    """Mean of ``values`` and its standard error.

    Args:
        values: array-like of shape ``(n,)`` (any iterable of numbers).
        weights: optional non-negative importance weights, shape ``(n,)``; normalised here to ``w_i``
            (``Σ w_i = 1``).

    Returns:
        :class:`MeanSE`. Unweighted: ``x̄`` and ``std(ddof=1)/√n`` (``nan`` for ``n < 2``; for scrambled
        Sobol points an upper bound). Weighted: ``Σ w_i x_i`` and the delta-method s.e.
        ``√(Σ w_i² (x_i − x̄)²)``. An empty input gives ``(nan, nan, 0)``.
    """
    x = np.asarray(values if not hasattr(values, "__next__") else list(values), dtype=float)
    n = x.size
    if n == 0:
        return MeanSE(math.nan, math.nan, 0)
    if weights is not None:
        w = np.asarray(weights, float)
        w = w / w.sum()
        mean = float(np.sum(w * x))
        return MeanSE(mean, float(np.sqrt(np.sum(w * w * (x - mean) ** 2))), n)
    se = float(np.std(x, ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    return MeanSE(float(np.mean(x)), se, n)


def control_variate_mean_se(values, control, control_mean: float) -> MeanSE:
    """Regression (control-variate) estimate of ``E[y]`` from seeds with a control ``c`` of known mean.

    Fits ``y = a + b c`` by least squares over the seeds and returns the fitted value at
    ``c = E[c]`` (unbiased for a linear dependence, and never worse in variance than ``ȳ`` to first
    order), with its standard error ``s √(1/n + (c̄ − E[c])²/S_cc)``, ``s² = Σ residual²/(n − 2)``.
    Used for fine-tuning metrics with ``c = ρ_v = ‖v‖²/D`` (``E[ρ_v] = 1`` exactly): the seed-to-seed
    spread of ``q'`` and ``E'_0`` at ``D ≤ 200`` comes mostly from ``ρ_v`` (sd ``√(2/D)``).

    Args:
        values: ``(n,)`` the values ``y`` over seeds.
        control: ``(n,)`` the control ``c`` over the same seeds.
        control_mean: the known ``E[c]``.

    Returns:
        :class:`MeanSE` of the regression estimate.

    Raises:
        ValueError: ``values`` and ``control`` of different shapes, fewer than 3 seeds, or a constant
            control.
    """
    y, c = np.asarray(values, float), np.asarray(control, float)
    if y.shape != c.shape:
        raise ValueError(f"values and control must have the same shape, got {y.shape} and {c.shape}")
    n = y.size
    c_bar = c.mean()
    scc = float(np.sum((c - c_bar) ** 2))
    if n < 3 or scc <= 0:
        raise ValueError("a control variate needs >= 3 seeds and a non-constant control")
    b = float(np.sum((c - c_bar) * (y - y.mean())) / scc)
    resid = y - y.mean() - b * (c - c_bar)
    s2 = float(resid @ resid / (n - 2))
    value = float(y.mean() + b * (control_mean - c_bar))
    return MeanSE(value, float(np.sqrt(s2 * (1 / n + (c_bar - control_mean) ** 2 / scc))), n)
