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

from .channel_identity import identity_weight
from .channel_lora import LoraChannel
from .fixed_point import SAMPLED_TOL, InvalidIterate, MemoizedMap, solve_fixed_point, warn_if_not_converged
from .pretraining import PretrainingSolution
from .sampling import N_SAMPLES, N_TEST_SAMPLES


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
        alignment: ``|m'|/√(q' ρ_v)`` (0 when ``q' = 0``).
        test_error: ``E' = E‖σ(H(S(û))) − σ(H(S1))‖²_F`` per sequence.
        test_error_se: its Monte Carlo standard error.
        test_error_baseline: ``E'_0``, the test error without adaptation (``λ' = ∞``, ``û = 0``).
        test_error_baseline_se: its Monte Carlo standard error.
        train_loss: mean fine-tuning training residual at the prox (``nan`` at ``λ' = ∞``).
        lam_eff: ``λ_eff = λ' + 2α' E[∂ℓ/∂q']``, the ridge with the self-consistent shift from the
            diagonal centring (docs/theory.md §4.2; ``inf`` at ``λ' = ∞``).
        c: the recalibration scalar in ``c Ŝ + u uᵀ/√D`` (1 without recalibration).
        effective_noise: ``Δ' + mse_S`` (logit units; ``Δ' + (β/T)² mse_S`` for the identity with output
            noise), docs/theory.md §4.4.
        effective_noise_recalibrated: ``Δ' + ρ0 − m²/q`` (same units).
        converged: whether the fixed-point iteration reached its tolerance.
        iterations: map evaluations spent.
        residual: final relative residual.
        prox_residual: how well the per-sample proxes were solved.
        replicon: ``α' V'² E‖∂g/∂ω‖²_F`` (smooth branch of the prox), the de Almeida–Thouless parameter:
            the replica-symmetric fixed point is locally stable while it is below 1 (docs/theory.md §4.5).
        seconds: wall-clock time of the solve.
        history: the residual at every evaluation.
        memory: the solver's secant pairs, to seed a warm-started solve nearby.
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

    def to_dict(self) -> dict:
        """The fields as a JSON-ready dictionary (``params`` as a dictionary; no ``history``, ``memory``).

        Returns:
            ``{field: value}``.
        """
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("history", "memory")}
        d["params"] = self.params.to_dict()
        return d


def effective_noises(pre: PretrainingSolution, delta_prime: float) -> tuple[float, float]:
    """``(Δ' + mse_S, Δ' + ρ0 − m²/q)`` in logit units (identity + output noise: ``(β/T)² mse_S``).

    The effective noise that pre-training leaves to LoRA, without and with recalibration
    (docs/theory.md §4.4).

    Args:
        pre: the pre-training fixed point.
        delta_prime: ``Δ' ≥ 0``, the fine-tuning label noise.

    Returns:
        ``(effective_noise, effective_noise_recalibrated)``.
    """
    p = pre.params
    scale = identity_weight(p.T, p.beta) if (p.activation == "identity" and p.noise == "output") else 1.0
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
                     fallback=True, warn=True, memory=None) -> FinetuningSolution:
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
        warn: emit a :class:`~state_evolution.fixed_point.ConvergenceWarning` when not converged.
        memory: secant pairs of a nearby solve.

    Returns:
        The :class:`FinetuningSolution` (``converged=False`` rather than an error when the tolerance
        was not reached).

    Raises:
        ValueError: a parameter out of its range (from :class:`~solvable_attention.params.FinetuneParams`:
            ``alpha_prime``, ``gamma`` ``> 0``; ``delta_prime``, ``lam_prime`` ``≥ 0``),
            ``recalibrate=True`` with ``lam_prime = inf``, or an ``init`` with fewer than 3 entries (4 with
            ``recalibrate``) or a non-finite one.
        state_evolution.fixed_point.InvalidIterate: the LoRA map cannot be evaluated at the start
            (conjugates out of range, or ``λ_eff + V̂' ≤ 0``: the objective is unbounded).
    """
    fine = FinetuneParams(alpha_prime=alpha_prime, lam_prime=lam_prime,
                          delta_prime=pretrain_result.params.delta if delta_prime is None else delta_prime,
                          gamma=gamma, recalibrate=recalibrate)
    if recalibrate and not fine.adapts:
        raise ValueError("recalibrate=True needs a finite lam_prime (lam_prime=inf means no adaptation)")
    t0 = time.perf_counter()
    if channel is None:
        channel = make_lora_channel(pretrain_result, fine, n_samples=n_samples, n_test_samples=n_test_samples,
                                    seed=seed)
    noises = effective_noises(pretrain_result, fine.delta_prime)
    if not fine.adapts:
        return _no_adaptation_solution(fine, channel, noises, t0)
    F = _lora_map(channel, fine)

    def accept(x):  # the stall tolerance at an evaluated point: LORA_ACCEPT_TOL or its Monte Carlo floor
        aux = F.aux_at(x)
        return max(accept_tol, LORA_ACCEPT_NOISE_FRACTION * aux[1]) if aux is not None else accept_tol

    sol = solve_fixed_point(F, _initial_point(init, recalibrate), tol=tol, max_iter=max_iter, damping=damping,
                            project=_project_lora, fallback=fallback, accept_tol=accept if accept_tol > tol else tol,
                            memory=memory)
    if warn:
        warn_if_not_converged("fine-tuning state evolution", sol, tol)
    return _assemble_solution(fine, channel, F, sol, noises, t0)


def _no_adaptation_solution(fine, channel, noises, t0) -> FinetuningSolution:
    """``λ' = inf``: ``û = 0``, ``E' = E'_0`` on the channel's test samples."""
    e0 = channel.test_errors(0.0, 0.0, 1.0)["test_error_baseline"]
    return FinetuningSolution(params=fine, m=0.0, q=0.0, V=0.0, m_hat=0.0, q_hat=0.0, V_hat=0.0, rho_v=1.0,
                              alignment=0.0, test_error=e0[0], test_error_se=e0[1], test_error_baseline=e0[0],
                              test_error_baseline_se=e0[1], train_loss=float("nan"), lam_eff=math.inf, c=1.0,
                              effective_noise=noises[0], effective_noise_recalibrated=noises[1],
                              converged=True, iterations=0, residual=0.0, seconds=time.perf_counter() - t0)


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


def _lora_map(channel, fine) -> MemoizedMap:
    """``x = (m', q', V'[, c]) ↦ F(x)`` (channel, then prior; ``c`` by one Newton step on ``E[∂ℓ/∂c] = 0``),
    memoising ``(LoraEvaluation, relative Monte Carlo error)`` per evaluated point."""
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


def _assemble_solution(fine, channel, F, sol, noises, t0) -> FinetuningSolution:
    """The :class:`FinetuningSolution` of a fixed-point solve: the evaluation behind ``sol.value`` (memoised,
    else evaluated again) and the test errors at it."""
    x = sol.value
    c = float(x[3]) if fine.recalibrate else 1.0
    mp, qp, Vp = float(x[0]), float(x[1]), float(x[2])
    behind = F.aux_at(sol.evaluated_at)  # the evaluation whose prior image is x (x = F(evaluated_at))
    ev = behind[0] if behind is not None else channel.evaluate(mp, qp, Vp, c)
    errs = channel.test_errors(mp, qp, c)
    return FinetuningSolution(
        params=fine, m=mp, q=qp, V=Vp, m_hat=ev.m_hat, q_hat=ev.q_hat, V_hat=ev.V_hat, rho_v=1.0,
        alignment=abs(mp) / math.sqrt(qp) if qp > 0 else 0.0, test_error=errs["test_error"][0],
        test_error_se=errs["test_error"][1], test_error_baseline=errs["test_error_baseline"][0],
        test_error_baseline_se=errs["test_error_baseline"][1], train_loss=ev.train_loss[0],
        lam_eff=fine.lam_prime + ev.ridge_shift, c=c, effective_noise=noises[0],
        effective_noise_recalibrated=noises[1], converged=sol.converged, iterations=sol.iterations,
        residual=sol.residual, prox_residual=ev.prox_residual, replicon=ev.replicon,
        seconds=time.perf_counter() - t0,
        history=sol.history, memory=sol.memory)


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
