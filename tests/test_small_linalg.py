"""The unrolled small-matrix linear algebra against numpy.linalg (the slow, plain oracle)."""

import numpy as np
import pytest

from state_evolution import small_linalg as sl


@pytest.mark.parametrize("K", [1, 3, 6, 10])
def test_cholesky_and_solves_match_numpy(K):
    rng = np.random.default_rng(K)
    G = rng.standard_normal((64, K, K))
    A = G @ G.transpose(0, 2, 1) + 0.1 * np.eye(K)  # SPD
    S = G + G.transpose(0, 2, 1)  # symmetric, mostly indefinite
    b, B = rng.standard_normal((64, K)), rng.standard_normal((64, K, 4))
    L, pd = sl.cholesky(A)
    assert bool(np.all(pd))
    # round-off of an O(K) triangular recursion on matrices with condition number ≲ 1e4
    np.testing.assert_allclose(L, np.linalg.cholesky(A), atol=1e-10)
    np.testing.assert_allclose(sl.spd_solve(A, b), np.linalg.solve(A, b[..., None])[..., 0], rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(sl.spd_solve(A, B), np.linalg.solve(A, B), rtol=1e-7, atol=1e-9)
    # the positive-definiteness flag is exactly "smallest eigenvalue > 0"
    _, pd_S = sl.cholesky(S)
    np.testing.assert_array_equal(np.asarray(pd_S), np.linalg.eigvalsh(S).min(-1) > 0)
    # general solve with pivoting: indefinite symmetric and non-symmetric matrices
    np.testing.assert_allclose(sl.solve(S, B), np.linalg.solve(S, B), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(sl.solve(G, b), np.linalg.solve(G, b[..., None])[..., 0], rtol=1e-6, atol=1e-8)


def test_solve_needs_pivoting():
    A = np.array([[[0.0, 1.0], [1.0, 0.0]]])  # zero leading pivot: elimination without pivoting fails
    b = np.array([[2.0, 3.0]])
    np.testing.assert_allclose(sl.solve(A, b), [[3.0, 2.0]])
