"""Batched linear algebra on tiny symmetric matrices (``K ≤ 10``) in plain ``jax.numpy``.

The sampled channels solve ``n ≈ 10⁴`` systems ``J g = F`` of size ``K = T(T+1)/2`` (pre-training)
or ``T`` (LoRA) at every Newton step. ``jnp.linalg`` lowers these to LAPACK custom calls
(jaxlib's CPU LAPACK = scipy's OpenBLAS) issued from XLA's worker threads; inside the jitted Newton
``while_loop`` that combination deadlocked on 2-core machines (reproducible, independent of the
``OPENBLAS_NUM_THREADS`` setting under pytest). For ``K ≤ 10`` an unrolled Cholesky
factorisation vectorised over the batch is as fast and involves no foreign library.

All functions take ``(..., K, K)`` arrays with a static ``K``.
"""

from __future__ import annotations

import jax.numpy as jnp


def cholesky(A):
    """Lower Cholesky factor ``L`` (``A = L Lᵀ``) and the flag ``A ≻ 0`` per batch element.

    ``A`` is assumed symmetric (only its lower triangle is read). Where a pivot
    ``d_j = A_jj − Σ_{k<j} L_jk²`` is not positive the flag is ``False`` and the factor is
    computed with ``d_j`` replaced by a tiny positive number (finite, but meaningless).
    """
    K = A.shape[-1]
    tiny = jnp.finfo(A.dtype).tiny
    cols = []
    pd = jnp.ones(A.shape[:-2], dtype=bool)
    for j in range(K):
        d = A[..., j, j] - sum((cols[k][..., j] ** 2 for k in range(j)), jnp.zeros_like(A[..., j, j]))
        pd = pd & (d > 0)
        ljj = jnp.sqrt(jnp.maximum(d, tiny))
        below = A[..., :, j] - sum((cols[k] * cols[k][..., j:j + 1] for k in range(j)), jnp.zeros_like(A[..., :, j]))
        col = jnp.where(jnp.arange(K) > j, below / ljj[..., None], 0.0)
        col = col.at[..., j].set(ljj)
        cols.append(col)
    return jnp.stack(cols, axis=-1), pd


def cholesky_solve(L, B):
    """Solve ``L Lᵀ X = B`` for ``B`` of shape ``(..., K)`` or ``(..., K, R)``."""
    vector = B.ndim == L.ndim - 1
    X = B[..., None] if vector else B
    K = L.shape[-1]
    y = []
    for i in range(K):  # forward substitution  L y = B
        acc = X[..., i, :] - sum((L[..., i, k, None] * y[k] for k in range(i)), jnp.zeros_like(X[..., i, :]))
        y.append(acc / L[..., i, i, None])
    x = [None] * K
    for i in reversed(range(K)):  # back substitution  Lᵀ x = y
        acc = y[i] - sum((L[..., k, i, None] * x[k] for k in range(i + 1, K)), jnp.zeros_like(y[i]))
        x[i] = acc / L[..., i, i, None]
    X = jnp.stack(x, axis=-2)
    return X[..., 0] if vector else X


def spd_solve(A, B):
    """``A⁻¹ B`` for symmetric positive-definite ``A`` (``(..., K, K)``), by :func:`cholesky`."""
    L, _ = cholesky(A)
    return cholesky_solve(L, B)


def solve(A, B):
    """``A⁻¹ B`` for any non-singular ``A`` (``(..., K, K)``): Gaussian elimination, partial pivoting.

    ``B`` has shape ``(..., K)`` or ``(..., K, R)``. Used where ``A`` may be indefinite (the
    Jacobian ``I + V∇²ℓ`` of a non-convex loss away from a minimum).
    """
    vector = B.ndim == A.ndim - 1
    X = B[..., None] if vector else B
    K = A.shape[-1]
    M = jnp.concatenate([A, X], axis=-1)  # augmented (..., K, K + R)
    rows = jnp.arange(K)
    for j in range(K):
        p = j + jnp.argmax(jnp.abs(M[..., j:, j]), axis=-1)  # pivot row per batch element
        # swap rows j and p
        perm = jnp.where(rows == j, p[..., None], jnp.where(rows == p[..., None], j, rows))
        M = jnp.take_along_axis(M, perm[..., None], axis=-2)
        pivot = M[..., j, :] / M[..., j, j, None]
        M = M - M[..., :, j, None] * pivot[..., None, :]
        M = M.at[..., j, :].set(pivot)
    X = M[..., K:]
    return X[..., 0] if vector else X
