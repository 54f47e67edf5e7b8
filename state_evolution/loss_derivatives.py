"""Closed-form gradient and Hessian of the per-sample loss ``ℓ(Y, h) = ½‖Y − σ(H(h))‖²_F``.

Batched over samples (shapes ``(n, K)`` → ``(n, K)``, ``(n, K, K)``), in whitened
coordinates ``h`` (``H_aa = √2 h_aa``, ``H_ab = H_ba = h_ab``). Five times faster than
``vmap(jax.hessian)`` on a CPU, which matters because the softmax channel needs them
for every Monte Carlo sample at every Newton step; ``tests/test_loss_derivatives.py``
checks them against automatic differentiation.

Softmax rows ``p_a = softmax(β H_a)``, residual ``r = Y − p``, ``s_a = Σ_b r_ab p_ab``:

    ∂ℓ/∂H_ac        = −β p_ac (r_ac − s_a)
    ∂²ℓ/∂H_ac∂H_ad  = β² Σ_b J_a,bc J_a,bd − β² [δ_cd p_ac (r_ac − s_a) − p_ac p_ad (r_ac + r_ad − 2 s_a)]

with ``J_a = diag(p_a) − p_a p_aᵀ`` (rows of ``H`` decouple). Identity: ``∂ℓ/∂H = −(β/T) r``,
``∂²ℓ/∂H∂H = (β/T)² I``.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from solvable_attention.activations import apply_activation

from .goe_coordinates import from_coordinates


def coordinate_map(T: int) -> np.ndarray:
    """``M[a, b, k] = ∂H_ab/∂h_k`` (``√2`` on the diagonal, 1 on both off-diagonal copies)."""
    rows, cols = np.triu_indices(T)
    M = np.zeros((T, T, rows.size))
    for k, (a, b) in enumerate(zip(rows, cols)):
        if a == b:
            M[a, a, k] = np.sqrt(2.0)
        else:
            M[a, b, k] = M[b, a, k] = 1.0
    return M


def loss_value(h, Y, T, activation, beta):
    """``ℓ(Y, h)`` for a batch."""
    r = Y - apply_activation(from_coordinates(h, T), activation, beta)
    return 0.5 * jnp.sum(r * r, axis=(-1, -2))


def logit_derivatives(H, Y, activation, beta):
    """Derivatives of ``ℓ = ½‖Y − σ(H)‖²_F`` in the ``T²`` entries of ``H`` taken as independent.

    Returns ``(∂ℓ/∂H, R)`` of shapes ``(n, T, T)`` and ``(n, T, T, T)`` with
    ``R[a, c, d] = ∂²ℓ/∂H_ac ∂H_ad`` (the Hessian is block diagonal over the rows ``a``: softmax acts
    row-wise; identity ``R[a, c, d] = (β/T)² δ_cd``). Chain rules to any parametrisation of ``H``
    (whitened coordinates here, the LoRA field ``z`` in :mod:`state_evolution.channel_lora`) contract these.
    """
    T = H.shape[-1]
    eye = jnp.eye(T, dtype=H.dtype)
    if activation == "identity":
        c = beta / T
        return -c * (Y - c * H), jnp.broadcast_to((c * c) * eye, (*H.shape, T))
    p = apply_activation(H, activation, beta)
    r = Y - p
    s = jnp.sum(r * p, axis=-1, keepdims=True)  # (n, T, 1)
    grad_H = -beta * p * (r - s)
    J = p[..., :, None] * eye - p[..., :, None] * p[..., None, :]  # (n, a, b, c)
    JJ = jnp.einsum("nabc,nabd->nacd", J, J)
    diag_part = (p * (r - s))[..., :, None] * eye  # (n, a, c, d)
    pp = p[..., :, None] * p[..., None, :]  # (n, a, c, d)
    rr = r[..., :, None] + r[..., None, :] - 2 * s[..., None]
    return grad_H, beta ** 2 * (JJ - diag_part + pp * rr)


def loss_derivatives(h, Y, T, activation, beta):
    """``(∇_h ℓ, ∇²_h ℓ)`` for a batch, shapes ``(n, K)`` and ``(n, K, K)`` (chain rule through ``M``)."""
    M = jnp.asarray(coordinate_map(T), dtype=h.dtype)
    grad_H, hess_rows = logit_derivatives(from_coordinates(h, T), Y, activation, beta)
    grad_h = jnp.einsum("nac,ack->nk", grad_H, M)
    hess_h = jnp.einsum("ack,nacd,adl->nkl", M, hess_rows, M)
    return grad_h, hess_h
