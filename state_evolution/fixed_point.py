"""Damped fixed-point iteration with adaptive damping and a root-finder fallback.

Solves ``x = F(x)`` by ``x ← (1 − η) x + η F(x)``. The damping ``η`` grows (×1.2, up to
``η_max``) while the residual decreases and halves when it increases. If the iteration
has not converged after ``max_iter`` steps, ``scipy.optimize.root`` (Powell hybrid) is
tried on ``F(x) − x`` from the best iterate. The outcome always says whether it converged
(like optimistix: never a silent number).

Residual: ``‖F(x) − x‖₂ / max(‖x‖₂, scale)`` (relative, with an absolute floor ``scale``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import scipy.optimize


class ConvergenceWarning(UserWarning):
    """A state-evolution solve did not reach its tolerance."""


@dataclass(frozen=True)
class FixedPointSolution:
    """``value`` (the last iterate), ``converged``, ``iterations``, final ``residual``, ``method``
    (``"damped"`` or ``"root"``) and the residual history."""

    value: np.ndarray
    converged: bool
    iterations: int
    residual: float
    method: str
    history: tuple = field(default=(), repr=False)


def relative_residual(x, Fx, scale: float = 1e-8) -> float:
    x, Fx = np.asarray(x, float), np.asarray(Fx, float)
    return float(np.linalg.norm(Fx - x) / max(np.linalg.norm(x), scale))


def solve_fixed_point(F, x0, *, tol=1e-9, max_iter=500, damping=0.7, damping_min=0.02, damping_max=1.0,
                      fallback=True, project=None) -> FixedPointSolution:
    """Iterate ``x ← (1−η)x + ηF(x)`` until ``relative_residual(x, F(x)) ≤ tol``.

    ``project``: optional map applied after each update (e.g. clip to a valid domain).
    """
    x = np.asarray(x0, float)
    eta = float(damping)
    history = []
    best_x, best_res = x, np.inf
    prev = np.inf
    for it in range(1, max_iter + 1):
        Fx = np.asarray(F(x), float)
        if not np.all(np.isfinite(Fx)):
            raise FloatingPointError(f"state-evolution map returned non-finite values {Fx} at {x}")
        res = relative_residual(x, Fx)
        history.append(res)
        if res < best_res:
            best_x, best_res = x, res
        if res <= tol:
            return FixedPointSolution(Fx, True, it, res, "damped", tuple(history))
        eta = min(eta * 1.2, damping_max) if res < prev else max(eta * 0.5, damping_min)
        prev = res
        x = (1 - eta) * x + eta * Fx
        if project is not None:
            x = np.asarray(project(x), float)
    if fallback:
        sol = scipy.optimize.root(lambda y: np.asarray(F(y), float) - y, best_x, method="hybr", tol=tol * 1e-2)
        res = relative_residual(sol.x, F(sol.x))
        history.append(res)
        if res <= tol:
            return FixedPointSolution(np.asarray(sol.x), True, max_iter + sol.nfev, res, "root", tuple(history))
    return FixedPointSolution(best_x, False, max_iter, best_res, "damped", tuple(history))


def warn_if_not_converged(name: str, solution: FixedPointSolution, tol: float) -> None:
    if not solution.converged:
        warnings.warn(f"{name} did not converge: residual {solution.residual:.3g} > tol {tol:.3g} after "
                      f"{solution.iterations} iterations (converged=False)", ConvergenceWarning, stacklevel=3)
