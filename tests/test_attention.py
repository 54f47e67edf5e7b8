"""The attention map of solvable_attention/attention.py (docs/model.md §1): the logits against their
definition, the factorised and rank-one forms, and the Gaussian second moments of the logits."""

import math

import jax
import jax.numpy as jnp
import numpy as np

from solvable_attention.attention import attention_logits, factorized_logits, rank_one_logits
from solvable_attention.data import sample_teacher


def test_attention_logits_match_definition():
    key = jax.random.PRNGKey(0)
    D, T = 7, 4
    A = jax.random.normal(key, (D, D))
    S = A + A.T
    X = jax.random.normal(jax.random.PRNGKey(1), (T, D))
    expected = (X @ S @ X.T - jnp.trace(S) * jnp.eye(T)) / math.sqrt(D)
    np.testing.assert_allclose(attention_logits(S, X), expected, rtol=1e-12)


def test_rank_one_and_factorized_logits_are_the_same_map():
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(2), 3)
    D, T, kappa = 9, 3, 0.7
    W = jax.random.normal(k1, (6, D))
    X = jax.random.normal(k2, (5, T, D))
    u = jax.random.normal(k3, (D,))
    S = W.T @ W / (math.sqrt(kappa) * D)
    np.testing.assert_allclose(factorized_logits(W, X, kappa), attention_logits(S, X), atol=1e-12)
    lhs = attention_logits(S + jnp.outer(u, u) / math.sqrt(D), X)
    np.testing.assert_allclose(lhs, attention_logits(S, X) + rank_one_logits(X, u), atol=1e-12)


def test_gaussian_second_moments_of_the_logits():
    """docs/theory.md §1: E[H_ab(S)H_ab(S')] = Tr(SS')/D off the diagonal, twice that on it, others 0.

    D = 40, 40 000 samples: each moment estimate has a standard error ≈ 0.7%·scale; we allow 5 s.e.
    """
    D, T, n = 40, 3, 40000
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(4), 3)
    S0 = sample_teacher(k1, D).S0
    A = jax.random.normal(k2, (D, D))
    S = (A + A.T) / math.sqrt(2 * D)
    X = jax.random.normal(k3, (n, T, D))
    H, H0 = np.asarray(attention_logits(S, X)), np.asarray(attention_logits(S0, X))
    c = float(jnp.sum(S * S0) / D)
    prod = H * H0
    for (a, b), factor in [((0, 1), 1.0), ((1, 2), 1.0), ((0, 0), 2.0), ((2, 2), 2.0)]:
        est, se = prod[:, a, b].mean(), prod[:, a, b].std() / math.sqrt(n)
        assert abs(est - factor * c) < 5 * se, (a, b, est, factor * c, se)
    cross = H[:, 0, 1] * H0[:, 0, 0]  # different entries are uncorrelated
    assert abs(cross.mean()) < 5 * cross.std() / math.sqrt(n)
