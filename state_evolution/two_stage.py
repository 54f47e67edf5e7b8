"""Both stages of the state evolution: pre-training, then LoRA on its fixed point.

:func:`solve_state_evolution` solves one setting; :func:`sweep_state_evolution` a grid of pre-training
``λ`` × LoRA ``λ'`` by warm-started continuation (docs/theory.md §2.6, §4).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from solvable_attention.params import FinetuneParams, make_params
from solvable_attention.status import Status, raise_if_failed, worst

from .finetuning import FinetuningSolution, check_lora_tokens, make_lora_channel, solve_finetuning
from .finetuning_rank import solve_finetuning_rank
from .fixed_point import InvalidIterate, predicted_start
from .pretraining import PretrainingSolution, solve_pretraining, sweep_pretraining
from .sampling import FINETUNE_SEED_OFFSET, N_SAMPLES, N_TEST_SAMPLES
from .solve_controls import check_progress, deadline_after, remaining


@dataclass(frozen=True)
class StateEvolutionSolution:
    """Both stages' fixed points at one setting (docs/theory.md §2.6 and §4.3; docs/model.md §2–§4).

    Attributes:
        pretrain: the pre-training fixed point ``(m, q, V)`` with its conjugates and metrics
            (:class:`~state_evolution.pretraining.PretrainingSolution`).
        finetune: the LoRA fixed point ``(m', q', V')`` on top of it, with ``E'`` and the alignment
            (:class:`~state_evolution.finetuning.FinetuningSolution`).
    """

    pretrain: PretrainingSolution
    finetune: FinetuningSolution

    @property
    def converged(self) -> bool:
        """True when both stages succeeded (``status.successful``)."""
        return self.status.successful

    @property
    def status(self) -> Status:
        """The more severe of the two stages' statuses."""
        return worst(self.pretrain.status, self.finetune.status)

    @property
    def status_message(self) -> str:
        """Both stages' status messages."""
        return f"pre-training: {self.pretrain.status_message}; fine-tuning: {self.finetune.status_message}"

    def to_dict(self) -> dict:
        """Both stages as JSON-ready dictionaries.

        Returns:
            ``{"pretrain": PretrainingSolution.to_dict(), "finetune": FinetuningSolution.to_dict()}``.
        """
        return {"pretrain": self.pretrain.to_dict(), "finetune": self.finetune.to_dict()}



def solve_state_evolution(alpha, alpha_prime, delta, lam, *, lam_prime=1.0, T=3, beta=1.0, kappa0=1.0, kappa=1.0,
                          gamma=1.0, activation="softmax", delta_prime=None, recalibrate=False, noise="logits",
                          pretrain_init=None, finetune_init=None, n_samples=N_SAMPLES, n_test_samples=N_TEST_SAMPLES,
                          seed=0, warn=True, throw=False, rank=1, shift_rank=1, time_limit=None,
                          progress=False) -> StateEvolutionSolution:
    """Both stages' D → ∞ fixed points: pre-training (``α, Δ, λ``), then LoRA (``α', Δ', λ'``).

    Pre-training solves the six-parameter fixed point ``(m, q, V) = P(C(m, q, V))`` of docs/theory.md
    §2.6 (:func:`~state_evolution.pretraining.solve_pretraining`); fine-tuning then solves the LoRA fixed
    point ``(m', q', V'[, c])`` of docs/theory.md §4.3 on it
    (:func:`~state_evolution.finetuning.solve_finetuning`). The model is docs/model.md §2–§3; the metrics
    docs/model.md §4.

    Args:
        alpha: ``α > 0``, pre-training samples per ``D²`` (``n = α D²``).
        alpha_prime: ``α' > 0``, fine-tuning samples per ``D`` (``n' = α' D``).
        delta: ``Δ ≥ 0``, pre-training label-noise variance (logit units with ``noise="logits"``).
        lam: ``λ ≥ 0``, nuclear-norm strength of pre-training.
        lam_prime: ``λ' ≥ 0``, LoRA ridge (``inf``: no adaptation, ``û = 0``).
        T: tokens per sequence (``≥ 1``; ``≥ 2`` with softmax).
        beta: ``β > 0``, inverse temperature of the activation.
        kappa0: ``κ0 > 0``, teacher width ratio (``ρ0 = 1 + κ0``).
        kappa: ``κ > 0``, student width ratio (rank of ``Ŝ`` at most ``κ D``).
        gamma: ``γ > 0``, strength of the new direction, ``S1 = S0 + γ v vᵀ/√D``.
        activation: ``"softmax"`` or ``"identity"``.
        delta_prime: ``Δ' ≥ 0``, fine-tuning label noise (default ``Δ``).
        recalibrate: also fit the scalar ``c`` in ``c Ŝ + u uᵀ/√D`` (needs a finite ``λ'``).
        noise: ``"logits"`` (``σ(H + √Δ Ξ)``) or ``"output"`` (``σ(H) + √Δ Ξ``).
        pretrain_init: starting ``(m, q, V)`` (default zeros), e.g. ``previous.pretrain.overlaps``.
        finetune_init: starting ``(m', q', V'[, c])`` of the LoRA solve (default: its own cold start).
        n_samples: fixed Monte Carlo samples of the sampled channels (both stages).
        n_test_samples: Monte Carlo samples of the test errors ``E`` and ``E'``.
        seed: seed of the pre-training samples; fine-tuning uses ``seed + FINETUNE_SEED_OFFSET`` (= 1).
        warn: emit a :class:`~state_evolution.fixed_point.ConvergenceWarning` when a stage does not
            converge.
        throw: raise :class:`~solvable_attention.status.SolveError` when either stage did not succeed.
        rank: ``r ≥ 1``, the LoRA rank (docs/model.md §6). With ``rank = shift_rank = 1`` (the default) the
            rank-one solver above; otherwise the rank-r state evolution of docs/theory.md §7.1
            (:func:`~state_evolution.finetuning_rank.solve_finetuning_rank`; ``.finetune`` is then a
            :class:`~state_evolution.finetuning_rank.RankFinetuningSolution`; no recalibration, a finite
            ``lam_prime``).
        shift_rank: ``r* ≥ 1``, the rank of the teacher's shift ``S1 = S0 + γ V Vᵀ/√D``.
        time_limit: seconds both stages together may take (``None``: no limit); a stage that reaches it
            returns its best iterate with ``Status.MAX_ITERATIONS`` (:mod:`state_evolution.solve_controls`).
        progress: show a progress bar over each stage's map evaluations with the current residual.

    Returns:
        A :class:`StateEvolutionSolution` with ``.pretrain`` and ``.finetune``; each carries its ``status``
        (converged, at the noise floor, unstable, …), ``.status`` is the more severe one. Every parameter of
        both stages is checked before the first solve.

    Raises:
        ValueError: a parameter out of its range (from :class:`~solvable_attention.params.PretrainParams`
            and :class:`~solvable_attention.params.FinetuneParams`: ``alpha``, ``alpha_prime``, ``beta``,
            ``kappa0``, ``kappa``, ``gamma`` must be ``> 0``; ``delta``, ``delta_prime``, ``lam``,
            ``lam_prime`` ``≥ 0``; ``T`` an integer ``≥ 1`` (``≥ 2`` with softmax); ``activation``,
            ``noise`` one of the choices), ``recalibrate=True`` with ``lam_prime = inf``, an ``init``
            that is not a finite vector of the right length, or a ``time_limit`` that is not a positive number.
        state_evolution.fixed_point.InvalidIterate: the map cannot be evaluated at the start (a
            conjugate out of its domain), which a damped iteration could not recover from.
        solvable_attention.status.SolveError: ``throw=True`` and a stage did not succeed.
    """
    make_params(alpha=alpha, alpha_prime=alpha_prime, delta=delta, lam=lam, lam_prime=lam_prime, T=T, beta=beta,
                kappa0=kappa0, kappa=kappa, gamma=gamma, activation=activation, delta_prime=delta_prime,
                recalibrate=recalibrate, noise=noise)  # every parameter checked before the first solve
    if recalibrate and not math.isfinite(lam_prime):
        raise ValueError("recalibrate=True needs a finite lam_prime (lam_prime=inf means no adaptation)")
    check_lora_tokens(T, lam_prime)
    for name, v in (("rank", rank), ("shift_rank", shift_rank)):
        if isinstance(v, bool) or int(v) != v or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    rank_r = (rank, shift_rank) != (1, 1)
    if rank_r and (recalibrate or not math.isfinite(lam_prime)):
        raise ValueError("rank != 1 or shift_rank != 1 needs a finite lam_prime and recalibrate=False")
    deadline, progress = deadline_after(time_limit), check_progress(progress)
    pre = solve_pretraining(alpha, delta, lam, T=T, beta=beta, kappa0=kappa0, kappa=kappa, activation=activation,
                            noise=noise, init=pretrain_init, n_samples=n_samples, n_test_samples=n_test_samples,
                            seed=seed, warn=warn, time_limit=remaining(deadline), progress=progress)
    if rank_r:
        fine = solve_finetuning_rank(pre, alpha_prime, lam_prime, rank=int(rank), shift_rank=int(shift_rank),
                                     delta_prime=delta_prime, gamma=gamma, init=finetune_init, n_samples=n_samples,
                                     n_test_samples=n_test_samples, seed=seed + FINETUNE_SEED_OFFSET, warn=warn,
                                     time_limit=remaining(deadline), progress=progress)
    else:
        fine = solve_finetuning(pre, alpha_prime, lam_prime, delta_prime=delta_prime, gamma=gamma,
                                recalibrate=recalibrate, init=finetune_init, n_samples=n_samples,
                                n_test_samples=n_test_samples, seed=seed + FINETUNE_SEED_OFFSET, warn=warn,
                                time_limit=remaining(deadline), progress=progress)
    sol = StateEvolutionSolution(pretrain=pre, finetune=fine)
    return raise_if_failed(sol, "state evolution") if throw else sol


def sweep_state_evolution(alpha, alpha_prime, delta, lams, lam_primes, *, progress=True, recalibrate=False,
                          delta_prime=None, gamma=1.0, n_samples=N_SAMPLES, n_test_samples=N_TEST_SAMPLES, seed=0,
                          max_iter=100, warn=True, on_point=None, **setting) -> list[StateEvolutionSolution]:
    """Both stages along a grid ``lams × lam_primes`` with warm starts (docs/model.md §7, Figure 1's curves).

    Pre-training is solved along ``lams`` (:func:`sweep_pretraining`: one channel, each ``λ`` started
    from its predecessor); for each ``λ`` the LoRA fixed point is solved for every ``λ'`` in
    ``lam_primes`` (``inf`` allowed), each started from the extrapolation of the same ``λ'`` at the previous
    ``λ`` (the parabola through three in ``log λ``: :func:`~state_evolution.fixed_point.predicted_start`) and seeded with the secant pairs of the previous ``λ``'s solve (``memory``).
    ``max_iter``: evaluations per solve (a point that does not converge is reported with
    ``converged=False`` rather than holding up the sweep; warm-started solves need 3–10).
    ``on_point``: optional callback, called with the list of solutions of each ``λ`` (all its ``λ'``) as
    soon as they are finished (progress reports, incremental saving).
    The equations are those of :func:`solve_state_evolution` (docs/theory.md §2.6, §4.3).

    Args:
        alpha: ``α > 0``, pre-training samples per ``D²``.
        alpha_prime: ``α' > 0``, fine-tuning samples per ``D``.
        delta: ``Δ ≥ 0``, pre-training label noise.
        lams: the pre-training strengths ``λ ≥ 0`` (solved in this order; warm starts work best along a
            monotone sequence).
        lam_primes: the LoRA ridges ``λ' ≥ 0`` (``inf`` allowed: no adaptation) solved at every ``λ``.
        progress: show a progress bar over ``lams``.
        recalibrate: also fit the scalar ``c`` (ignored at ``λ' = inf``).
        delta_prime: ``Δ' ≥ 0`` (default ``Δ``).
        gamma: ``γ > 0``, strength of the new direction.
        n_samples: fixed Monte Carlo samples of the channels (one set for the whole grid).
        n_test_samples: Monte Carlo samples of the test errors.
        seed: seed of the pre-training samples; the LoRA channel uses ``seed + FINETUNE_SEED_OFFSET`` (= 1).
        max_iter: map evaluations per solve (a point that does not converge is reported with
            ``converged=False`` rather than holding up the sweep; warm-started solves need 3–10).
        warn: emit a :class:`~state_evolution.fixed_point.ConvergenceWarning` per unconverged solve (and a
            :class:`~state_evolution.branch_selection.BranchSelectionWarning` per unresolved branch selection).
        on_point: optional callback, called with the list of solutions of each ``λ`` (all its ``λ'``) as
            soon as they are finished (progress reports, incremental saving).
        **setting: ``T, beta, kappa0, kappa, activation, noise`` as in :func:`solve_state_evolution`.

    Returns:
        One :class:`StateEvolutionSolution` per ``(λ, λ')``, ``λ``-major (``λ'`` varies fastest).

    Raises:
        ValueError: a parameter out of its range (as :func:`solve_state_evolution`).
        state_evolution.fixed_point.InvalidIterate: the first solve of a sequence starts outside the
            map's domain (later ones fall back to their predecessor's fixed point).
    """
    from tqdm.auto import tqdm

    lams, lam_primes = list(lams), list(lam_primes)
    for lp in lam_primes:
        check_lora_tokens(setting.get("T", 3), lp)
    pres = sweep_pretraining(lams, alpha, delta, progress=False, n_samples=n_samples, max_iter=max_iter,
                             n_test_samples=n_test_samples, seed=seed, warn=warn, **setting)
    out, previous = [], {}  # λ' -> [(λ, (m', q', V', c)), ...] of the converged solves
    memory = {}  # λ' -> the secant pairs of its last converged solve
    channel = None  # one set of fixed samples for the whole grid (λ' does not enter the channel)
    for pre in tqdm(pres, disable=not progress, desc="λ sweep (both stages)"):
        if channel is None:
            fine = FinetuneParams(alpha_prime=alpha_prime, lam_prime=1.0, gamma=gamma,
                                  delta_prime=pre.params.delta if delta_prime is None else delta_prime)
            channel = make_lora_channel(pre, fine, n_samples=n_samples, n_test_samples=n_test_samples,
                                                seed=seed + FINETUNE_SEED_OFFSET)
        channel = channel.with_pretraining(pre.m, pre.q, pre.rho0)
        lam = pre.params.lam
        for lp in lam_primes:
            past = previous.get(lp, [])[-3:]
            init = predicted_start([x for _, x in past], [p for p, _ in past], lam)
            kw = dict(delta_prime=delta_prime, gamma=gamma, recalibrate=recalibrate and math.isfinite(lp),
                      channel=channel, warn=warn, max_iter=max_iter)
            try:  # branches are checked at the first λ (no warm start) and where the alignment collapses
                f = solve_finetuning(pre, alpha_prime, lp, init=init, memory=memory.get(lp), branches=not past, **kw)
            except InvalidIterate:  # the extrapolated start left the map's domain
                if not past:
                    raise
                f = None
            if past and (f is None or not _reached_fixed_point(f)):  # no fixed point: retry from the last one
                retry = solve_finetuning(pre, alpha_prime, lp, init=past[-1][1], branches=False, **kw)
                f = retry if (f is None or retry.converged or retry.residual < f.residual) else f
            if past and _alignment_collapsed(f, past[-1][1]):
                start = None if f is None or not math.isfinite(f.m) else \
                    ((f.m, f.q, f.V, f.c) if f.params.recalibrate else (f.m, f.q, f.V))
                f = solve_finetuning(pre, alpha_prime, lp, init=start, branches=True, **kw)
            if f.params.adapts and _reached_fixed_point(f):  # unstable fixed points are still points of the path
                previous.setdefault(lp, []).append((lam, (f.m, f.q, f.V, f.c)))
                memory[lp] = f.memory
            out.append(StateEvolutionSolution(pretrain=pre, finetune=f))
        if on_point is not None:
            on_point(out[-len(lam_primes):])
    return out


# A warm-started LoRA point whose alignment falls below this fraction of its predecessor's is re-solved from
# every start (docs/theory.md §4.6): a jump to the uninformative branch looks like this.
ALIGNMENT_COLLAPSE = 0.5


def _reached_fixed_point(f) -> bool:
    """The solver reached a fixed point (converged, or only replica-symmetry unstable or not global)."""
    return f.converged or f.status in (Status.UNSTABLE_FIXED_POINT, Status.NOT_GLOBAL)


def _alignment_collapsed(f, previous) -> bool:
    """Whether the warm-started solution ``f`` (or its failure, ``None``) lost the predecessor's direction."""
    if f is None or not f.params.adapts:
        return f is None
    m0, q0 = previous[0], previous[1]
    before = abs(m0) / math.sqrt(q0) if q0 > 0 else 0.0
    return not f.alignment >= ALIGNMENT_COLLAPSE * before  # nan (û = 0) counts as collapsed
