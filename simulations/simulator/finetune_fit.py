"""Fine-tuning beyond rank one at finite ``D`` (docs/model.md §6): rank-``r`` LoRA and full fine-tuning.

* rank-``r`` LoRA, ``Û = argmin_U (1/2) Σ_ν ‖Y'_ν − σ(H(Ŝ + U Uᵀ/√D; X'_ν))‖²_F + (λ'/2) ‖U‖²_F`` with
  ``U ∈ R^{D×r}``: L-BFGS from several small random starts (vmapped), the best objective kept, as the
  rank-one fit (:mod:`.lora_fit`, which ``simulate`` keeps for ``r = 1``). In field coordinates
  ``H(Ŝ + UUᵀ/√D; X) = Ĥ + Z Zᵀ − (‖U‖²_F/D) I`` with ``Z = X U/√D`` (``T × r``).
* full fine-tuning, nuclear: ``Δ̂ = argmin_{Δ ⪰ 0} (1/2) Σ_ν ‖Y'_ν − σ(Ĥ_ν + H(Δ; X'_ν))‖²_F + (λ'/2)√D Tr Δ``
  — the ``r → ∞`` end of LoRA, since ``‖U‖²_F = √D Tr(UUᵀ/√D)``. Divided by ``D`` it is the pre-training
  problem with logits offset by ``Ĥ`` and ``λ = λ'/(2√D)``, solved by the same FISTA
  (:func:`~.pretraining_fit.fit_proximal`).
* full fine-tuning, ridge: symmetric ``Δ`` with ``(λ'_F/2) ‖Δ‖²_F``, no rank or sign constraint: L-BFGS on
  ``Δ = (A + Aᵀ)/2``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import jax
import jax.numpy as jnp
import numpy as np

from solvable_attention.activations import apply_activation
from solvable_attention.attention import attention_logits

from .lbfgs import minimize_lbfgs
from .pretraining_fit import fit_proximal

FINETUNE_METHODS = ("lora", "full_nuclear", "full_ridge")


@dataclass(frozen=True)
class UpdateFit:
    """A fine-tuning update ``Δ̂`` and its optimiser's status.

    Attributes:
        Delta: ``(D, D)`` the update (``Û Ûᵀ/√D`` for LoRA).
        U: ``(D, r)`` the LoRA factor (``None`` for full fine-tuning).
        objective: the fine-tuning objective at ``Δ̂`` (the method's own penalty).
        residual: the stationarity residual (gradient norm, or FISTA's relative prox-gradient residual).
        iterations: iterations spent.
        converged: whether the residual reached its tolerance.
    """

    Delta: jax.Array
    U: jax.Array | None
    objective: float
    residual: float
    iterations: int
    converged: bool


def finetune_loss(H, Y, activation, beta):
    """``(1/2) Σ_ν ‖Y'_ν − σ(H_ν)‖²_F``.

    Args:
        H: ``(n', T, T)`` logits.
        Y: ``(n', T, T)`` labels.
        activation: ``"softmax"`` or ``"identity"``.
        beta: ``β > 0``.

    Returns:
        The scalar loss.
    """
    r = Y - apply_activation(H, activation, beta)
    return 0.5 * jnp.sum(r * r)


def lora_rank_logits(H_hat, X, U):
    """``H(Ŝ + U Uᵀ/√D; X) = Ĥ + Z Zᵀ − (‖U‖²_F/D) I`` with ``Z = X U/√D``.

    Args:
        H_hat: ``(n', T, T)`` frozen logits ``H(Ŝ; X)``.
        X: ``(n', T, D)`` inputs.
        U: ``(D, r)`` LoRA factor.

    Returns:
        ``(n', T, T)`` logits.
    """
    D, T = X.shape[-1], X.shape[-2]
    Z = X @ U / jnp.sqrt(D)
    return H_hat + Z @ jnp.swapaxes(Z, -1, -2) - (jnp.sum(U * U) / D) * jnp.eye(T, dtype=X.dtype)


@lru_cache(maxsize=None)
def _rank_fun(activation: str):
    def fun(U, args):
        H_hat, X, Y, beta, lam_prime = args
        return finetune_loss(lora_rank_logits(H_hat, X, U), Y, activation, beta) + 0.5 * lam_prime * jnp.sum(U * U)
    return fun


def fit_lora_rank(H_hat, X, Y, key, *, rank, lam_prime, activation, beta, n_init=4, init_scale=0.3, gtol=1e-8,
                  max_iter=3000) -> UpdateFit:
    """Rank-``r`` LoRA by L-BFGS from ``n_init`` random starts ``U ~ init_scale · N(0, 1)`` (vmapped).

    Args:
        H_hat: ``(n', T, T)`` frozen logits.
        X: ``(n', T, D)`` fine-tuning inputs.
        Y: ``(n', T, T)`` labels.
        key: ``jax.random`` key of the starts.
        rank: ``r ≥ 1``.
        lam_prime: ``λ' ≥ 0`` (finite).
        activation: ``"softmax"`` or ``"identity"``.
        beta: ``β > 0``.
        n_init: random starts.
        init_scale: their scale (``> 0``: ``U = 0`` is a critical point).
        gtol: relative gradient tolerance: converged when ``‖∇‖ ≤ gtol · max(|L'|, 1)``.
        max_iter: L-BFGS iterations at most.

    Returns:
        The :class:`UpdateFit` of the best start.

    Raises:
        ValueError: ``rank < 1``, ``init_scale ≤ 0`` or a non-finite ``lam_prime``.
    """
    if not (isinstance(rank, int) and rank >= 1):
        raise ValueError(f"rank must be an integer >= 1, got {rank!r}")
    if not init_scale > 0:
        raise ValueError(f"init_scale must be > 0 (U = 0 is a critical point), got {init_scale!r}")
    if not np.isfinite(lam_prime):
        raise ValueError("fit_lora_rank needs a finite lam_prime (lam_prime = inf means no adaptation)")
    D = X.shape[-1]
    U0 = init_scale * jax.random.normal(key, (n_init, D, rank), X.dtype)
    args = (H_hat, X, Y, beta, lam_prime)
    solve = jax.vmap(lambda U: minimize_lbfgs(_rank_fun(activation), U, args, max_iter, gtol / 10))
    Us, values, gnorms, iters = solve(U0)
    best = int(np.nanargmin(np.asarray(values)))
    U, value, gnorm = Us[best], float(values[best]), float(gnorms[best])
    return UpdateFit(Delta=U @ U.T / jnp.sqrt(D), U=U, objective=value, residual=gnorm, iterations=int(iters[best]),
                     converged=bool(gnorm <= gtol * max(abs(value), 1.0)))


def fit_full_nuclear(H_hat, X, Y, *, lam_prime, activation, beta, tol=1e-7, max_iter=5000) -> UpdateFit:
    """Full fine-tuning with the nuclear penalty on the PSD update, by FISTA (docs/model.md §6).

    ``min_{Δ ⪰ 0} (1/2) Σ_ν ‖Y'_ν − σ(Ĥ_ν + H(Δ; X'_ν))‖²_F + (λ'/2)√D Tr Δ``, divided by ``D``: the
    pre-training problem with the logits offset by ``Ĥ`` and ``λ = λ'/(2√D)``.

    Args:
        H_hat: ``(n', T, T)`` frozen logits.
        X: ``(n', T, D)`` inputs.
        Y: ``(n', T, T)`` labels.
        lam_prime: ``λ' ≥ 0`` (finite).
        activation: ``"softmax"`` or ``"identity"``.
        beta: ``β > 0``.
        tol: FISTA's relative tolerance.
        max_iter: iterations at most.

    Returns:
        The :class:`UpdateFit` (``objective`` in the units of the fine-tuning objective above).
    """
    D = X.shape[-1]
    Delta, info = fit_proximal(X, Y, lam=lam_prime / (2 * np.sqrt(D)), activation=activation, beta=beta, tol=tol,
                               max_iter=max_iter, H_offset=H_hat)
    return UpdateFit(Delta=Delta, U=None, objective=D * info.objective, residual=info.residual,
                     iterations=info.iterations, converged=info.converged)


@lru_cache(maxsize=None)
def _ridge_fun(activation: str):
    def fun(A, args):
        H_hat, X, Y, beta, lam_F = args
        Delta = 0.5 * (A + A.T)
        return finetune_loss(H_hat + attention_logits(Delta, X), Y, activation, beta) + 0.5 * lam_F * jnp.sum(Delta * Delta)
    return fun


def fit_full_ridge(H_hat, X, Y, *, lam_prime, activation, beta, gtol=1e-8, max_iter=5000) -> UpdateFit:
    """Full fine-tuning with the ridge penalty ``(λ'_F/2)‖Δ‖²_F`` on a symmetric update, by L-BFGS from ``Δ = 0``.

    Args:
        H_hat: ``(n', T, T)`` frozen logits.
        X: ``(n', T, D)`` inputs.
        Y: ``(n', T, T)`` labels.
        lam_prime: ``λ'_F > 0`` (finite; ``0`` leaves the problem without a unique minimiser when
            ``n' T² < D²``).
        activation: ``"softmax"`` or ``"identity"``.
        beta: ``β > 0``.
        gtol: relative gradient tolerance.
        max_iter: L-BFGS iterations at most.

    Returns:
        The :class:`UpdateFit`.

    Raises:
        ValueError: ``lam_prime`` not finite and positive.
    """
    if not (np.isfinite(lam_prime) and lam_prime > 0):
        raise ValueError(f"full_ridge needs a finite lam_prime > 0 (the ridge λ'_F), got {lam_prime!r}")
    D = X.shape[-1]
    args = (H_hat, X, Y, beta, lam_prime)
    A, value, gnorm, it = minimize_lbfgs(_ridge_fun(activation), jnp.zeros((D, D), X.dtype), args, max_iter, gtol / 10)
    value, gnorm = float(value), float(gnorm)
    return UpdateFit(Delta=0.5 * (A + A.T), U=None, objective=value, residual=gnorm, iterations=int(it),
                     converged=bool(gnorm <= gtol * max(abs(value), 1.0)))
