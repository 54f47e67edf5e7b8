"""Rank-one LoRA fine-tuning at finite ``D`` (docs/model.md §3).

    S(u, c) = c Ŝ + u uᵀ/√D      (c = 1 unless recalibrating)
    û = argmin_u  (1/2) Σ_ν ‖Y'_ν − σ(H(S(u, c); X'_ν))‖²_F + (λ'/2) ‖u‖²

``H(S(u, c); X') = c Ĥ + z zᵀ − (‖u‖²/D) I`` with ``Ĥ = H(Ŝ; X')`` precomputed and
``z = X' u/√D``. The objective is non-convex in ``u`` (``u = 0`` is a stationary
point): L-BFGS runs from several small random initialisations at once
(``vmap``) and the best objective is kept. ``λ' = inf`` returns ``û = 0`` (no
adaptation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import jax
import jax.numpy as jnp
import numpy as np

from .lbfgs import minimize_lbfgs
from .objectives import lora_objective


@dataclass(frozen=True)
class LoraFit:
    """The LoRA solution: ``û``, ``ĉ`` and the optimiser's status."""

    u: jax.Array
    c: float
    objective: float
    grad_norm: float
    iterations: int
    converged: bool


@lru_cache(maxsize=None)
def _lora_fun(activation: str, recalibrate: bool):
    """``L'(u, c)`` as ``fun(params, args)``; ``c`` frozen at 1 unless recalibrating."""
    def fun(params, args):
        H_hat, X, Y, beta, lam_prime = args
        u, c = params
        if not recalibrate:
            c = jnp.ones_like(c)
        return lora_objective((u, c), H_hat, X, Y, activation, beta, lam_prime)
    return fun


# The default relative gradient tolerance of the LoRA fit (float64).
LORA_GTOL = 1e-8


def fit_lora(H_hat, X, Y, key, *, lam_prime, activation, beta, recalibrate=False, n_init=4,
             init_scale=0.3, gtol=None, max_iter=2000) -> LoraFit:
    """Fit ``(u, c)`` by L-BFGS from ``n_init`` random starts ``u ~ init_scale · N(0, I_D)`` (vmapped).

    ``converged`` reports ``‖∇L'‖ ≤ gtol · max(|L'|, 1)`` at the kept solution.
    """
    D = X.shape[-1]
    dtype = X.dtype
    gtol = LORA_GTOL if gtol is None else gtol
    if not init_scale > 0:  # u = 0 is an exact critical point (a saddle) of the LoRA objective
        raise ValueError(f"init_scale must be > 0 (u = 0 is a critical point of the LoRA objective, where "
                         f"L-BFGS would stop at once), got {init_scale!r}")
    if math.isinf(lam_prime):
        if recalibrate:
            raise ValueError("recalibrate=True needs a finite lam_prime (lam_prime=inf means no adaptation)")
        return LoraFit(u=jnp.zeros(D, dtype), c=1.0, objective=float("nan"), grad_norm=0.0,
                       iterations=0, converged=True)
    U0 = init_scale * jax.random.normal(key, (n_init, D), dtype)
    c0 = jnp.ones((n_init,), dtype)
    args = (H_hat, X, Y, beta, lam_prime)
    fun = _lora_fun(activation, bool(recalibrate))
    solve = jax.vmap(lambda u, c: minimize_lbfgs(fun, (u, c), args, max_iter, gtol / 10))
    (U, C), values, gnorms, iters = solve(U0, c0)
    values = np.asarray(values)
    best = int(np.nanargmin(values))
    value, gnorm = float(values[best]), float(gnorms[best])
    return LoraFit(u=U[best], c=float(C[best]) if recalibrate else 1.0, objective=value,
                   grad_norm=gnorm, iterations=int(iters[best]),
                   converged=bool(gnorm <= gtol * max(abs(value), 1.0)))
