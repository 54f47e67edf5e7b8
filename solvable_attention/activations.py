"""Activations ``σ`` applied to the ``T×T`` attention logits (docs/model.md §1).

* ``softmax``: ``σ(H)_ab = exp(β H_ab) / Σ_c exp(β H_ac)`` (row-wise);
* ``identity`` (rescaled identity): ``σ(H) = (β/T) H``, the slope of the softmax at ``H = 0``.

Both act on the last two axes of an array of shape ``(..., T, T)``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .params import ACTIVATIONS


def softmax_attention(H, beta: float = 1.0):
    """Row-wise softmax ``σ(H)_ab = exp(β H_ab)/Σ_c exp(β H_ac)`` (docs/model.md §1).

    Args:
        H: ``(..., T, T)`` logits.
        beta: ``β > 0``, inverse temperature.

    Returns:
        ``(..., T, T)`` attention weights, each row summing to 1.
    """
    return jax.nn.softmax(beta * H, axis=-1)


def identity_attention(H, beta: float = 1.0):
    """Rescaled identity ``σ(H) = (β/T) H``, the softmax's slope at ``H = 0`` (docs/model.md §1).

    Args:
        H: ``(..., T, T)`` logits.
        beta: ``β > 0``.

    Returns:
        ``(..., T, T)`` ``(β/T) H``.
    """
    return (beta / H.shape[-1]) * H


def activation_fn(name: str):
    """The activation ``σ(H, beta)`` of a name.

    Args:
        name: ``"softmax"`` or ``"identity"``.

    Returns:
        :func:`softmax_attention` or :func:`identity_attention`.

    Raises:
        ValueError: ``name`` not one of :data:`~solvable_attention.params.ACTIVATIONS`.
    """
    if name == "softmax":
        return softmax_attention
    if name == "identity":
        return identity_attention
    raise ValueError(f"activation must be one of {ACTIVATIONS}, got {name!r}")


def apply_activation(H, name: str, beta: float = 1.0):
    """``σ(H)`` for the named activation (docs/model.md §1).

    Args:
        H: ``(..., T, T)`` logits.
        name: ``"softmax"`` or ``"identity"``.
        beta: ``β > 0``.

    Returns:
        ``(..., T, T)`` ``σ(H)``.

    Raises:
        ValueError: an unknown ``name``.
    """
    return activation_fn(name)(H, beta)
