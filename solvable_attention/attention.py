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


def lora_field_logits(H_hat, z, q, c=1.0):
    """LoRA logits in field coordinates: ``c Ĥ + z zᵀ − q I`` (docs/model.md §3).

    ``H_hat``: frozen logits ``Ĥ = H(Ŝ; X)``, shape ``(..., T, T)`` (or a scalar 0); ``z``: the LoRA field
    ``X u/√D``, shape ``(..., T)``; ``q``: ``‖u‖²/D`` (the theory's ``q'``); ``c``: recalibration scalar.
    ``H(c Ŝ + u uᵀ/√D; X)`` is this with ``z = X u/√D``, ``q = ‖u‖²/D``. Returns shape ``(..., T, T)``.
    """
    T = z.shape[-1]
    return c * H_hat + z[..., :, None] * z[..., None, :] - q * jnp.eye(T, dtype=z.dtype)


def lora_logits(H_hat, X, u, c=1.0):
    """``H(c Ŝ + u uᵀ/√D; X) = c Ĥ + z zᵀ − (‖u‖²/D) I`` with ``z = X u/√D`` and ``Ĥ = H(Ŝ; X)`` given
    (:func:`lora_field_logits`); ``X`` of shape ``(..., T, D)``, ``u`` of shape ``(D,)``."""
    D = X.shape[-1]
    z = X @ u / jnp.sqrt(D)
    return lora_field_logits(H_hat, z, u @ u / D, c)


def rank_one_logits(X, u):
    """The LoRA term ``z zᵀ − (‖u‖²/D) I`` with ``z = X u/√D`` (so that ``H(S + uuᵀ/√D) = H(S) + this``)."""
    return lora_logits(0.0, X, u)
