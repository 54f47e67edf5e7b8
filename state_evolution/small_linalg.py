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


def cholesky_factor(A):
    """Lower Cholesky factor as a nested list of ``(...)`` arrays (``L[i][j]``, ``j ≤ i``) and the
    positive-definiteness flag; see :func:`cholesky`. Written entry by entry (structure of arrays):
    XLA fuses the recursion into one vectorised loop over the batch (a 6×6 factorisation of 32768
    matrices: 6.7 ms with column arrays and ``.at[].set``, about 1 ms this way, one core).

    Args:
        A: ``(..., K, K)`` symmetric matrices (lower triangle read).

    Returns:
        ``(L, pd)``: ``L[i][j]`` ``(...)`` arrays for ``j ≤ i``, and the ``(...)`` boolean flag ``A ≻ 0``.
    """
    K = A.shape[-1]
    tiny = jnp.finfo(A.dtype).tiny
    a = [[A[..., i, j] for j in range(i + 1)] for i in range(K)]  # lower triangle only
    L = [[None] * K for _ in range(K)]
    pd = jnp.ones(A.shape[:-2], dtype=bool)
    for j in range(K):
        d = a[j][j]
        for k in range(j):
            d = d - L[j][k] * L[j][k]
        pd = pd & (d > 0)
        ljj = jnp.sqrt(jnp.maximum(d, tiny))
        L[j][j] = ljj
        for i in range(j + 1, K):
            v = a[i][j]
            for k in range(j):
                v = v - L[i][k] * L[j][k]
            L[i][j] = v / ljj
    return L, pd


def _cholesky_solve_entries(L, X):
    """Solve ``L Lᵀ x = b`` for each of the ``K`` right-hand-side entries ``X[i]`` (arrays of shape
    ``(...)`` or ``(..., R)``), ``L`` as returned by :func:`cholesky_factor`."""
    K = len(L)
    y = [None] * K
    for i in range(K):  # forward substitution  L y = b
        acc = X[i]
        for k in range(i):
            acc = acc - _bcast(L[i][k], acc) * y[k]
        y[i] = acc / _bcast(L[i][i], acc)
    x = [None] * K
    for i in reversed(range(K)):  # back substitution  Lᵀ x = y
        acc = y[i]
        for k in range(i + 1, K):
            acc = acc - _bcast(L[k][i], acc) * x[k]
        x[i] = acc / _bcast(L[i][i], acc)
    return x


def _bcast(l, like):
    """A factor entry ``(...)`` broadcast against a right-hand side ``(...)`` or ``(..., R)``."""
    return l if l.ndim == like.ndim else l[..., None]


def cholesky(A):
    """Lower Cholesky factor ``L`` (``A = L Lᵀ``) and the flag ``A ≻ 0`` per batch element.

    ``A`` is assumed symmetric (only its lower triangle is read). Where a pivot
    ``d_j = A_jj − Σ_{k<j} L_jk²`` is not positive the flag is ``False`` and the factor is
    computed with ``d_j`` replaced by a tiny positive number (finite, but meaningless).

    Args:
        A: ``(..., K, K)`` symmetric matrices.

    Returns:
        ``(L, pd)``: ``(..., K, K)`` lower factors and the ``(...)`` boolean flag ``A ≻ 0``.
    """
    L, pd = cholesky_factor(A)
    K = len(L)
    zero = jnp.zeros_like(A[..., 0, 0])
    return jnp.stack([jnp.stack([L[i][j] if j <= i else zero for j in range(K)], axis=-1) for i in range(K)],
                     axis=-2), pd


def cholesky_solve(L, B):
    """Solve ``L Lᵀ X = B`` for ``B`` of shape ``(..., K)`` or ``(..., K, R)``.

    Args:
        L: ``(..., K, K)`` lower Cholesky factors (:func:`cholesky`).
        B: ``(..., K)`` or ``(..., K, R)`` right-hand sides.

    Returns:
        ``X`` of the shape of ``B``.
    """
    K = L.shape[-1]
    Le = [[L[..., i, j] for j in range(i + 1)] + [None] * (K - i - 1) for i in range(K)]
    return _solve_with(Le, B)


def _solve_with(Le, B):
    vector = B.ndim == Le[0][0].ndim + 1
    x = _cholesky_solve_entries(Le, [B[..., i] if vector else B[..., i, :] for i in range(len(Le))])
    return jnp.stack(x, axis=-1 if vector else -2)


def factor_solve(L, B):
    """Solve ``L Lᵀ X = B`` with ``L`` the nested-list factor of :func:`cholesky_factor` (no stacking).

    Args:
        L: ``L[i][j]`` ``(...)`` arrays for ``j ≤ i`` (:func:`cholesky_factor`).
        B: ``(..., K)`` or ``(..., K, R)`` right-hand sides.

    Returns:
        ``X`` of the shape of ``B``.
    """
    return _solve_with(L, B)


def spd_solve(A, B):
    """``A⁻¹ B`` for symmetric positive-definite ``A`` (``(..., K, K)``), by :func:`cholesky`
    (factor and substitutions entry by entry, never stacked in between).

    Args:
        A: ``(..., K, K)`` symmetric positive-definite matrices (not checked: a non-positive pivot gives
            a finite but meaningless result).
        B: ``(..., K)`` or ``(..., K, R)`` right-hand sides.

    Returns:
        ``A⁻¹ B`` of the shape of ``B``.
    """
    L, _ = cholesky_factor(A)
    return _solve_with(L, B)


def solve(A, B):
    """``A⁻¹ B`` for any non-singular ``A`` (``(..., K, K)``): Gaussian elimination, partial pivoting.

    ``B`` has shape ``(..., K)`` or ``(..., K, R)``. Used where ``A`` may be indefinite (the
    Jacobian ``I + V∇²ℓ`` of a non-convex loss away from a minimum).

    Args:
        A: ``(..., K, K)`` non-singular matrices (not checked: a singular one gives inf/NaN).
        B: ``(..., K)`` or ``(..., K, R)`` right-hand sides.

    Returns:
        ``A⁻¹ B`` of the shape of ``B``.
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
