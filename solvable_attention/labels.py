"""The labels of both noise conventions, from teacher logits and a standard-normal draw (docs/model.md §2–3).

    noise="logits":  Y = σ(H + √Δ Ξ),   Ξ = (G + Gᵀ)/√2  (GOE, :func:`random_matrices.goe_from_square`)
    noise="output":  Y = σ(H) + √Δ G

with ``G`` i.i.d. ``N(0, 1)`` of the shape of ``H``. The one home of this formula: the simulator draws
``G`` from a key (:func:`solvable_attention.data.noisy_labels`), the theory's Monte Carlo channels
pass their fixed draws (batched JAX arrays, under ``jit``/``vmap``).
"""

from __future__ import annotations

import jax.numpy as jnp

from .activations import apply_activation
from .random_matrices import goe_from_square

NOISE_CONVENTIONS = ("logits", "output")


def labels_from_draw(H, G, delta, activation: str, beta, noise: str):
    """``Y`` of the ``noise`` convention for logits ``H`` and the draw ``G``, both of shape ``(..., T, T)``.

    ``delta``: noise variance ``Δ ≥ 0``. Returns an array of the shape of ``H``.

    Raises:
        ValueError: ``noise`` not in ``("logits", "output")``.
    """
    if noise == "logits":
        return apply_activation(H + jnp.sqrt(delta) * goe_from_square(G), activation, beta)
    if noise == "output":
        return apply_activation(H, activation, beta) + jnp.sqrt(delta) * G
    raise ValueError(f"noise must be one of {NOISE_CONVENTIONS}, got {noise!r}")
