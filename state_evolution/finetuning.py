"""The fine-tuning (rank-one LoRA) state evolution on top of the pre-training fixed point.

Unknowns ``x = (m', q', V')`` (and ``c`` when recalibrating). Channel side
(:mod:`state_evolution.channel_lora`) gives ``(m̂', q̂', V̂')`` and the ridge shift; the ridge prior
is closed form (docs/theory.md §4):

    λ_eff = λ' + 2α' E[∂ℓ/∂q'],   m' = m̂' ρ_v/(λ_eff + V̂'),   q' = (m̂'² ρ_v + q̂')/(λ_eff + V̂')²,
    V' = 1/(λ_eff + V̂'),

and ``c ← c − E[∂ℓ/∂c]/E[∂²ℓ/∂c²]`` (stationarity of the unregularised scalar). ``λ' = ∞``: ``û = 0``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field

import numpy as np

from solvable_attention.params import FinetuneParams
from solvable_attention.status import Status, raise_if_failed

from .branch_selection import merge_starts, reached_fixed_point, warn_if_unresolved
from .channel_identity import identity_weight
from .channel_lora import LoraChannel
from .fixed_point import SAMPLED_ACCEPT_TOL, SAMPLED_TOL, InvalidIterate, MemoizedMap, solve_fixed_point, warn_if_not_converged
from .pretraining import PretrainingSolution
from .sampling import N_SAMPLES, N_TEST_SAMPLES
from .stage_status import stage_status
from .solve_controls import (check_progress, deadline_after, evaluation_progress, flag_unchecked_branches,
                             skipped_by_time_limit)


# A stalled LoRA iteration is accepted below this relative residual. The LoRA map's noise floor is higher
# than the pre-training one: V̂' is a Stein average over two proxes per sample (docs/theory.md §4.3) and
# samples switch prox branch as (m', q', V') move, so the map jumps by O(1/n). Measured floors: ~4e-5 at
# Δ = 2, λ = 0.02, λ' = 0.05, ~3e-4 at Δ = 2, λ = 0.005, λ' = 0.05 (cold start, 80 evaluations). The
# outputs' Monte Carlo s.d. between channel seeds at 2^14 samples (Δ = 0.5, λ = λ' = 0.05, 4 seeds):
# m' 1.4 %, q' 2.6 %, E' 0.3 %, alignment 0.13 %: 5e-4 is below all of them.
LORA_ACCEPT_TOL = 5e-4
# ... or below this fraction of the relative Monte Carlo standard error of the map's output F(x), when that is
# larger. Where the prox is strongly non-convex (softmax, Δ = 2, λ ≲ 0.01, λ' = 0.05: V' ≈ 2.3) many samples
# sit near a switch between two minima and the noise floor is ~1e-3 (measured: residuals cycling between
# 4e-4 and 3e-3 for 20–40 evaluations), while one evaluation's relative s.e. there is ~3 % (m̂' 2.4 %, λ_eff + V̂'
# 1.5 %): iterating below 1/20 of it resolves nothing that the samples determine.
LORA_ACCEPT_NOISE_FRACTION = 0.05
# ... but never above this absolute bound: a fixed point accepted at relative residual r is uncertain by ~r in
# its overlaps, and 5e-3 keeps that six times below the 3 % agreement rule of the validation campaigns. The
# noise-fraction rule alone once accepted a residual of 2e-2 (α' = 1e5), whose E' then wobbled by 2 %.
LORA_ACCEPT_MAX = 5e-3
# The uninformative start of the LoRA equations: m' = 0 is invariant under v → −v, so the iteration from it
# stays on the symmetric (uninformative) branch when that branch is a fixed point.
UNINFORMATIVE_START = (0.0, 0.5, 0.5)
# The response V' of the starts is 0.5 (default) or the user's; when no start can be evaluated (λ_eff + V̂' ≤ 0
# there), the starts are retried with V' shrunk by these factors. The natural scale of V' is 1/V̂', and V̂' grows
# like the loss's curvature: identity activation at β = 4.6 (α = 0.27, Δ = 0.5, λ = 0.005, α' = 7.2, λ' = 0.65)
# has V̂' ≈ 200 near the fixed point, where V' = 0.5 makes the ridge shift −51 and the map undefined.
START_RESPONSE_SHRINK = (1.0, 0.1, 0.01, 0.001)
# Two branches whose (m', q') agree to this relative tolerance are the same fixed point ...
SAME_BRANCH_RTOL = 1e-3
# ... and two that are both û = 0 (null_within: q' at or below this, or q' and |m'| within what their solves
# resolve, fixed_point_resolution) are one too. At or below this q' û = 0 for every purpose (E' moves by O(q'): 1e-8),
# whatever their m' (at most √(q'ρ_v) = 1e-4). At this scale the alignment is also undefined: NaN is returned
# rather than a ratio of two vanishing numbers. Round-off gives q' ≈ 1e-16 at λ' = 100; a start that stalls on
# its way to û = 0 at the Monte Carlo noise floor leaves q' ≈ 1e-11 with an "alignment" of 0.7 (survey point #9).
NULL_UPDATE_SCALE = 1e-8
# Map evaluations at most for the branch-check starts (the starts after the first). A start that converges
# does so in far fewer (Figure 1's 240 points: 7.5 evaluations per solve on average); one that has not
# converged by then is kept as a MAX_ITERATIONS branch, and if its objective is lower than the returned
# branch's the status says NOT_GLOBAL (docs/theory.md §4.6): the cap never hides a lower branch, it only
# stops paying for a start that drifts (measured: the uninformative start at Δ = 2, λ = 0.01, λ' = 0.05
# ran all 400 evaluations, 100 s, without converging; its branch is RS-unstable).
BRANCH_CHECK_MAX_ITER = 100


@dataclass(frozen=True)
class Branch:
    """One fixed point of the LoRA equations found from one start (docs/theory.md §4.6).

    Attributes:
        start: the starting ``(m', q', V'[, c])``.
        m: ``m'`` at the fixed point.
        q: ``q'``.
        V: ``V'``.
        alignment: ``|m'|/√(q' ρ_v)``.
        test_error: ``E'``.
        objective: the predicted training objective per fine-tuning sample, ``½ E‖Y' − σ‖² + λ' q'/(2α')``.
        objective_se: its Monte Carlo standard error.
        replicon: the replicon at the fixed point.
        status: the status of this branch's solve.
    """

    start: tuple
    m: float
    q: float
    V: float
    alignment: float
    test_error: float
    objective: float
    objective_se: float
    replicon: float
    status: Status

    def to_dict(self) -> dict:
        """The fields as a JSON-ready dictionary (``status`` as its name).

        Returns:
            ``{field: value}``.
        """
        d = dataclasses.asdict(self)
        d["status"], d["start"] = self.status.value, list(self.start)
        return d


@dataclass(frozen=True)
class FinetuningSolution:
    """The fine-tuning fixed point and its metrics (names as the simulator's; docs/theory.md §4.3–§4.5,
    docs/model.md §4).

    Attributes:
        params: the fine-tuning setting (:class:`~solvable_attention.params.FinetuneParams`).
        m: ``m' = û·v/D``, overlap of the LoRA vector with the new direction.
        q: ``q' = ‖û‖²/D``.
        V: ``V'``, the response of the ridge prior, ``1/(λ_eff + V̂')``.
        m_hat: ``m̂'``, conjugate of ``m'``.
        q_hat: ``q̂'``, conjugate of ``q'``.
        V_hat: ``V̂'``, conjugate of ``V'``.
        rho_v: ``ρ_v = ‖v‖²/D = 1``.
        alignment: ``|m'|/√(q' ρ_v)``; ``nan`` when ``q' ≤ NULL_UPDATE_SCALE`` (``û = 0`` for every purpose: no
            direction) and at ``λ' = ∞``.
        test_error: ``E' = E‖σ(H(S(û))) − σ(H(S1))‖²_F`` per sequence.
        test_error_se: its Monte Carlo standard error.
        test_error_baseline: ``E'_0``, the test error without adaptation (``λ' = ∞``, ``û = 0``).
        test_error_baseline_se: its Monte Carlo standard error.
        train_loss: mean fine-tuning training residual at the prox (``nan`` at ``λ' = ∞``).
        lam_eff: ``λ_eff = λ' + 2α' E[∂ℓ/∂q']``, the ridge with the self-consistent shift from the
            diagonal centring (docs/theory.md §4.2; ``inf`` at ``λ' = ∞``).
        c: the recalibration scalar in ``c Ŝ + u uᵀ/√D`` (1 without recalibration).
        effective_noise: ``Δ' + mse_S`` in the units of the label noise: logit noise; for the identity with
            output noise ``Δ' + 2(β/T)² mse_S``, the output-noise variance that is equivalent to the frozen
            pre-training error (docs/theory.md §4.4).
        effective_noise_recalibrated: ``Δ' + ρ0 − m²/q`` (same units).
        converged: ``status.successful``: the values can be trusted to the solver's tolerance.
        iterations: map evaluations spent (all starts together).
        residual: final relative residual.
        prox_residual: how well the per-sample proxes were solved.
        replicon: ``α' V'² E‖∂g/∂ω‖²_F`` (smooth branch of the prox), the de Almeida–Thouless parameter:
            the replica-symmetric fixed point is locally stable while it is below 1 (docs/theory.md §4.5).
        seconds: wall-clock time of the solve.
        history: the residual at every evaluation.
        memory: the solver's secant pairs, to seed a warm-started solve nearby.
        objective: the predicted training objective per fine-tuning sample, ``½ train_loss + λ' q'/(2α')``
            (docs/theory.md §4.6; ``nan`` at ``λ' = ∞``).
        method: the solver's route (see :class:`~state_evolution.fixed_point.FixedPointSolution`).
        branches: every distinct fixed point found (:class:`Branch`), the returned one included.
        status: the :class:`~solvable_attention.status.Status`: the solver's, the per-sample proxes', the
            replicon's (``unstable_fixed_point`` when ``≥ 1``) and the branch selection's.
        status_message: what was measured.
        selection_resolved: ``False`` when another fixed point's objective is within the Monte Carlo error of the
            returned one's (:mod:`state_evolution.branch_selection`, docs/theory.md §4.6): which branch the
            estimator reaches is then not determined at this sample count (the message names both).
    """

    params: FinetuneParams
    m: float
    q: float
    V: float
    m_hat: float
    q_hat: float
    V_hat: float
    rho_v: float
    alignment: float
    test_error: float
    test_error_se: float
    test_error_baseline: float
    test_error_baseline_se: float
    train_loss: float
    lam_eff: float
    c: float
    effective_noise: float
    effective_noise_recalibrated: float
    converged: bool
    iterations: int
    residual: float
    prox_residual: float = 0.0
    replicon: float = 0.0
    seconds: float = 0.0
    history: tuple = field(default=(), repr=False)
    memory: tuple | None = field(default=None, repr=False)  # the solver's secant pairs (warm sweeps)
    objective: float = float("nan")
    method: str = "damped"
    branches: tuple = ()
    status: Status = Status.CONVERGED
    status_message: str = ""
    selection_resolved: bool = True

    def to_dict(self) -> dict:
        """The fields as a JSON-ready dictionary (``params`` as a dictionary, ``status`` as its name,
        ``branches`` as dictionaries; no ``history``, ``memory``).

        Returns:
            ``{field: value}``.
        """
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("history", "memory")}
        d["params"] = self.params.to_dict()
        d["status"] = self.status.value
        d["branches"] = [b.to_dict() for b in self.branches]
        return d


def check_lora_tokens(T: int, lam_prime: float) -> None:
    """Refuse the LoRA state evolution at ``T = 1`` (docs/theory.md §4.6).

    With one token the LoRA logit ``z² − q'`` is a single centred χ² feature; the replica-symmetric LoRA
    equations then have no fixed point with a positive ridge curvature (``λ_eff + V̂' ≤ 0`` from every start:
    measured at α = 0.1, α' = 3, Δ = 0.5, λ = 0.05, λ' = 1), and the finite-``D`` LoRA fit at that setting
    fits the noise (``E' ≈ 10.5, 11.7`` against ``E'_0 ≈ 4.7, 6.1`` at ``D = 30, 60``). The theory does not
    cover it.

    Args:
        T: tokens.
        lam_prime: the LoRA ridge (``inf``: no adaptation, always allowed).

    Raises:
        ValueError: ``T = 1`` with a finite ``lam_prime``.
    """
    if T == 1 and math.isfinite(lam_prime):
        raise ValueError("T must be >= 2 for the LoRA state evolution (at T = 1 the replica-symmetric LoRA "
                         "equations have no fixed point; use lam_prime=inf for pre-training alone)")


def effective_noises(pre: PretrainingSolution, delta_prime: float) -> tuple[float, float]:
    """``(Δ' + mse_S, Δ' + ρ0 − m²/q)`` in the units of the label noise (identity + output noise:
    ``Δ' + 2(β/T)² mse_S`` and ``Δ' + 2(β/T)²(ρ0 − m²/q)``).

    The effective noise that pre-training leaves to LoRA, without and with recalibration
    (docs/theory.md §4.4). The pre-training error ``H0 − Ĥ`` is a GOE matrix of variance ``mse_S`` per
    off-diagonal entry, ``(β/T)² mse_S`` per whitened coordinate in output units; output noise of
    variance ``Δ_out`` couples to the estimator only through its symmetric part, ``Δ_out/2`` per coordinate
    (docs/model.md §2, noise conventions); so the equivalent output noise is ``2(β/T)² mse_S``.

    Args:
        pre: the pre-training fixed point.
        delta_prime: ``Δ' ≥ 0``, the fine-tuning label noise.

    Returns:
        ``(effective_noise, effective_noise_recalibrated)``.
    """
    p = pre.params
    scale = 2 * identity_weight(p.T, p.beta) if (p.activation == "identity" and p.noise == "output") else 1.0
    explained = pre.m ** 2 / pre.q if pre.q > 0 else 0.0
    return delta_prime + scale * pre.mse_S, delta_prime + scale * (pre.rho0 - explained)


def make_lora_channel(pre: PretrainingSolution, fine: FinetuneParams, *, n_samples=N_SAMPLES,
                      n_test_samples=N_TEST_SAMPLES, seed=1) -> LoraChannel:
    """The LoRA output channel on top of a pre-training fixed point (docs/theory.md §4.1, §4.3).

    Args:
        pre: the pre-training fixed point (``m, q, rho0`` and its setting).
        fine: the fine-tuning setting (``alpha_prime, delta_prime, gamma`` are used).
        n_samples: fixed Monte Carlo samples of the channel.
        n_test_samples: samples of the test errors ``E', E'_0``.
        seed: seed of the samples.

    Returns:
        The :class:`~state_evolution.channel_lora.LoraChannel`.
    """
    p = pre.params
    return LoraChannel.create(m=pre.m, q=pre.q, rho0=pre.rho0, T=p.T, alpha_prime=fine.alpha_prime,
                              delta_prime=fine.delta_prime, gamma=fine.gamma, activation=p.activation,
                              beta=p.beta, noise=p.noise, n_samples=n_samples, n_test_samples=n_test_samples,
                              seed=seed)


def solve_finetuning(pretrain_result: PretrainingSolution, alpha_prime, lam_prime, *, delta_prime=None,
                     gamma=1.0, recalibrate=False, init=None, tol=SAMPLED_TOL, accept_tol=LORA_ACCEPT_TOL, max_iter=400,
                     damping=0.5,
                     n_samples=N_SAMPLES, n_test_samples=N_TEST_SAMPLES, seed=1, channel=None,
                     fallback=True, warn=True, memory=None, branches=True, throw=False, time_limit=None,
                     progress=False) -> FinetuningSolution:
    """Solve the LoRA state evolution given the pre-training fixed point.

    ``delta_prime`` defaults to the pre-training ``Δ``; ``lam_prime = inf`` gives ``û = 0`` and
    ``E' = E'_0`` exactly. ``init``: ``(m', q', V'[, c])``; default ``(0.5, 0.5, 0.5[, 1])``, an
    informative start (``m' = 0`` is a symmetric, uninformative fixed point). ``fallback=False``
    disables the root polish/fallback of :func:`solve_fixed_point` (damped iteration only).
    ``tol``: target relative residual; ``accept_tol``: accepted once the iteration stalls (the Monte
    Carlo map's noise floor, :data:`fixed_point.SAMPLED_TOL`), or below ``LORA_ACCEPT_NOISE_FRACTION``
    of the relative Monte Carlo s.e. of the map's output at that point when that is larger.
    ``memory``: the ``.memory`` of a solve at a nearby setting (its solver's secant pairs), seeding the
    Anderson mixing (warm sweeps).

    Several fixed points (docs/theory.md §4.6): with ``branches=True`` the equations are also solved from the
    default informative start (when ``init`` is given) and from the uninformative start ``m' = 0``; the
    returned solution is the fixed point with the lowest predicted training objective (the estimator's
    branch: ERM minimises the objective), the others are listed in ``branches``.

    The fixed point of docs/theory.md §4.3: the LoRA channel gives ``(m̂', q̂', V̂')`` and the ridge
    shift, the ridge prior ``λ_eff = λ' + 2α' E[∂ℓ/∂q']``, ``m' = m̂' ρ_v/(λ_eff + V̂')``,
    ``q' = (m̂'² ρ_v + q̂')/(λ_eff + V̂')²``, ``V' = 1/(λ_eff + V̂')`` (and the Newton step on ``c``).

    Args:
        pretrain_result: the :class:`~state_evolution.pretraining.PretrainingSolution` to fine-tune.
        alpha_prime: ``α' > 0``, fine-tuning samples per ``D``.
        lam_prime: ``λ' ≥ 0``, LoRA ridge (``inf``: no adaptation).
        delta_prime: ``Δ' ≥ 0`` (default: the pre-training ``Δ``).
        gamma: ``γ > 0``, strength of the new direction ``S1 = S0 + γ v vᵀ/√D``.
        recalibrate: also fit ``c`` in ``c Ŝ + u uᵀ/√D``.
        init: starting ``(m', q', V'[, c])``.
        tol: target relative residual.
        accept_tol: relative residual accepted once the iteration stalls.
        max_iter: map evaluations at most.
        damping: initial damping of the iteration.
        n_samples: fixed Monte Carlo samples of the LoRA channel.
        n_test_samples: samples of ``E'`` and ``E'_0``.
        seed: seed of the channel's samples.
        channel: reuse an existing :class:`~state_evolution.channel_lora.LoraChannel` (same setting).
        fallback: allow the root polish/fallback.
        warn: emit a :class:`~state_evolution.fixed_point.ConvergenceWarning` when not converged, and a
            :class:`~state_evolution.branch_selection.BranchSelectionWarning` when the branch selection is not resolved.
        memory: secant pairs of a nearby solve (used by the first start).
        branches: also solve from the other starts and return the lowest-objective fixed point
            (``False``: the one start only, as warm-started sweeps do).
        throw: raise :class:`~solvable_attention.status.SolveError` when the status is not successful.
        time_limit: seconds all starts together may take (``None``: no limit); when reached, the best iterate
            is returned with ``Status.MAX_ITERATIONS`` (:mod:`state_evolution.solve_controls`).
        progress: show a progress bar over map evaluations with the current residual.

    Returns:
        The :class:`FinetuningSolution`; its ``status`` says whether and how it converged (not converged,
        replica-symmetry unstable, …) rather than raising.

    Raises:
        ValueError: a parameter out of its range (from :class:`~solvable_attention.params.FinetuneParams`:
            ``alpha_prime``, ``gamma`` ``> 0``; ``delta_prime``, ``lam_prime`` ``≥ 0``),
            ``recalibrate=True`` with ``lam_prime = inf``, or an ``init`` with fewer than 3 entries (4 with
            ``recalibrate``) or a non-finite one, or a ``time_limit`` that is not a positive number.
        solvable_attention.status.SolveError: ``throw=True`` and the solve did not succeed.
    """
    fine = FinetuneParams(alpha_prime=alpha_prime, lam_prime=lam_prime,
                          delta_prime=pretrain_result.params.delta if delta_prime is None else delta_prime,
                          gamma=gamma, recalibrate=recalibrate)
    deadline, progress = deadline_after(time_limit), check_progress(progress)
    if recalibrate and not fine.adapts:
        raise ValueError("recalibrate=True needs a finite lam_prime (lam_prime=inf means no adaptation)")
    check_lora_tokens(pretrain_result.params.T, fine.lam_prime)
    t0 = time.perf_counter()
    if channel is None:
        channel = make_lora_channel(pretrain_result, fine, n_samples=n_samples, n_test_samples=n_test_samples,
                                    seed=seed)
    noises = effective_noises(pretrain_result, fine.delta_prime)
    if not fine.adapts:
        return _no_adaptation_solution(fine, channel, noises, t0)
    # the uninformative start iterates within its invariant subspace m' = 0 (docs/theory.md §4.6)
    maps = {sym: _lora_map(channel, fine, symmetric=sym) for sym in (False, True)}
    accepts = {sym: noise_floor_acceptance(F, accept_tol) for sym, F in maps.items()}
    uninformative = np.array(_initial_point(UNINFORMATIVE_START + (1.0,), recalibrate), float)

    found, error, skipped = [], None, 0
    starts = _starts(init, recalibrate, branches)
    with evaluation_progress("LoRA state evolution", progress) as report:
        for shrink in START_RESPONSE_SHRINK:  # V' of the starts shrunk until some start is inside the map's domain
            for k, x0 in enumerate(starts):
                sym = branches and k > 0 and np.array_equal(np.asarray(x0, float), uninformative)
                F, accept = maps[sym], accepts[sym]
                x0 = np.array(x0, float)
                x0[2] *= shrink
                try:
                    cap = max_iter if k == 0 else min(max_iter, BRANCH_CHECK_MAX_ITER)
                    fp = solve_fixed_point(F, x0, tol=tol, max_iter=cap, damping=damping,
                                           project=_project_uninformative if sym else _project_lora,
                                           fallback=fallback, accept_tol=accept if accept_tol > tol else tol,
                                           memory=memory if k == 0 else None, deadline=deadline, progress=report,
                                           estimate_below=SAMPLED_ACCEPT_TOL)
                except InvalidIterate as exc:  # this start is outside the map's domain; the others may not be
                    error = error or exc
                    continue
                if skipped_by_time_limit(fp, found):
                    skipped += 1
                    continue
                found.append(_assemble_solution(fine, channel, F, fp, noises, t0, tuple(float(v) for v in x0)))
            if found:
                break
    if not found:  # no start could be evaluated: reported, not raised
        result = _failed_solution(fine, noises, t0, error)
        return raise_if_failed(result, "fine-tuning state evolution") if throw else result
    result = merge_starts(found, _same_branch, time.perf_counter() - t0)
    result = flag_unchecked_branches(result, skipped)
    if warn:
        warn_if_not_converged("fine-tuning state evolution", result, tol)
        warn_if_unresolved("fine-tuning state evolution", result)
    return raise_if_failed(result, "fine-tuning state evolution") if throw else result


def noise_floor_acceptance(F, accept_tol):
    """The stall tolerance of a LoRA solve at an evaluated point: ``accept_tol``, or ``LORA_ACCEPT_NOISE_FRACTION``
    of the map's relative Monte Carlo error there when larger, never above ``LORA_ACCEPT_MAX``.

    Args:
        F: the :class:`~state_evolution.fixed_point.MemoizedMap` whose ``aux`` is ``(evaluation, relative error)``.
        accept_tol: the base tolerance.

    Returns:
        ``x ↦ tolerance`` for :func:`~state_evolution.fixed_point.solve_fixed_point`'s ``accept_tol``.
    """

    def accept(x):
        aux = F.aux_at(x)
        floor = LORA_ACCEPT_NOISE_FRACTION * aux[1] if aux is not None else 0.0
        return max(accept_tol, min(floor, LORA_ACCEPT_MAX))

    return accept


def _starts(init, recalibrate, branches) -> list:
    """The starts of the LoRA solve: ``init`` (default informative start if none), then, with ``branches``,
    the default informative start and the uninformative start (duplicates dropped)."""
    starts = [_initial_point(init, recalibrate)]
    if branches:
        starts += [_initial_point(None, recalibrate), _initial_point(UNINFORMATIVE_START + (1.0,), recalibrate)]
    unique = []
    for x in starts:
        if not any(np.array_equal(x, y) for y in unique):
            unique.append(x)
    return unique


def fixed_point_resolution(residual, order_parameters) -> float:
    """How far a solve's order parameters may lie from its fixed point: ``residual × ‖x‖`` (docs/theory.md §4.6).

    The residual of a solve is relative, ``r = ‖F(x) − x‖/‖x‖``, so ``r‖x‖`` is its last step ``‖F(x) − x‖``: up
    to the conditioning of ``I − J``, how far ``x`` lies from the fixed point. Two solves whose solved vectors
    differ by less than that are not told apart (a slowly contracting iteration can lie farther: ``r‖x‖/(1 − ρ)``).

    Args:
        residual: the solve's final relative residual.
        order_parameters: the solved vector's parts, any shapes (``(m', q', V'[, c])``; rank r: ``M', Q', V'``).

    Returns:
        ``residual · ‖x‖`` (Euclidean norm over all the entries); ``0`` for a non-finite residual.
    """
    if not math.isfinite(residual):
        return 0.0
    norm = math.sqrt(sum(float(np.sum(np.square(np.asarray(a, float)))) for a in order_parameters))
    return float(residual) * norm


def _solved_vector(sol) -> np.ndarray:
    """``(m', q', V')``, with ``c`` when it was solved for (recalibration): the vector the residual is relative to."""
    params = getattr(sol, "params", None)
    x = [sol.m, sol.q, sol.V] + ([sol.c] if getattr(params, "recalibrate", False) else [])
    return np.array(x, float)


def _resolution(sol) -> float:
    """:func:`fixed_point_resolution` of a one-start solution that reached a fixed point; ``0`` for one stopped at the
    iteration cap or outside the domain (it resolves no fixed point)."""
    return fixed_point_resolution(sol.residual, (_solved_vector(sol),)) if reached_fixed_point(sol) else 0.0


def null_within(q_size, m_size, resolution) -> bool:
    """Whether an update is ``û = 0`` within what its solve resolves (docs/theory.md §4.6): ``q' ≤ NULL_UPDATE_SCALE``,
    or both ``q'`` and ``|m'|`` within the resolution. ``m'`` tells a genuine small update from ``û = 0``: near
    ``û = 0`` it is ``≈ m̂'V'``, far above the resolution where ``q' ≈ m'²`` is not.

    Args:
        q_size: ``q'`` (rank r: the largest eigenvalue of ``Q'`` in absolute value).
        m_size: ``|m'|`` (rank r: the largest singular value of ``M'``).
        resolution: :func:`fixed_point_resolution` of the solve (``0`` when it reached no fixed point).

    Returns:
        ``True`` when the update is ``û = 0`` within resolution.
    """
    return q_size <= NULL_UPDATE_SCALE or (q_size <= resolution and m_size <= resolution)


def _null_within_resolution(sol) -> bool:
    """:func:`null_within` for a one-start LoRA solution."""
    return null_within(sol.q, abs(sol.m), _resolution(sol))


def _same_branch(a, b) -> bool:
    """Two one-start solutions are one fixed point: both ``û = 0`` within what their solves resolve
    (:func:`_null_within_resolution`; the ``û = 0`` fixed point is one point, whatever ``V'`` a slowly converging
    start stopped at), or ``m'`` and ``q'`` equal within ``SAME_BRANCH_RTOL`` of their scale (docs/theory.md §4.6)."""
    if _null_within_resolution(a) and _null_within_resolution(b):
        return True
    scale = max(abs(a.m), abs(b.m), a.q, b.q)
    return abs(a.m - b.m) <= SAME_BRANCH_RTOL * scale and abs(a.q - b.q) <= SAME_BRANCH_RTOL * scale


def _no_adaptation_solution(fine, channel, noises, t0) -> FinetuningSolution:
    """``λ' = inf``: ``û = 0``, ``E' = E'_0`` on the channel's test samples."""
    e0 = channel.test_errors(0.0, 0.0, 1.0)["test_error_baseline"]
    return FinetuningSolution(params=fine, m=0.0, q=0.0, V=0.0, m_hat=0.0, q_hat=0.0, V_hat=0.0, rho_v=1.0,
                              alignment=0.0, test_error=e0[0], test_error_se=e0[1], test_error_baseline=e0[0],
                              test_error_baseline_se=e0[1], train_loss=float("nan"), lam_eff=math.inf, c=1.0,
                              effective_noise=noises[0], effective_noise_recalibrated=noises[1],
                              converged=True, iterations=0, residual=0.0, seconds=time.perf_counter() - t0,
                              method="closed form", status=Status.CONVERGED,
                              status_message="lam_prime = inf: no adaptation (û = 0), E' = E'_0")


def _failed_solution(fine, noises, t0, error) -> FinetuningSolution:
    """No start could be evaluated (every one raised ``error``): NaN values, status ``left_domain``."""
    nan = float("nan")
    return FinetuningSolution(params=fine, m=nan, q=nan, V=nan, m_hat=nan, q_hat=nan, V_hat=nan, rho_v=1.0,
                              alignment=nan, test_error=nan, test_error_se=nan, test_error_baseline=nan,
                              test_error_baseline_se=nan, train_loss=nan, lam_eff=nan, c=nan,
                              effective_noise=noises[0], effective_noise_recalibrated=noises[1], converged=False,
                              iterations=0, residual=nan, seconds=time.perf_counter() - t0, method="none",
                              status=Status.LEFT_DOMAIN,
                              status_message=f"the LoRA map cannot be evaluated from any start: {error}")


def _lora_prior(ev, lam_prime):
    """The prior side of the LoRA map: ``(m', q', V') = (m̂'/d, (m̂'² + q̂')/d², 1/d)``, ``d = λ' + shift + V̂'``.

    Raises:
        InvalidIterate: conjugates not finite or beyond 1e150, or ``d ≤ 0`` (unbounded LoRA objective).
    """
    conj = np.array([ev.m_hat, ev.q_hat, ev.V_hat, ev.ridge_shift], float)
    if not np.all(np.isfinite(conj)) or np.max(np.abs(conj)) > 1e150:
        raise InvalidIterate(f"LoRA conjugates out of range (m̂', q̂', V̂', shift) = {conj}")
    denom = lam_prime + ev.ridge_shift + ev.V_hat
    if denom <= 0:
        raise InvalidIterate(f"λ_eff + V̂' = {denom:.3g} <= 0: the LoRA objective is unbounded here")
    return np.array([ev.m_hat / denom, (ev.m_hat ** 2 + ev.q_hat) / denom ** 2, 1.0 / denom])


def _lora_map(channel, fine, symmetric=False) -> MemoizedMap:
    """``x = (m', q', V'[, c]) ↦ F(x)`` (channel, then prior; ``c`` by one Newton step on ``E[∂ℓ/∂c] = 0``),
    memoising ``(LoraEvaluation, relative Monte Carlo error)`` per evaluated point. ``symmetric``: the map
    restricted to the uninformative subspace ``m' = 0`` (its ``m'`` output set to 0; docs/theory.md §4.6)."""
    recalibrate = fine.recalibrate

    def evaluate(x):
        c = x[3] if recalibrate else 1.0
        # An iterate on the boundary q' = m'²/ρ_v (alignment 1) makes the Stein weight of m̂' divide by
        # √(q' − m'²/ρ_v) = 0: the per-sample values overflow, and _lora_prior rejects the non-finite or
        # out-of-range conjugates as InvalidIterate, which the solver handles by stepping back. The
        # overflow is reported there, not as a floating-point warning.
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            ev = channel.evaluate(float(x[0]), float(max(x[1], 1e-12)), float(max(x[2], 0.0)), c)
        out = _lora_prior(ev, fine.lam_prime)
        if recalibrate:
            out = np.append(out, c - ev.dc / ev.dcc if ev.dcc > 0 else c - ev.dc)
        if symmetric:
            out[0] = 0.0
        return out, (ev, _relative_noise(ev, out, fine.lam_prime))

    return MemoizedMap(evaluate)


def _initial_point(init, recalibrate):
    """``(m', q', V'[, c])`` to start from: ``init`` or ``(0.5, 0.5, 0.5[, 1])``.

    Raises:
        ValueError: ``init`` not finite or too short.
    """
    n_x = 4 if recalibrate else 3
    x0 = np.array([0.5, 0.5, 0.5, 1.0][:n_x]) if init is None else np.asarray(init, float)[:n_x]
    if x0.shape != (n_x,) or not np.all(np.isfinite(x0)):
        raise ValueError(f"init must be finite (m', q', V'{', c' if recalibrate else ''}), got {init!r}")
    return x0


def _project_lora(x):
    """The domain of the LoRA iterate: ``q' ≥ m'²/ρ_v`` (Cauchy–Schwarz, ``ρ_v = 1``), ``V' ≥ 0``."""
    y = np.array(x, float)
    y[1], y[2] = max(y[1], y[0] ** 2, 1e-12), max(y[2], 0.0)
    return y


def _project_uninformative(x):
    """:func:`_project_lora` within the uninformative subspace ``m' = 0``."""
    y = _project_lora(x)
    y[0] = 0.0
    return y


def _assemble_solution(fine, channel, F, sol, noises, t0, start=()) -> FinetuningSolution:
    """The :class:`FinetuningSolution` of a fixed-point solve from ``start``: the evaluation behind
    ``sol.value`` (memoised, else evaluated again), the test errors and the predicted objective at it, and
    its status (:func:`~state_evolution.stage_status.stage_status`)."""
    x = sol.value
    c = float(x[3]) if fine.recalibrate else 1.0
    mp, qp, Vp = float(x[0]), float(x[1]), float(x[2])
    behind = F.aux_at(sol.evaluated_at)  # the evaluation whose prior image is x (x = F(evaluated_at))
    ev = behind[0] if behind is not None else channel.evaluate(mp, qp, Vp, c)
    errs = channel.test_errors(mp, qp, c)
    # zero-temperature free energy: the training objective per sample, ½ E‖Y' − σ‖² + λ' ‖û‖²/(2n')
    objective = 0.5 * ev.train_loss[0] + fine.lam_prime * qp / (2 * fine.alpha_prime)
    status, message = stage_status(sol, ev, ev.replicon)
    alignment = abs(mp) / math.sqrt(qp) if qp > NULL_UPDATE_SCALE else float("nan")
    if not qp > NULL_UPDATE_SCALE:
        message += f"; q' = {qp:.3g} <= {NULL_UPDATE_SCALE:g}: û = 0 for every purpose, the alignment is undefined (nan)"
    branch = Branch(start=start, m=mp, q=qp, V=Vp, alignment=alignment, test_error=errs["test_error"][0],
                    objective=objective, objective_se=0.5 * ev.train_loss[1], replicon=ev.replicon, status=status)
    return FinetuningSolution(
        params=fine, m=mp, q=qp, V=Vp, m_hat=ev.m_hat, q_hat=ev.q_hat, V_hat=ev.V_hat, rho_v=1.0,
        alignment=alignment, test_error=errs["test_error"][0],
        test_error_se=errs["test_error"][1], test_error_baseline=errs["test_error_baseline"][0],
        test_error_baseline_se=errs["test_error_baseline"][1], train_loss=ev.train_loss[0],
        lam_eff=fine.lam_prime + ev.ridge_shift, c=c, effective_noise=noises[0],
        effective_noise_recalibrated=noises[1], converged=status.successful, iterations=sol.iterations,
        residual=sol.residual, prox_residual=ev.prox_residual, replicon=ev.replicon,
        seconds=time.perf_counter() - t0, history=sol.history, memory=sol.memory, objective=objective,
        method=sol.method, branches=(branch,), status=status, status_message=message)


def _relative_noise(ev, out, lam_prime) -> float:
    """Relative Monte Carlo standard error ``‖se(F(x))‖/‖F(x)‖`` of the LoRA map's output
    ``(m', q', V') = (m̂'/d, (m̂'² + q̂')/d², 1/d)``, ``d = λ' + shift + V̂'``, to first order in the
    conjugates' standard errors (taken as independent; the recalibration scale ``c`` is left out)."""
    d = lam_prime + ev.ridge_shift + ev.V_hat
    se_d = math.hypot(ev.se["V_hat"], ev.se["ridge_shift"])
    mp, qp, Vp = out[0], out[1], out[2]
    se = [math.hypot(ev.se["m_hat"] / d, mp * se_d / d),
          math.hypot(2 * ev.m_hat * ev.se["m_hat"] / d ** 2, ev.se["q_hat"] / d ** 2, 2 * qp * se_d / d),
          Vp * se_d / d]
    return math.sqrt(sum(v * v for v in se)) / max(float(np.linalg.norm(out[:3])), 1e-300)
