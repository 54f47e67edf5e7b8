"""Orthonormal ("whitened") coordinates of symmetric ``T×T`` logits.

A symmetric ``H`` has ``K = T(T+1)/2`` free entries. With ``h_aa = H_aa/√2`` and
``h_ab = H_ab`` (``a < b``),

    ‖H‖²_F = 2 ‖h‖²,        GOE density ∝ exp(−‖H‖²_F/4) = exp(−‖h‖²/2),

so a GOE matrix of variance ``q`` (off-diagonal ``q``, diagonal ``2q``, docs/theory.md §1)
is ``h ~ N(0, q I_K)``: the ``T×T`` channel becomes ``K`` i.i.d. Gaussian fields, and
the GOE proximal metric ``‖H − Ω‖²_F/(4V)`` becomes ``‖h − ω‖²/(2V)``.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np


def n_free_entries(T: int) -> int:
    """``K = T(T+1)/2``."""
    return T * (T + 1) // 2


def _index_map(T: int):
    rows, cols = np.triu_indices(T)
    scale = np.where(rows == cols, np.sqrt(0.5), 1.0)
    return rows, cols, scale


def to_coordinates(H):
    """``(..., T, T)`` symmetric → ``(..., K)`` whitened coordinates."""
    rows, cols, scale = _index_map(H.shape[-1])
    return H[..., rows, cols] * scale


def from_coordinates(h, T: int):
    """``(..., K)`` whitened coordinates → ``(..., T, T)`` symmetric matrix."""
    rows, cols, scale = _index_map(T)
    vals = h / scale
    H = jnp.zeros((*h.shape[:-1], T, T), dtype=h.dtype)
    H = H.at[..., rows, cols].set(vals)
    return H.at[..., cols, rows].set(vals)

