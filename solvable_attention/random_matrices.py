"""Random matrices of the model: the ``T×T`` GOE noise and the ``D×D`` Wishart teacher.

GOE convention (docs/model.md §2, docs/theory.md §1): ``Ξ = (G + Gᵀ)/√2`` with ``G`` i.i.d.
``N(0, 1)``: off-diagonal variance 1, diagonal variance 2, density ``∝ exp(−‖Ξ‖²_F/4)``.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp


def goe_from_square(G, scale: float = 1.0):
    """``Ξ = (G + Gᵀ)/√(2 scale)`` from i.i.d. standard normal ``G`` of shape ``(..., N, N)`` (JAX or numpy).

    ``scale = 1``: the GOE of the logit noise, off-diagonal variance 1 and diagonal variance 2
    (docs/model.md §2); ``scale = N``: the same GOE divided by ``√N``, whose spectrum tends to the
    semicircle on ``[−2, 2]`` (the ``Z`` of the spectral prior, docs/theory.md §1).
    """
    return (G + G.swapaxes(-1, -2)) / math.sqrt(2.0 * scale)


def goe(key, shape, T: int, dtype=None):
    """GOE ``T×T`` matrices of batch shape ``shape``: :func:`goe_from_square` of a fresh draw."""
    dtype = dtype or jnp.result_type(float)
    return goe_from_square(jax.random.normal(key, (*shape, T, T), dtype=dtype))


def wishart_teacher(key, D: int, kappa0: float, dtype=None):
    """``S0 = W0ᵀ W0/(√κ0 D)``, ``W0 ∈ R^{R0×D}``, ``R0 = max(1, round(κ0 D))`` i.i.d. ``N(0,1)``.

    Spectrum → ``√κ0 ×`` Marchenko–Pastur of ratio ``1/κ0``; ``Tr(S0²)/D → 1 + κ0``.
    """
    dtype = dtype or jnp.result_type(float)
    R0 = max(1, int(round(kappa0 * D)))
    W0 = jax.random.normal(key, (R0, D), dtype=dtype)
    return W0.T @ W0 / (jnp.sqrt(kappa0) * D)
