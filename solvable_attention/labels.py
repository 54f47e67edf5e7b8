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
    """The labels ``Y`` of the ``noise`` convention for the logits ``H`` and the draw ``G`` (docs/model.md §2).

    ``noise="logits"``: ``Y = σ(H + √Δ Ξ)`` with ``Ξ = (G + Gᵀ)/√2`` (GOE,
    :func:`random_matrices.goe_from_square`); ``noise="output"``: ``Y = σ(H) + √Δ G``.

    Args:
        H: ``(..., T, T)`` teacher logits.
        G: ``(..., T, T)`` i.i.d. ``N(0, 1)`` draw, of the shape of ``H``.
        delta: noise variance ``Δ ≥ 0``.
        activation: ``σ``: ``"softmax"`` or ``"identity"`` (:func:`activations.apply_activation`).
        beta: inverse temperature ``β > 0`` of ``σ``.
        noise: ``"logits"`` or ``"output"``: where the noise enters.

    Returns:
        ``(..., T, T)`` labels ``Y``, of the shape of ``H``.

    Raises:
        ValueError: ``noise`` not in ``("logits", "output")``.
    """
    if noise == "logits":
        return apply_activation(H + jnp.sqrt(delta) * goe_from_square(G), activation, beta)
    if noise == "output":
        return apply_activation(H, activation, beta) + jnp.sqrt(delta) * G
    raise ValueError(f"noise must be one of {NOISE_CONVENTIONS}, got {noise!r}")
