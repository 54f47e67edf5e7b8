"""Exact finite-``D`` metrics of docs/model.md §4, shared by simulation and validation.

Pre-training: ``m = Tr(Ŝ S0)/D``, ``q = Tr(Ŝ²)/D``, ``ρ0 = Tr(S0²)/D``,
``mse_S = ‖Ŝ − S0‖²_F/D = ρ0 − 2m + q``, test error
``E = E_X ‖σ(H(Ŝ; X)) − σ(H(S0; X))‖²_F`` (noise-free, fresh ``X``).
Fine-tuning: ``m' = û·v/D``, ``q' = ‖û‖²/D``, ``ρ_v = ‖v‖²/D``,
alignment ``|m'|/√(q' ρ_v)``, ``E' = E_X ‖σ(H(S(û))) − σ(H(S1))‖²_F``.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from .activations import apply_activation
from .attention import attention_logits


def matrix_overlaps(S_hat, S0) -> dict:
    """``m, q, ρ0, mse_S`` (``/D``-normalised traces) of an estimate ``Ŝ`` of ``S0`` (docs/model.md §4).

    ``m = Tr(Ŝ S0)/D``, ``q = Tr(Ŝ²)/D``, ``ρ0 = Tr(S0²)/D``, ``mse_S = ‖Ŝ − S0‖²_F/D``.

    Args:
        S_hat: ``(D, D)`` symmetric estimate ``Ŝ``.
        S0: ``(D, D)`` symmetric teacher.

    Returns:
        ``{"m", "q", "rho0", "mse_S"}`` as floats.
    """
    D = S0.shape[0]
    m = float(jnp.sum(S_hat * S0) / D)
    q = float(jnp.sum(S_hat * S_hat) / D)
    rho0 = float(jnp.sum(S0 * S0) / D)
    mse = float(jnp.sum((S_hat - S0) ** 2) / D)
    return dict(m=m, q=q, rho0=rho0, mse_S=mse)


def vector_overlaps(u, v) -> dict:
    """``m' = u·v/D``, ``q' = ‖u‖²/D``, ``ρ_v = ‖v‖²/D`` and the alignment ``|m'|/√(q'ρ_v)`` (0 if ``u = 0``).

    The fine-tuning order parameters of docs/model.md §4.

    Args:
        u: ``(D,)`` the LoRA vector ``û``.
        v: ``(D,)`` the new direction ``v``.

    Returns:
        ``{"m", "q", "rho_v", "alignment"}`` as floats.
    """
    D = v.shape[0]
    m = float(u @ v / D)
    q = float(u @ u / D)
    rho_v = float(v @ v / D)
    alignment = abs(m) / np.sqrt(q * rho_v) if q > 0 else 0.0
    return dict(m=m, q=q, rho_v=rho_v, alignment=float(alignment))


@partial(jax.jit, static_argnames=("n", "T", "activation"))
def _chunk_error(key, S_a, S_b, n, T, activation, beta):
    D = S_a.shape[0]
    X = jax.random.normal(key, (n, T, D), dtype=S_a.dtype)
    diff = apply_activation(attention_logits(S_a, X), activation, beta) - \
        apply_activation(attention_logits(S_b, X), activation, beta)
    per_sample = jnp.sum(diff * diff, axis=(-1, -2))
    return jnp.sum(per_sample), jnp.sum(per_sample ** 2)


def test_error(key, S_student, S_teacher, *, T: int, activation: str, beta: float = 1.0,
               n_test: int = 20000, chunk: int = 2048) -> tuple[float, float]:
    """``E_X ‖σ(H(S_student; X)) − σ(H(S_teacher; X))‖²_F`` on ``n_test`` fresh samples.

    Noise-free labels on fresh Gaussian inputs ``X`` (docs/model.md §4). Memory is bounded by ``chunk``
    samples at a time.

    Args:
        key: ``jax.random`` key of the test inputs.
        S_student: ``(D, D)`` the student's matrix.
        S_teacher: ``(D, D)`` the teacher's matrix.
        T: tokens per sequence.
        activation: ``"softmax"`` or ``"identity"``.
        beta: ``β > 0``.
        n_test: test samples.
        chunk: samples per batch (memory only).

    Returns:
        ``(mean, standard error)`` of the per-sequence squared error.

    Raises:
        ValueError: an unknown ``activation``.
    """
    total = total_sq = 0.0
    n_done = 0
    for i, start in enumerate(range(0, n_test, chunk)):
        n = min(chunk, n_test - start)
        s, s2 = _chunk_error(jax.random.fold_in(key, i), S_student, S_teacher, n, T, activation, beta)
        total += float(s)
        total_sq += float(s2)
        n_done += n
    mean = total / n_done
    var = max(total_sq / n_done - mean ** 2, 0.0)
    return mean, float(np.sqrt(var / n_done))


test_error.__test__ = False  # not a pytest test despite its name


# Eigenvalues of the update above this fraction of the largest count towards its rank (docs/model.md §6).
UPDATE_RANK_RTOL = 1e-6


def update_metrics(Delta, V) -> dict:
    """Rotation-invariant metrics of a fine-tuning update ``Δ̂`` against the true shift ``V Vᵀ`` (docs/model.md §6).

    The update alignment is the cosine of the two matrices, ``⟨Δ̂, V Vᵀ⟩_F / (‖Δ̂‖_F ‖V Vᵀ‖_F)``; for a LoRA
    ``Δ̂ = Û Ûᵀ/√D`` it equals ``‖M'‖²_F/(‖Q'‖_F ‖ρ_V‖_F)`` with ``M' = ÛᵀV/D``, ``Q' = ÛᵀÛ/D``,
    ``ρ_V = VᵀV/D``, and for ``r = r* = 1`` the square of the rank-one alignment.

    Args:
        Delta: ``(D, D)`` symmetric update (``0`` for no adaptation).
        V: ``(D, r*)`` the shift's directions.

    Returns:
        ``{"update_alignment", "update_rank", "update_norm"}``: the cosine (0 for ``Δ̂ = 0``), the number of
        eigenvalues of ``|Δ̂|`` above :data:`UPDATE_RANK_RTOL` of the largest, and ``‖Δ̂‖_F/√D``.
    """
    D = V.shape[0]
    VVt = V @ V.T
    norm = float(jnp.linalg.norm(Delta))
    cos = float(jnp.sum(Delta * VVt) / (norm * jnp.linalg.norm(VVt))) if norm > 0 else 0.0
    eig = np.abs(np.linalg.eigvalsh(np.asarray(Delta)))
    rank = int(np.sum(eig > UPDATE_RANK_RTOL * eig.max())) if eig.max() > 0 else 0
    return {"update_alignment": cos, "update_rank": rank, "update_norm": norm / float(np.sqrt(D))}


def lora_order_parameters(U, V) -> dict:
    """The rank-r LoRA order parameters in rotation-invariant form (docs/model.md §6).

    ``M' = ÛᵀV/D`` (``r × r*``) and ``Q' = ÛᵀÛ/D`` (``r × r``) change under ``Û → ÛO``; ``M'ᵀM'`` (``r* × r*``)
    and the eigenvalues of ``Q'`` do not.

    Args:
        U: ``(D, r)`` the LoRA factor ``Û``.
        V: ``(D, r*)`` the shift's directions.

    Returns:
        ``{"MtM": r*×r* nested list, "Q_eigenvalues": r values, descending, "rho_V": r*×r* nested list}``.
    """
    D = V.shape[0]
    M = U.T @ V / D
    Q = U.T @ U / D
    return {"MtM": np.asarray(M.T @ M).tolist(),
            "Q_eigenvalues": sorted(np.linalg.eigvalsh(np.asarray(Q)).tolist(), reverse=True),
            "rho_V": np.asarray(V.T @ V / D).tolist()}
