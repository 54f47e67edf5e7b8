"""Damped fixed-point iteration with adaptive damping and a root-finder fallback.

Solves ``x = F(x)`` by ``x ← (1 − η) x + η F(x)``. The damping ``η`` grows (×1.2, up to
``η_max``) while the residual decreases and halves when it increases; where ``F`` cannot be
evaluated (:class:`InvalidIterate`) the step is redone from the previous iterate with ``η/4``. If the iteration
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


class InvalidIterate(ArithmeticError):
    """The map cannot be evaluated at this iterate (e.g. a conjugate response ``V̂ <= 0``): the damped
    iteration backtracks towards the previous iterate with a smaller damping."""


@dataclass(frozen=True)
class FixedPointSolution:
    """``value``, ``converged``, ``iterations`` (evaluations of ``F``), final ``residual``, ``method``
    (``"damped"``, ``"damped+root"`` or ``"root"``) and the residual history."""

    value: np.ndarray
    converged: bool
    iterations: int
    residual: float
    method: str
    history: tuple = field(default=(), repr=False)


def relative_residual(x, Fx, scale: float = 1e-8) -> float:
    x, Fx = np.asarray(x, float), np.asarray(Fx, float)
    return float(np.linalg.norm(Fx - x) / max(np.linalg.norm(x), scale))


def _root_polish(F, x, tol):
    """Powell-hybrid root of ``F(x) − x`` from ``x``; returns ``(x*, residual, evaluations)``."""
    try:
        sol = scipy.optimize.root(lambda y: np.asarray(F(y), float) - y, x, method="hybr", tol=tol * 1e-2)
        return np.asarray(sol.x), relative_residual(sol.x, F(sol.x)), sol.nfev + 1
    except InvalidIterate:
        return x, np.inf, 0


def solve_fixed_point(F, x0, *, tol=1e-9, max_iter=500, damping=0.7, damping_min=0.02, damping_max=1.0,
                      fallback=True, polish_below=1e-4, project=None) -> FixedPointSolution:
    """Iterate ``x ← (1−η)x + ηF(x)`` until ``relative_residual(x, F(x)) ≤ tol``.

    Once the residual is below ``polish_below`` the last, slow linear stretch is replaced by a
    Powell-hybrid root polish (tried once; the damped iteration goes on if it fails), and after
    ``max_iter`` iterations the root finder is tried from the best iterate (``fallback``).
    ``project``: optional map applied after each update (e.g. clip to a valid domain).
    """
    x = np.asarray(x0, float)
    eta = float(damping)
    history = []
    best_x, best_res = x, np.inf
    prev = np.inf
    x_prev = Fx_prev = None
    polished = False
    n_eval = 0
    for it in range(1, max_iter + 1):
        try:
            Fx = np.asarray(F(x), float)
            n_eval += 1
        except InvalidIterate:
            if x_prev is None:
                raise
            eta = max(eta * 0.25, damping_min)
            x = (1 - eta) * x_prev + eta * Fx_prev
            history.append(np.nan)
            continue
        if not np.all(np.isfinite(Fx)):
            raise FloatingPointError(f"state-evolution map returned non-finite values {Fx} at {x}")
        res = relative_residual(x, Fx)
        history.append(res)
        if res < best_res:
            best_x, best_res = x, res
        if res <= tol:
            return FixedPointSolution(Fx, True, n_eval, res, "damped", tuple(history))
        if fallback and not polished and res <= polish_below:
            polished = True
            xr, rr, ne = _root_polish(F, x, tol)
            n_eval += ne
            history.append(rr)
            if rr <= tol:
                return FixedPointSolution(xr, True, n_eval, rr, "damped+root", tuple(history))
        eta = min(eta * 1.2, damping_max) if res < prev else max(eta * 0.5, damping_min)
        prev = res
        x_prev, Fx_prev = x, Fx
        x = (1 - eta) * x + eta * Fx
        if project is not None:
            x = np.asarray(project(x), float)
    if fallback:
        xr, rr, ne = _root_polish(F, best_x, tol)
        n_eval += ne
        history.append(rr)
        if rr <= tol:
            return FixedPointSolution(xr, True, n_eval, rr, "root", tuple(history))
    return FixedPointSolution(best_x, False, n_eval, best_res, "damped", tuple(history))


def warn_if_not_converged(name: str, solution: FixedPointSolution, tol: float) -> None:
    if not solution.converged:
        warnings.warn(f"{name} did not converge: residual {solution.residual:.3g} > tol {tol:.3g} after "
                      f"{solution.iterations} iterations (converged=False)", ConvergenceWarning, stacklevel=3)
