"""Damped, Anderson-accelerated fixed-point iteration with a root-finder fallback.

Solves ``x = F(x)`` by damped steps ``x ← x + η (F(x) − x)`` mixed over the last few iterates
(Anderson acceleration). The damping ``η`` grows (×1.2, up to ``η_max``) while the residual
decreases and halves when it increases; where ``F`` cannot be evaluated (:class:`InvalidIterate`)
or a step blows up, the step is redone from the best iterate with ``η/4``. If the iteration has
not converged after ``max_iter`` evaluations, ``scipy.optimize.root`` (Powell hybrid) is tried on
``F(x) − x`` from the best iterate. The outcome always says whether it converged
(like optimistix: never a silent number).

Residual: ``‖F(x) − x‖₂ / max(‖x‖₂, scale)`` (relative, with an absolute floor ``scale``).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import scipy.optimize

from solvable_attention.status import Status


class ConvergenceWarning(UserWarning):
    """A state-evolution solve did not reach its tolerance."""


class InvalidIterate(ArithmeticError):
    """The map cannot be evaluated at this iterate (e.g. a conjugate response ``V̂ <= 0``): the damped
    iteration backtracks towards the previous iterate with a smaller damping."""


@dataclass(frozen=True)
class FixedPointSolution:
    """``value``, ``converged``, ``iterations`` (evaluations of ``F``), final ``residual``, ``method``
    (``"damped"``, ``"damped+root"``, ``"root"``, ``"secant"``: stopped on the secant estimate of the value's
    error, ``"stalled<=accept_tol"`` or ``"time_limit"``), the residual history, and ``memory``: the
    secant pairs ``(ΔX, ΔF)`` of the last Anderson steps (columns), to seed the solve of a nearby
    map (:func:`solve_fixed_point`'s ``memory``; ``None`` when there are none), and ``evaluated_at``: the
    point where ``F`` was evaluated to give ``value`` (``value = F(evaluated_at)`` for the damped
    methods; ``value`` itself for ``"root"`` and for a failed solve), so that a caller that memoises its
    map's evaluations can report the quantities behind ``value`` without evaluating ``F`` again;
    ``status`` (:class:`~solvable_attention.status.Status`: converged, converged at the noise floor,
    iteration cap, left the domain) and ``status_message`` (residual, bound, evaluations)."""

    value: np.ndarray
    converged: bool
    iterations: int
    residual: float
    method: str
    history: tuple = field(default=(), repr=False)
    memory: tuple | None = field(default=None, repr=False)
    evaluated_at: np.ndarray | None = field(default=None, repr=False)
    status: Status = Status.CONVERGED
    status_message: str = ""


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


# Default tolerances of fixed points whose map is a Monte Carlo average over n fixed samples (softmax
# pre-training, every LoRA channel). The outputs carry a relative Monte Carlo error ~1e-3 at n = 2^14,
# and the sampled map is only piecewise smooth: when a sample's global prox minimiser switches between
# two local minima of the non-convex loss, the map jumps by O(1/n) relative. Residuals stall at a few
# 1e-5 where many samples sit near a switch (measured: softmax α = 0.1, Δ = 0.5, λ = 0.005, λ' = 0.05,
# best residual 4e-5 cycling up to 2e-4 for 400 evaluations), so the target is 1e-5 and a stalled
# iteration is accepted below 1e-4 (still an order of magnitude under the Monte Carlo error).
SAMPLED_TOL = 1e-5
SAMPLED_ACCEPT_TOL = 1e-4
MAX_EXTRAPOLATION = 10.0  # largest Anderson step, in units of the undamped step F(x) − x
MAX_INVALID_RUN = 8  # consecutive invalid iterates (η already at its floor) before giving up
STALL = 12  # evaluations without a significantly better residual before Anderson mixing is abandoned
ACCEPT_STALL = 4  # below accept_tol, evaluations without a significant gain before the best iterate is accepted
STALL_GAIN = 0.7  # "significantly better": below STALL_GAIN × the residual at the last reset of the stall count
# The secant estimate of the returned value's error (``estimate_below``) is trusted only when the last step cut the
# residual by at least this factor (the secant model is working), its least-squares fit leaves at most
# SECANT_MISFIT of the residual unexplained, and the secant differences span the space (smallest singular value
# above SECANT_RANK times the largest).
SECANT_CONTRACTION = 0.5
SECANT_MISFIT = 0.1
SECANT_RANK = 1e-8


def _anderson_step(x, f, dxs, dfs, eta, reg=1e-10):
    """Anderson (type II) mixing at the iterate ``x`` with residual ``f = F(x) − x`` and the stored
    secant pairs ``dxs, dfs`` (differences of consecutive iterates and of their residuals).

    With ``ΔX, ΔF`` their columns, ``γ = argmin ‖f − ΔF γ‖²`` (Tikhonov ``reg`` relative to ``‖ΔF‖²``)
    and ``x⁺ = x + η f − (ΔX + η ΔF) γ``; with no pair this is the damped step ``x + η f``, which is
    also used when the mixed step is more than ``MAX_EXTRAPOLATION`` times longer than the undamped
    step ``f`` (a bound independent of ``η``, so that Anderson keeps its secant steps after a restart
    has shrunk ``η``). When the pairs span the space, ``x⁺ = x − ΔX ΔF⁻¹ f``: a secant (quasi-Newton)
    step whatever ``η``.
    """
    if not dxs:
        return x + eta * f
    dX, dF = np.stack(dxs, 1), np.stack(dfs, 1)
    A = dF.T @ dF
    A += reg * (np.trace(A) + 1e-300) * np.eye(A.shape[0])
    gamma = np.linalg.solve(A, dF.T @ f)
    step = eta * f - (dX + eta * dF) @ gamma
    if not np.all(np.isfinite(step)) or np.linalg.norm(step) > MAX_EXTRAPOLATION * np.linalg.norm(f):
        return x + eta * f  # an extrapolation far beyond the undamped step is not trusted
    return x + step


def solve_fixed_point(F, x0, *, tol=1e-9, max_iter=500, damping=0.7, damping_min=0.02, damping_max=1.0,
                      anderson=4, fallback=True, polish_below=0.0, project=None,
                      accept_tol=None, memory=None, deadline=None, progress=None,
                      estimate_below=None) -> FixedPointSolution:
    """Solve ``x = F(x)`` until ``relative_residual(x, F(x)) ≤ tol``.

    ``accept_tol`` (default ``tol``): a looser tolerance accepted once the iteration has stalled
    (``ACCEPT_STALL`` evaluations without a residual below ``STALL_GAIN`` × the last reference) with its best
    residual below it; the result is then the best iterate, ``converged=True``, ``method="stalled<=accept_tol"`` and its residual. Meant
    for maps with a noise floor (Monte Carlo maps with O(1/n) jumps, see ``SAMPLED_TOL``). A callable
    ``accept_tol(x)`` gives the tolerance at the evaluated point ``x`` (e.g. from the Monte Carlo error
    of ``F(x)``, which a memoising map knows).

    Steps are damped, ``x ← x + η (F(x) − x)``, accelerated by Anderson mixing over the last
    ``anderson`` steps (``0``: plain damped iteration). ``η`` grows (×1.2, up to ``damping_max``) while
    the residual decreases and halves when it increases; a step whose residual is more than 10× the
    best so far, or where ``F`` cannot be evaluated (:class:`InvalidIterate`), is redone from the
    best iterate as a plain damped step with ``η/4`` and the Anderson memory is cleared. If the best
    residual has not improved for ``STALL`` evaluations, Anderson mixing is abandoned for plain damped
    steps from the best iterate, with the root polish enabled below ``10⁻⁴``.
    Optionally, once the residual is below ``polish_below`` (default 0: never) the last stretch is
    handed to a Powell-hybrid root polish (tried once; the iteration goes on if it fails; with
    Anderson mixing it rarely pays: it spends ~10 evaluations on a finite-difference Jacobian where
    Anderson needs 2–4 steps). After ``max_iter`` evaluations the root finder is tried from the best
    iterate (``fallback``).
    ``project``: optional map applied after each update (e.g. clip to a valid domain).
    ``memory``: secant pairs ``(ΔX, ΔF)`` (``(n, k)`` arrays, columns) from the solve of a nearby map
    (``FixedPointSolution.memory`` of the previous point of a sweep): the first step is then already a
    secant step (the Jacobian of ``F − id`` changes slowly along a sweep), instead of ``anderson``
    damped steps spent rebuilding it (measured on Figure 1's sweeps: docs/theory.md §2.6). Discarded
    at the first restart, like the solve's own pairs.
    ``estimate_below``: a residual below which convergence may also be judged by the *value* returned,
    ``F(x)``, rather than by the residual: its distance to the fixed point of the secant model fitted to the
    Anderson pairs, ``‖x − ΔX γ − F(x)‖/‖x‖`` with ``ΔF γ = F(x) − x`` (least squares), which for a linear map
    is ``‖J (I − J)⁻¹ (F(x) − x)‖/‖x‖`` exactly. The solve stops, ``method="secant"``, when that estimate is
    below ``tol`` — the same accuracy asked of the value — provided the last step cut the residual at least
    ``1/SECANT_CONTRACTION``-fold, the pairs span the space and the fit explains the residual
    (docs/theory.md §2.6). The pairs must be at least as many as the components of ``x`` (``anderson ≥ len(x)``),
    else the residual alone decides. ``None``: the residual alone decides. A wrong estimate returns a value at
    residual ``≤ estimate_below``, as uncertain as a stalled iteration accepted at that residual (``accept_tol``):
    ~``‖(I − J)⁻¹‖ · estimate_below``, not bounded by the residual when ``J`` has an eigenvalue near 1.
    ``deadline``: a :func:`time.monotonic` time after which no further evaluation starts; the best iterate is
    then returned, ``converged=False``, ``method="time_limit"`` (no root fallback: it would cost more
    evaluations). ``progress``: called as ``progress(evaluations, residual)`` after each evaluation.

    Raises:
        ValueError: ``estimate_below`` is neither ``None`` nor a positive finite number.
        InvalidIterate: ``F`` cannot be evaluated at the first iterate.
        FloatingPointError: ``F`` returned non-finite values.
    """
    if estimate_below is not None and not (isinstance(estimate_below, (int, float)) and estimate_below > 0
                                           and np.isfinite(estimate_below)):
        raise ValueError(f"estimate_below must be a positive number or None, got {estimate_below!r}")
    x = np.asarray(x0, float)
    if project is not None:  # a start outside the domain (e.g. an extrapolated warm start) is projected first
        x = np.asarray(project(x), float)
    it = _Iteration(x, float(damping), damping_min, damping_max, anderson, polish_below, project, memory)
    while it.n_eval < max_iter:
        if deadline is not None and time.monotonic() >= deadline:
            value = it.best_x if it.best_x is not None else it.x
            return it.result(value, False, it.best_res, "time_limit", value)
        Fx = it.evaluate(F)
        if Fx is None:  # F could not be evaluated: restarted from the best iterate, or out of valid steps
            if it.invalid_run >= MAX_INVALID_RUN:
                break  # no valid step left near the best iterate: report (root fallback below)
            continue
        res = relative_residual(it.x, Fx)
        it.history.append(res)
        if progress is not None:
            progress(it.n_eval, res)
        if res <= tol:
            return it.result(Fx, True, res, "damped", it.x)
        if res > 10 * it.best_res and (it.dxs or it.last is not None):
            it.x = it.restart_from_best()
            continue
        it.record(Fx, res)
        if estimate_below is not None and res <= estimate_below and res <= SECANT_CONTRACTION * it.prev:
            error = it.value_error(Fx)
            if error is not None and error <= tol:
                return it.result(Fx, True, res, "secant", it.x, value_error=error)
        if it.since_best >= ACCEPT_STALL and accept_tol is not None:
            bound = accept_tol(it.best_x) if callable(accept_tol) else accept_tol
            if it.best_res <= bound:
                return it.result(it.best_Fx, True, it.best_res, "stalled<=accept_tol", it.best_x, bound)
        if it.anderson > 0 and it.since_best >= STALL:
            # Anderson is wandering: plain damped steps from the best iterate, root polish allowed
            it.anderson, it.polish_below = 0, max(it.polish_below, 1e-4)
            it.x = it.restart_from_best()
            continue
        if fallback and not it.polished and res <= it.polish_below:
            it.polished = True
            polished = it.polish(F, it.x, tol, "damped+root")
            if polished is not None:
                return polished
        it.advance(Fx, res)
    if fallback and it.best_x is not None:
        polished = it.polish(F, it.best_x, tol, "root")
        if polished is not None:
            return polished
    value = it.best_x if it.best_x is not None else it.x
    return it.result(value, False, it.best_res, "damped", value)


def _seeded_memory(memory, anderson: int, n: int):
    """The secant pairs ``(ΔX, ΔF)`` of a previous solve as lists of columns (the last ``anderson``), or
    empty lists when there is no memory, no mixing, or the pairs do not fit an ``n``-vector."""
    if memory is None or anderson <= 0:
        return [], []
    mX, mF = (np.asarray(a, float) for a in memory)
    if mX.shape == mF.shape and mX.ndim == 2 and mX.shape[0] == n and np.all(np.isfinite(mX)) \
            and np.all(np.isfinite(mF)):
        return list(mX.T[-anderson:]), list(mF.T[-anderson:])
    return [], []


class _Iteration:
    """The state of one :func:`solve_fixed_point` run: iterate, damping, Anderson pairs, best iterate,
    stall count and history, with the steps that update them."""

    def __init__(self, x, eta, damping_min, damping_max, anderson, polish_below, project, memory):
        self.x, self.eta, self.damping_min, self.damping_max = x, eta, damping_min, damping_max
        self.anderson, self.polish_below, self.project = anderson, polish_below, project
        self.history = []
        self.best_x = self.best_Fx = None
        self.best_res = np.inf
        self.prev = np.inf
        self.dxs, self.dfs = _seeded_memory(memory, anderson, x.size)  # secant pairs (columns)
        self.last = None  # (x, F(x) − x) of the previous accepted evaluation
        self.polished = False
        self.n_eval = 0
        self.since_best = 0  # evaluations since the best residual last improved significantly (STALL_GAIN)
        self.stall_ref = np.inf  # the residual at the last reset of since_best
        self.invalid_run = 0  # consecutive evaluations that raised InvalidIterate

    def evaluate(self, F):
        """``F(x)``, or ``None`` after an :class:`InvalidIterate` (then ``x`` is restarted from the best
        iterate unless ``MAX_INVALID_RUN`` evaluations in a row failed; raised again before any valid one).

        Raises:
            FloatingPointError: ``F`` returned non-finite values.
        """
        try:
            Fx = np.asarray(F(self.x), float)
            self.n_eval += 1
        except InvalidIterate:
            if self.best_x is None:
                raise
            self.n_eval += 1
            self.invalid_run += 1
            self.history.append(np.nan)
            if self.invalid_run < MAX_INVALID_RUN:
                self.x = self.restart_from_best()
                if self.project is not None:
                    self.x = np.asarray(self.project(self.x), float)
            return None
        self.invalid_run = 0
        if not np.all(np.isfinite(Fx)):
            raise FloatingPointError(f"state-evolution map returned non-finite values {Fx} at {self.x}")
        return Fx

    def restart_from_best(self):
        """A plain damped step from the best iterate with ``η/4``; the Anderson memory is cleared."""
        self.eta = max(self.eta * 0.25, self.damping_min)
        self.dxs, self.dfs, self.last = [], [], None
        return (1 - self.eta) * self.best_x + self.eta * self.best_Fx

    def record(self, Fx, res):
        """Best iterate and stall count after a valid evaluation with residual ``res``."""
        if res < self.best_res:
            self.best_x, self.best_Fx, self.best_res = self.x, Fx, res
        if res < STALL_GAIN * self.stall_ref:  # a creeping best (a cycle near the noise floor) is a stall too
            self.stall_ref, self.since_best = res, 0
        else:
            self.since_best += 1

    def advance(self, Fx, res):
        """The next iterate: damping ×1.2 on a decrease (×0.5 otherwise), new secant pair, Anderson step."""
        self.eta = min(self.eta * 1.2, self.damping_max) if res < self.prev else max(self.eta * 0.5, self.damping_min)
        self.prev = res
        x, f = self.x, Fx - self.x
        if self.last is not None and self.anderson > 0:
            self.dxs = (self.dxs + [x - self.last[0]])[-self.anderson:]
            self.dfs = (self.dfs + [f - self.last[1]])[-self.anderson:]
        self.last = (x, f)
        x = _anderson_step(x, f, self.dxs, self.dfs, self.eta) if self.anderson > 0 else x + self.eta * f
        self.x = np.asarray(self.project(x), float) if self.project is not None else x

    def value_error(self, Fx):
        """The secant estimate of ``‖F(x) − x*‖/‖x‖`` at the current iterate (the ``estimate_below`` rule of
        :func:`solve_fixed_point`), or ``None`` when the Anderson pairs with this step's do not span the space
        or do not explain the residual."""
        if self.last is None or self.anderson <= 0:
            return None
        x, f = self.x, Fx - self.x
        dxs = (self.dxs + [x - self.last[0]])[-self.anderson:]
        dfs = (self.dfs + [f - self.last[1]])[-self.anderson:]
        if len(dxs) < x.size:
            return None
        dX, dF = np.stack(dxs, 1), np.stack(dfs, 1)
        sv = np.linalg.svd(dF, compute_uv=False)
        if not np.all(np.isfinite(sv)) or sv[-1] <= SECANT_RANK * sv[0]:
            return None
        gamma = np.linalg.lstsq(dF, f, rcond=None)[0]
        if np.linalg.norm(f - dF @ gamma) > SECANT_MISFIT * np.linalg.norm(f):
            return None
        return float(np.linalg.norm(x - dX @ gamma - Fx) / max(np.linalg.norm(x), 1e-8))

    def polish(self, F, x, tol, method):
        """The root polish from ``x``: the converged solution (``method``), or ``None``."""
        xr, rr, ne = _root_polish(F, x, tol)
        self.n_eval += ne
        self.history.append(rr)
        return self.result(xr, True, rr, method, xr) if rr <= tol else None

    def result(self, value, converged, res, method, at, accepted_below=None, value_error=None):
        mem = (np.stack(self.dxs, 1), np.stack(self.dfs, 1)) if self.dxs else None
        status, message = self.status(converged, res, method, accepted_below)
        if value_error is not None:
            message += f"; secant estimate of the value's error {value_error:.2g}"
        return FixedPointSolution(value, converged, self.n_eval, res, method, tuple(self.history), mem, at,
                                  status, message)

    def status(self, converged, res, method, accepted_below):
        """The :class:`~solvable_attention.status.Status` of a result and its message."""
        if converged and accepted_below is not None:
            return Status.CONVERGED_AT_NOISE_FLOOR, (f"stalled at residual {res:.3g} <= acceptance bound "
                                                     f"{accepted_below:.3g} after {self.n_eval} evaluations")
        if converged:
            return Status.CONVERGED, f"residual {res:.3g} after {self.n_eval} evaluations ({method})"
        if method == "time_limit":
            return Status.MAX_ITERATIONS, (f"time limit reached after {self.n_eval} evaluations "
                                           f"(best residual {res:.3g})")
        if self.best_x is None or self.invalid_run >= MAX_INVALID_RUN:
            return Status.LEFT_DOMAIN, (f"no valid step left after {self.n_eval} evaluations "
                                        f"(best residual {res:.3g})")
        return Status.MAX_ITERATIONS, f"best residual {res:.3g} after {self.n_eval} evaluations"


def warn_if_not_converged(name: str, solution, tol: float) -> None:
    """Emit a :class:`ConvergenceWarning` when ``solution`` (any result with ``converged``, ``status``,
    ``status_message``) did not succeed.

    Args:
        name: the solve's name, for the message.
        solution: the result.
        tol: the target tolerance, for the message.
    """
    if not solution.converged:
        warnings.warn(f"{name} did not succeed ({solution.status.value}, converged=False, tol {tol:.3g}): "
                      f"{solution.status_message}",
                      ConvergenceWarning, stacklevel=3)


class MemoizedMap:
    """``x ↦ F(x)`` that remembers its auxiliary output per evaluated point: ``evaluate(x)`` returns
    ``(F(x), aux)`` for the wrapped function; calling the object returns ``F(x)`` (what the solver
    needs) and ``aux_at(x)`` gives back the ``aux`` of an evaluated point (``None`` otherwise). The
    channels' conjugates behind a solution are read this way instead of evaluating the channel again
    at ``FixedPointSolution.evaluated_at``."""

    def __init__(self, evaluate):
        self._evaluate = evaluate
        self._aux = {}

    @staticmethod
    def _key(x):
        return np.asarray(x, float).tobytes()

    def __call__(self, x):
        value, aux = self._evaluate(x)
        self._aux[self._key(x)] = aux
        return value

    def aux_at(self, x):
        return None if x is None else self._aux.get(self._key(x))


def predicted_start(previous, params, new_param):
    """Warm start along a sweep: the extrapolation in ``log(parameter)`` through the last solutions
    (``previous``: their state vectors, ``params``: their parameter values) — the parabola through the last three
    when three are given, the secant through the last two otherwise — or the last solution when only one is known.

    The start lies at most one step of the grid beyond the last solution (``t ∈ [0, 1]`` in units of the last
    spacing in ``log(parameter)``: a farther ``new_param`` gets the extrapolation to one step). No component may move towards zero by more than half its
    value: overlaps that vanish at a transition (``Ŝ → 0`` at large ``λ``) decay faster than linearly, and a start
    past zero (``V ≤ 0``) cost the Δ = 2 pre-training sweep 113 evaluations at one ``λ`` (measured; 5 with the
    guard); where the parabola would do that the secant is used, shortened by the same rule. The parabola's
    error is third order in the grid step, the secant's second: on Figure 1's pre-training sweep (40 ``λ`` per
    2.5 decades) the start's relative error is 2.5e-3–7e-3 against 2e-2–6e-2 (docs/theory.md §2.6)."""
    if not previous:
        return None
    x1 = np.asarray(previous[-1], float)
    if len(previous) < 2 or params[-1] == params[-2] or min(params[-1], params[-2], new_param) <= 0:
        return x1
    x0 = np.asarray(previous[-2], float)
    t = min(max(np.log(new_param / params[-1]) / np.log(params[-1] / params[-2]), 0.0), 1.0)
    d = x1 - x0
    if len(previous) >= 3 and 0.0 < t and min(params[-3:]) > 0 and len(set(params[-3:])) == 3:
        u = np.log(np.asarray(params[-3:], float))
        u_new = u[-1] + t * (u[-1] - u[-2])  # the start's parameter, at most one step beyond the last
        w = [np.prod([(u_new - u[j]) / (u[i] - u[j]) for j in range(3) if j != i]) for i in range(3)]
        quad = sum(wi * np.asarray(xi, float) for wi, xi in zip(w, previous[-3:]))
        step = quad - x1
        if np.all(np.isfinite(quad)) and not np.any((step * x1 < 0) & (np.abs(step) > 0.5 * np.abs(x1))):
            return quad
    shrinking = (d * x1 < 0) & (np.abs(d) > 0)
    if np.any(shrinking):
        t = min(t, float(np.min(0.5 * np.abs(x1[shrinking]) / np.abs(d[shrinking]))))
    return x1 + t * d
