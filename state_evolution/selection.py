"""Reuse and active selection in the fine-tuning state evolution (docs/theory.md §5).

The LoRA channel (:mod:`state_evolution.channel_lora`) needs, per training sample, the frozen
logits and the teacher bulk ``(Ĥ, H0)``; everything else (``z, z*``, the fine-tuning noise) is
independent of them and of how the samples were chosen. Two variants change only this law:

* **fresh candidates**: ``(Ĥ, H0)`` is the GOE pair of the pre-training fixed point,
  ``ĥ = √q ξ0``, ``h0 = (m/√q) ξ0 + √(ρ0 − m²/q) ξ1`` per whitened coordinate; no pre-training label.
* **reuse** (candidates are pre-training samples): the pre-training output channel at its fixed
  point ``(m, q, V)``, i.e. the *training* law: with the cavity field ``ω = √q ξ0``, the teacher
  field ``h0`` as above, the pre-training label ``Y = σ(H(h0) + √Δ Ξ)`` and the prox
  ``g*`` (:mod:`state_evolution.channel_monte_carlo`),

      ĥ = ω + V g*(ω, Y),      h0,      Y.

**Selection** of a fraction ``φ = α'/α_pool`` of the candidates by a strategy's score
``s(Ĥ, Y)`` (:mod:`solvable_attention.active`) conditions this law on ``s > t_φ`` (``t_φ`` the
``1 − φ`` quantile): the importance weight ``1{s > t_φ}/φ``. We sample the conditioned law by
keeping the top ``n`` of ``n/φ`` candidate draws (the same estimator with the zero-weight samples
discarded, so that the prox is not solved on them), and hand the kept ``(ĥ, h0)`` to the LoRA
channel as its ``side_fields``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import jax
import numpy as np

from solvable_attention.active import Strategy, get_strategy, top_k
from solvable_attention.runtime import float64

from .goe_coordinates import from_coordinates, n_free_entries
from .overlap_fields import student_teacher_fields
from .sampling import N_SAMPLES, N_TEST_SAMPLES, gaussian_samples

# The candidate pool of a selection draws its fields from seed + CANDIDATE_SEED_OFFSET: a stream independent of
# the channel's own samples (seed), of the other stage (seed ± 1) and of the test samples (seed + 7919,
# sampling.TEST_SEED_OFFSET); 104729 is the 10000th prime, far from all of them.
CANDIDATE_SEED_OFFSET = 104729


@dataclass(frozen=True)
class CandidateFields:
    """Fields of ``n`` candidate samples (docs/theory.md §5.2–§5.3).

    Attributes:
        H_hat_w: ``(n, K)`` whitened frozen logits ``ĥ`` (``K = T(T+1)/2``, docs/theory.md §1).
        H0_w: ``(n, K)`` whitened teacher logits ``h0``.
        Y: ``(n, T, T)`` pre-training labels (reuse), or ``None`` for fresh candidates.
    """

    H_hat_w: np.ndarray
    H0_w: np.ndarray
    Y: np.ndarray | None = None

    @property
    def n(self) -> int:
        """The number of candidates."""
        return int(self.H_hat_w.shape[0])

    def take(self, idx) -> "CandidateFields":
        """A subset of the candidates.

        Args:
            idx: integer indices (or a boolean mask) into the ``n`` candidates.

        Returns:
            The :class:`CandidateFields` of those candidates, in the order of ``idx``.
        """
        idx = np.asarray(idx)
        return CandidateFields(self.H_hat_w[idx], self.H0_w[idx], None if self.Y is None else self.Y[idx])

    def scores(self, strategy: Strategy, key=None) -> np.ndarray:
        """The strategy's score of each candidate: the same function as :func:`solvable_attention.active.select`.

        Args:
            strategy: a :class:`~solvable_attention.active.Strategy`.
            key: a ``jax.random`` key (random strategies) or ``None``.

        Returns:
            ``(n,)`` scores ``s(Ĥ, Y)`` (float64).
        """
        T = int(round((math.sqrt(8 * self.H_hat_w.shape[1] + 1) - 1) / 2))
        with float64():
            return np.asarray(strategy.score(from_coordinates(self.H_hat_w, T), self.Y, key))


def fresh_candidates(pre, n: int, seed: int, sampling: str = "iid") -> CandidateFields:
    """``n`` fresh samples: the GOE pair ``(ĥ, h0)`` with covariance ``[[q, m], [m, ρ0]]`` per coordinate.

    docs/theory.md §5.1.

    Args:
        pre: the pre-training fixed point (``m, q, rho0``, ``params.T`` are used).
        n: the number of samples.
        seed: seed of the draws.
        sampling: ``"iid"`` or ``"sobol"`` (scrambled Sobol, ``n`` a power of 2).

    Returns:
        :class:`CandidateFields` without labels.
    """
    K = n_free_entries(pre.params.T)
    G0, G1 = gaussian_samples(int(n), [(K,), (K,)], seed, sampling)
    with float64():
        h, h0, _ = student_teacher_fields(pre.m, pre.q, pre.rho0, G0, G1)
        return CandidateFields(np.asarray(h), np.asarray(h0))


def reuse_candidates(pre, n: int, seed: int, sampling: str = "iid") -> CandidateFields:
    """``n`` pre-training samples at the pre-training fixed point: ``ĥ = ω + V g*``, ``h0``, ``Y``.

    The training law of the pre-training channel (docs/theory.md §5.2).

    Args:
        pre: the pre-training fixed point (``m, q, V, rho0`` and its ``params``).
        n: the number of samples.
        seed: seed of the draws.
        sampling: ``"iid"`` or ``"sobol"``.

    Returns:
        :class:`CandidateFields` with the pre-training labels ``Y``.
    """
    from .channel_monte_carlo import MonteCarloChannel, _channel_statistics, channel_labels

    p = pre.params
    ch = MonteCarloChannel.create(p, n_samples=int(n), n_test_samples=2, seed=seed, sampling=sampling)
    with float64():
        *_, g, _, _ = _channel_statistics(pre.m, pre.q, pre.V, p.rho0, p.delta, p.beta, ch.xi0, ch.xi1,
                                          ch.noise_draw, p.T, p.activation, p.noise, ch.max_newton)
        omega, h0, _ = student_teacher_fields(pre.m, pre.q, p.rho0, ch.xi0, ch.xi1)
        Y = channel_labels(h0, ch.noise_draw, p.delta, p.T, p.activation, p.beta, p.noise)
        return CandidateFields(np.asarray(omega + pre.V * g), np.asarray(h0), np.asarray(Y))


def check_pool(alpha_prime: float, pool_ratio) -> float:
    """``φ = α'/α_pool`` (1 when ``pool_ratio`` is ``None``: no selection).

    Args:
        alpha_prime: ``α' > 0``, selected samples per ``D``.
        pool_ratio: ``α_pool``, candidates per ``D``, or ``None``.

    Returns:
        The selected fraction ``φ ∈ (0, 1]``.

    Raises:
        ValueError: ``pool_ratio`` not finite or below ``alpha_prime``.
    """
    if pool_ratio is None:
        return 1.0
    pr = float(pool_ratio)
    if not (math.isfinite(pr) and pr >= alpha_prime):
        raise ValueError(f"pool_ratio must be finite and >= alpha_prime = {alpha_prime} (select α'D of "
                         f"α_pool·D candidates), got {pool_ratio!r}")
    return alpha_prime / pr


def selected_fields(pre, n: int, strategy, fraction: float, *, reuse: bool, seed: int) -> CandidateFields:
    """``n`` draws from the candidate law conditioned on the selection event ``s > t_φ``.

    ``round(n/φ)`` i.i.d. candidates are scored and the ``n`` of weight 1 (the top ``n``) kept, in
    their draw order: the importance-weighted law with the zero-weight samples discarded, so that
    the LoRA prox is not solved on them. ``φ = 1`` or a field-independent strategy (``random``):
    ``n`` plain candidates (scrambled Sobol). docs/theory.md §5.3.

    Args:
        pre: the pre-training fixed point.
        n: the number of selected samples.
        strategy: a :class:`~solvable_attention.active.Strategy` or a registered name.
        fraction: ``φ ∈ (0, 1]``, the selected fraction.
        reuse: candidates are pre-training samples (with labels) rather than fresh ones.
        seed: seed of the draws (and of a random strategy's key).

    Returns:
        :class:`CandidateFields` of the ``n`` selected samples.

    Raises:
        ValueError: an unknown strategy, a label-based strategy without ``reuse``, or ``fraction``
            outside ``(0, 1]``.
    """
    strategy = _check_strategy(pre, strategy, reuse)
    draw = reuse_candidates if reuse else fresh_candidates
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    if fraction == 1.0 or strategy.field_independent:
        return draw(pre, n, seed, "sobol")
    cand = draw(pre, int(round(n / fraction)), seed, "iid")
    return cand.take(np.sort(top_k(cand.scores(strategy, jax.random.PRNGKey(seed)), int(n))))


def _check_strategy(pre, strategy, reuse: bool) -> Strategy:
    strategy = get_strategy(strategy, activation=pre.params.activation, beta=pre.params.beta)
    if strategy.needs_labels and not reuse:
        raise ValueError(f"strategy {strategy!r} scores the pre-training residual: it needs reuse=True "
                         "(fresh candidates have no pre-training label)")
    return strategy


def solve_active_finetuning(pre, alpha_prime, lam_prime, *, strategy="random", pool_ratio=None, reuse=False,
                            delta_prime=None, gamma=1.0, n_samples=N_SAMPLES, n_test_samples=N_TEST_SAMPLES, seed=1,
                            **solver):
    """The LoRA fixed point for fine-tuning samples chosen by ``strategy`` (docs/theory.md §5).

    ``pool_ratio`` ``α_pool``: ``α'D`` samples are selected from ``α_pool·D`` candidates (``None``:
    no selection, ``φ = 1``); ``reuse``: the candidates are pre-training samples (training law of the
    pre-training channel) rather than fresh ones. The conditioned law is sampled by keeping the
    ``n`` candidates of weight 1 among ``n/φ`` i.i.d. draws (:func:`selected_fields`); they become the
    LoRA channel's ``side_fields``. Fresh candidates with ``φ = 1`` or a field-independent strategy give
    exactly :func:`solve_finetuning`'s fixed point (same samples). The test errors ``E', E'_0`` are on
    fresh, unselected samples. ``solver``: passed to :func:`solve_finetuning` (``init, tol,
    max_iter, damping, fallback, warn, recalibrate``).

    Args:
        pre: the :class:`~state_evolution.pretraining.PretrainingSolution` to fine-tune.
        alpha_prime: ``α' > 0``, selected fine-tuning samples per ``D``.
        lam_prime: ``λ' ≥ 0`` (``inf``: no adaptation), LoRA ridge.
        strategy: a :class:`~solvable_attention.active.Strategy` or a registered name.
        pool_ratio: ``α_pool ≥ α'``, candidates per ``D``, or ``None`` (no selection).
        reuse: candidates are pre-training samples.
        delta_prime: ``Δ' ≥ 0`` (default ``Δ``).
        gamma: ``γ > 0``, strength of the new direction.
        n_samples: LoRA channel samples (rounded up to a power of 2).
        n_test_samples: samples of the test errors.
        seed: seed of the channel (the candidates use ``seed + CANDIDATE_SEED_OFFSET``).
        **solver: passed to :func:`~state_evolution.finetuning.solve_finetuning`.

    Returns:
        The :class:`~state_evolution.finetuning.FinetuningSolution`.

    Raises:
        ValueError: a parameter out of its range (:class:`~solvable_attention.params.FinetuneParams`),
            ``pool_ratio`` below ``alpha_prime`` or not finite, an unknown strategy, or a label-based
            strategy without ``reuse``.
    """
    from solvable_attention.params import FinetuneParams

    from .finetuning import make_lora_channel, solve_finetuning

    p = pre.params
    fine = FinetuneParams(alpha_prime=alpha_prime, lam_prime=lam_prime,
                          delta_prime=p.delta if delta_prime is None else delta_prime, gamma=gamma, reuse=reuse)
    fraction = check_pool(fine.alpha_prime, pool_ratio)
    strategy = _check_strategy(pre, strategy, reuse)
    n = 2 ** max(1, math.ceil(math.log2(int(n_samples))))  # the LoRA channel's Sobol sample count
    kw = dict(delta_prime=fine.delta_prime, gamma=gamma, n_samples=n, n_test_samples=n_test_samples, seed=seed,
              **solver)
    if not reuse and (fraction == 1.0 or strategy.field_independent):
        return solve_finetuning(pre, alpha_prime, lam_prime, **kw)
    side = selected_fields(pre, n, strategy, fraction, reuse=reuse, seed=seed + CANDIDATE_SEED_OFFSET)
    channel = make_lora_channel(pre, fine, n_samples=n, n_test_samples=n_test_samples, seed=seed).conditioned(
        side_fields=(side.H_hat_w, side.H0_w))
    return solve_finetuning(pre, alpha_prime, lam_prime, channel=channel, **kw)
