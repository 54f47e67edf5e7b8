"""Teachers, inputs and labels of both tasks (docs/model.md §2–§3).

* inputs ``X ∈ R^{T×D}`` i.i.d. ``N(0, 1)``;
* labels ``Y = σ(H(S*; X) + √Δ Ξ)`` (``noise="logits"``, ``Ξ`` GOE) or
  ``Y = σ(H(S*; X)) + √Δ Ξ`` (``noise="output"``, ``Ξ`` i.i.d. ``N(0,1)``);
* pre-training teacher ``S0`` (Wishart, :func:`random_matrices.wishart_teacher`),
  fine-tuning teacher ``S1 = S0 + γ V Vᵀ/√D`` with ``V ∈ R^{D×r*}`` i.i.d. ``N(0, 1)`` (docs/model.md §3,
  §6); its first column is the rank-one shift ``v`` (same seed, same ``v`` whatever ``r*``).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp

from .attention import attention_logits
from .labels import labels_from_draw
from .random_matrices import wishart_teacher


@dataclass(frozen=True)
class Teacher:
    """Both teachers: ``S0`` (pre-training) and ``S1 = S0 + γ V Vᵀ/√D`` (docs/model.md §3, §6).

    Attributes:
        S0: ``(D, D)`` pre-training teacher.
        v: ``(D,)`` the first column of ``V`` (the rank-one shift of docs/model.md §3).
        gamma: ``γ``, the strength of the shift.
        extra: ``(D, r* − 1)`` the other columns of ``V`` (``None`` for ``r* = 1``).
    """

    S0: jax.Array
    v: jax.Array
    gamma: float
    extra: jax.Array | None = None

    @property
    def V(self):
        """``(D, r*)`` the shift's directions ``[v, extra]``."""
        return self.v[:, None] if self.extra is None else jnp.concatenate([self.v[:, None], self.extra], axis=1)

    @property
    def shift_rank(self) -> int:
        """``r*``, the rank of the shift."""
        return 1 if self.extra is None else 1 + self.extra.shape[1]

    @property
    def S1(self):
        """``(D, D)`` fine-tuning teacher ``S0 + γ V Vᵀ/√D``."""
        D = self.v.shape[0]
        if self.extra is None:  # the rank-one expression, kept bit for bit
            return self.S0 + self.gamma * jnp.outer(self.v, self.v) / jnp.sqrt(D)
        return self.S0 + self.gamma * (self.V @ self.V.T) / jnp.sqrt(D)


def sample_teacher(key, D: int, kappa0: float = 1.0, gamma: float = 1.0, dtype=None, shift_rank: int = 1) -> Teacher:
    """Draw ``S0`` (Wishart, width ratio ``κ0``) and ``V ~ N(0, I_D)^{r*}``.

    Args:
        key: ``jax.random`` key.
        D: the dimension.
        kappa0: ``κ0 > 0``, the teacher's width ratio.
        gamma: ``γ``, the shift's strength.
        dtype: float dtype (default JAX's float).
        shift_rank: ``r* ≥ 1``; the first column ``v`` is the same for every ``r*`` (the others come from an
            independent stream).

    Returns:
        The :class:`Teacher`.
    """
    dtype = dtype or jnp.result_type(float)
    k0, kv = jax.random.split(key)
    extra = None
    if shift_rank > 1:
        extra = jax.random.normal(jax.random.fold_in(kv, 1), (D, shift_rank - 1), dtype)
    return Teacher(S0=wishart_teacher(k0, D, kappa0, dtype), v=jax.random.normal(kv, (D,), dtype),
                   gamma=float(gamma), extra=extra)


def sample_inputs(key, n: int, T: int, D: int, dtype=None):
    """``n`` inputs ``X_μ ∈ R^{T×D}`` with i.i.d. ``N(0,1)`` entries, shape ``(n, T, D)``."""
    dtype = dtype or jnp.result_type(float)
    return jax.random.normal(key, (n, T, D), dtype=dtype)


def noisy_labels(key, H_teacher, delta: float, activation: str, beta: float, noise: str):
    """Labels from teacher logits ``H_teacher`` (shape ``(n, T, T)``) with noise variance ``Δ``
    (:func:`solvable_attention.labels.labels_from_draw` of a draw ``G ~ N(0, 1)`` from ``key``)."""
    if noise not in ("logits", "output"):
        raise ValueError(f"noise must be one of ('logits', 'output'), got {noise!r}")
    G = jax.random.normal(key, H_teacher.shape, H_teacher.dtype)
    return labels_from_draw(H_teacher, G, delta, activation, beta, noise)


def sample_labels(key, S_teacher, X, delta: float, activation: str, beta: float, noise: str,
                  chunk: int = 8192):
    """``Y_μ`` for inputs ``X`` from teacher ``S_teacher`` (computed in chunks of samples)."""
    n = X.shape[0]
    keys = jax.random.split(key, max(1, -(-n // chunk)))
    parts = []
    for i, start in enumerate(range(0, n, chunk)):
        H = attention_logits(S_teacher, X[start:start + chunk])
        parts.append(noisy_labels(keys[i], H, delta, activation, beta, noise))
    return jnp.concatenate(parts, axis=0)
