"""The attention logits ``H(S; X) = (X S Xᵀ − Tr(S) I_T)/√D`` (docs/model.md §1).

The trace subtraction centres the diagonal; it is part of the model.
For a rank-one update ``S + u uᵀ/√D``:
``H(S + u uᵀ/√D; X) = H(S; X) + z zᵀ − (‖u‖²/D) I`` with ``z = X u/√D``.
"""

from __future__ import annotations

import jax.numpy as jnp


def attention_logits(S, X):
    """``H(S; X)`` for ``X`` of shape ``(..., T, D)`` and symmetric ``S`` (D×D); shape ``(..., T, T)``."""
    D = X.shape[-1]
    T = X.shape[-2]
    XS = X @ S
    H = XS @ jnp.swapaxes(X, -1, -2)
    return (H - jnp.trace(S) * jnp.eye(T, dtype=H.dtype)) / jnp.sqrt(D)


def factorized_logits(W, X, kappa: float):
    """``H(S_W; X)`` for ``S_W = Wᵀ W/(√κ D)`` without forming ``S_W`` (cost ``n T R D``)."""
    D = X.shape[-1]
    T = X.shape[-2]
    XW = X @ W.T  # (..., T, R)
    scale = 1.0 / (jnp.sqrt(kappa) * D)
    H = scale * (XW @ jnp.swapaxes(XW, -1, -2)) - scale * jnp.sum(W * W) * jnp.eye(T, dtype=XW.dtype)
    return H / jnp.sqrt(D)


def rank_one_logits(X, u):
    """The LoRA term ``z zᵀ − (‖u‖²/D) I`` with ``z = X u/√D`` (so that ``H(S + uuᵀ/√D) = H(S) + this``)."""
    D = X.shape[-1]
    T = X.shape[-2]
    z = X @ u / jnp.sqrt(D)
    return z[..., :, None] * z[..., None, :] - (u @ u / D) * jnp.eye(T, dtype=z.dtype)
