"""Activations ``σ`` applied to the ``T×T`` attention logits (MODEL.md §1).

* ``softmax``: ``σ(H)_ab = exp(β H_ab) / Σ_c exp(β H_ac)`` (row-wise);
* ``identity`` (rescaled identity): ``σ(H) = (β/T) H``, the slope of the softmax at ``H = 0``.

Both act on the last two axes of an array of shape ``(..., T, T)``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .params import ACTIVATIONS


def softmax_attention(H, beta: float = 1.0):
    """Row-wise softmax ``exp(β H_ab)/Σ_c exp(β H_ac)``."""
    return jax.nn.softmax(beta * H, axis=-1)


def identity_attention(H, beta: float = 1.0):
    """Rescaled identity ``(β/T) H``."""
    return (beta / H.shape[-1]) * H


def activation_fn(name: str):
    """Return ``σ(H, beta)`` for an activation name; unknown names raise ``ValueError``."""
    if name == "softmax":
        return softmax_attention
    if name == "identity":
        return identity_attention
    raise ValueError(f"activation must be one of {ACTIVATIONS}, got {name!r}")


def apply_activation(H, name: str, beta: float = 1.0):
    """``σ(H)`` for the named activation."""
    return activation_fn(name)(H, beta)
