"""Random matrices of the model: the ``T×T`` GOE noise and the ``D×D`` Wishart teacher.

GOE convention (docs/model.md §2, docs/theory.md §1): ``Ξ = (G + Gᵀ)/√2`` with ``G`` i.i.d.
``N(0, 1)``: off-diagonal variance 1, diagonal variance 2, density ``∝ exp(−‖Ξ‖²_F/4)``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def goe(key, shape, T: int, dtype=None):
    """GOE ``T×T`` matrices of batch shape ``shape``: ``(G + Gᵀ)/√2``."""
    dtype = dtype or jnp.result_type(float)
    G = jax.random.normal(key, (*shape, T, T), dtype=dtype)
    return (G + jnp.swapaxes(G, -1, -2)) / jnp.sqrt(2.0)


def wishart_teacher(key, D: int, kappa0: float, dtype=None):
    """``S0 = W0ᵀ W0/(√κ0 D)``, ``W0 ∈ R^{R0×D}``, ``R0 = max(1, round(κ0 D))`` i.i.d. ``N(0,1)``.

    Spectrum → ``√κ0 ×`` Marchenko–Pastur of ratio ``1/κ0``; ``Tr(S0²)/D → 1 + κ0``.
    """
    dtype = dtype or jnp.result_type(float)
    R0 = max(1, int(round(kappa0 * D)))
    W0 = jax.random.normal(key, (R0, D), dtype=dtype)
    return W0.T @ W0 / (jnp.sqrt(kappa0) * D)
