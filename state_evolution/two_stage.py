"""Both stages of the state evolution: pre-training, then LoRA on its fixed point.

:func:`solve_state_evolution` solves one setting; :func:`sweep_state_evolution` a grid of pre-training
``λ`` × LoRA ``λ'`` by warm-started continuation (docs/theory.md §2.6, §4).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from solvable_attention.params import FinetuneParams

from .finetuning import FinetuningSolution, make_lora_channel, solve_finetuning
from .fixed_point import InvalidIterate, predicted_start
from .pretraining import PretrainingSolution, solve_pretraining, sweep_pretraining


@dataclass(frozen=True)
class StateEvolutionSolution:
    """Both stages: ``.pretrain`` (:class:`PretrainingSolution`) and ``.finetune`` (:class:`FinetuningSolution`)."""

    pretrain: PretrainingSolution
    finetune: FinetuningSolution

    @property
    def converged(self) -> bool:
        return self.pretrain.converged and self.finetune.converged

    def to_dict(self) -> dict:
        return {"pretrain": self.pretrain.to_dict(), "finetune": self.finetune.to_dict()}



def solve_state_evolution(alpha, alpha_prime, delta, lam, *, lam_prime=1.0, T=3, beta=1.0, kappa0=1.0, kappa=1.0,
                          gamma=1.0, activation="softmax", delta_prime=None, recalibrate=False, noise="logits",
                          pretrain_init=None, finetune_init=None, n_samples=2 ** 14, n_test_samples=2 ** 17,
                          seed=0, warn=True) -> StateEvolutionSolution:
    """Both stages' D → ∞ fixed points: pre-training (``α, Δ, λ``), then LoRA (``α', Δ', λ'``).

    Returns a :class:`StateEvolutionSolution` with ``.pretrain`` and ``.finetune``.
    """
    pre = solve_pretraining(alpha, delta, lam, T=T, beta=beta, kappa0=kappa0, kappa=kappa, activation=activation,
                            noise=noise, init=pretrain_init, n_samples=n_samples, n_test_samples=n_test_samples,
                            seed=seed, warn=warn)
    fine = solve_finetuning(pre, alpha_prime, lam_prime, delta_prime=delta_prime, gamma=gamma,
                            recalibrate=recalibrate, init=finetune_init, n_samples=n_samples,
                            n_test_samples=n_test_samples, seed=seed + 1, warn=warn)
    return StateEvolutionSolution(pretrain=pre, finetune=fine)


def sweep_state_evolution(alpha, alpha_prime, delta, lams, lam_primes, *, progress=True, recalibrate=False,
                          delta_prime=None, gamma=1.0, n_samples=2 ** 14, n_test_samples=2 ** 17, seed=0,
                          max_iter=100, warn=True, on_point=None, **setting) -> list[StateEvolutionSolution]:
    """Both stages along a grid ``lams × lam_primes`` with warm starts (Figure 1's curves).

    Pre-training is solved along ``lams`` (:func:`sweep_pretraining`: one channel, each ``λ`` started
    from its predecessor); for each ``λ`` the LoRA fixed point is solved for every ``λ'`` in
    ``lam_primes`` (``inf`` allowed), each started from the secant extrapolation of the same ``λ'`` at the
    two previous ``λ`` and seeded with the secant pairs of the previous ``λ``'s solve (``memory``).
    ``max_iter``: evaluations per solve (a point that does not converge is reported with
    ``converged=False`` rather than holding up the sweep; warm-started solves need 3–10).
    ``on_point``: optional callback, called with the list of solutions of each ``λ`` (all its ``λ'``) as
    soon as they are finished (progress reports, incremental saving).
    ``setting``: ``T, beta, kappa0, kappa, activation, noise``. Returns one
    :class:`StateEvolutionSolution` per ``(λ, λ')``, ``λ``-major (``λ'`` varies fastest).
    """
    from tqdm.auto import tqdm

    lams, lam_primes = list(lams), list(lam_primes)
    pres = sweep_pretraining(lams, alpha, delta, progress=False, n_samples=n_samples, max_iter=max_iter,
                             n_test_samples=n_test_samples, seed=seed, warn=warn, **setting)
    out, previous = [], {}  # λ' -> [(λ, (m', q', V', c)), ...] of the converged solves
    memory = {}  # λ' -> the secant pairs of its last converged solve
    channel = None  # one set of fixed samples for the whole grid (λ' does not enter the channel)
    for pre in tqdm(pres, disable=not progress, desc="λ sweep (both stages)"):
        if channel is None:
            fine = FinetuneParams(alpha_prime=alpha_prime, lam_prime=1.0, gamma=gamma,
                                  delta_prime=pre.params.delta if delta_prime is None else delta_prime)
            channel = make_lora_channel(pre, fine, n_samples=n_samples, n_test_samples=n_test_samples, seed=seed + 1)
        channel = channel.with_pretraining(pre.m, pre.q, pre.rho0)
        lam = pre.params.lam
        for lp in lam_primes:
            past = previous.get(lp, [])[-2:]
            init = predicted_start([x for _, x in past], [p for p, _ in past], lam)
            kw = dict(delta_prime=delta_prime, gamma=gamma, recalibrate=recalibrate and math.isfinite(lp),
                      channel=channel, warn=warn, max_iter=max_iter)
            try:
                f = solve_finetuning(pre, alpha_prime, lp, init=init, memory=memory.get(lp), **kw)
            except InvalidIterate:  # the extrapolated start left the map's domain
                if not past:
                    raise
                f = None
            if len(past) >= 2 and (f is None or not f.converged):  # retry from the last fixed point
                retry = solve_finetuning(pre, alpha_prime, lp, init=past[-1][1], **kw)
                f = retry if (f is None or retry.converged or retry.residual < f.residual) else f
            if f.params.adapts and f.converged:
                previous.setdefault(lp, []).append((lam, (f.m, f.q, f.V, f.c)))
                memory[lp] = f.memory
            out.append(StateEvolutionSolution(pretrain=pre, finetune=f))
        if on_point is not None:
            on_point(out[-len(lam_primes):])
    return out
