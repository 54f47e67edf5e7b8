"""The model of MODEL.md: parameter validation, attention map, activations, data, metrics."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from solvable_attention.activations import apply_activation
from solvable_attention.attention import attention_logits, factorized_logits, rank_one_logits
from solvable_attention.data import noisy_labels, sample_teacher
from solvable_attention.labels import labels_from_draw
from solvable_attention.random_matrices import goe_from_square
from solvable_attention.metrics import matrix_overlaps, test_error, vector_overlaps
from solvable_attention.params import FinetuneParams, PretrainParams, check_dimension, make_params

BAD_PRETRAIN = [
    (dict(alpha=0.0), "alpha"), (dict(alpha=-1.0), "alpha"), (dict(alpha=float("nan")), "alpha"),
    (dict(alpha=float("inf")), "alpha"), (dict(delta=-0.1), "delta"), (dict(lam=-1e-3), "lam"),
    (dict(lam=float("inf")), "lam"), (dict(T=0), "T"), (dict(T=1, activation="softmax"), "T"),
    (dict(T=2.5), "T"), (dict(beta=0.0), "beta"), (dict(kappa0=0.0), "kappa0"), (dict(kappa=-1.0), "kappa"),
    (dict(activation="relu"), "activation"), (dict(noise="input"), "noise"), (dict(delta="a"), "delta"),
]


@pytest.mark.parametrize("change,name", BAD_PRETRAIN)
def test_bad_pretrain_parameters_name_the_parameter(change, name):
    kw = dict(alpha=0.1, delta=0.5, lam=0.1) | change
    with pytest.raises(ValueError, match=rf"^{name} "):
        PretrainParams(**kw)


@pytest.mark.parametrize("change,name", [
    (dict(alpha_prime=0.0), "alpha_prime"), (dict(lam_prime=-1.0), "lam_prime"),
    (dict(lam_prime=float("nan")), "lam_prime"), (dict(delta_prime=-1.0), "delta_prime"),
    (dict(gamma=0.0), "gamma"), (dict(gamma=float("inf")), "gamma"),
])
def test_bad_finetune_parameters_name_the_parameter(change, name):
    with pytest.raises(ValueError, match=rf"^{name} "):
        FinetuneParams(**(dict(alpha_prime=3.0) | change))


def test_valid_parameters_and_defaults():
    pre, fine = make_params(0.1, 3, 0.5, 0.01, lam_prime=float("inf"), T=1, activation="identity")
    assert pre.T == 1 and fine.delta_prime == 0.5 and not fine.adapts
    assert pre.rho0 == 2.0
    with pytest.raises(ValueError, match="^D "):
        check_dimension(1)


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


def test_activations():
    H = jax.random.normal(jax.random.PRNGKey(3), (4, 3, 3))
    P = apply_activation(H, "softmax", 2.0)
    np.testing.assert_allclose(P.sum(-1), 1.0, rtol=1e-12)
    # softmax is invariant to adding a constant to the whole symmetric H
    np.testing.assert_allclose(apply_activation(H + 5.0, "softmax", 2.0), P, rtol=1e-10)
    np.testing.assert_allclose(apply_activation(H, "identity", 2.0), 2.0 / 3 * H)
    with pytest.raises(ValueError, match="activation"):
        apply_activation(H, "gelu")


def test_gaussian_second_moments_of_the_logits():
    """THEORY.md §1: E[H_ab(S)H_ab(S')] = Tr(SS')/D off the diagonal, twice that on it, others 0.

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


def test_labels_noise_conventions():
    H = jnp.zeros((20000, 3, 3))
    Y = noisy_labels(jax.random.PRNGKey(5), H, 0.5, "identity", 3.0, "logits")  # σ = H
    np.testing.assert_allclose(Y, jnp.swapaxes(Y, -1, -2))  # GOE: symmetric
    v = np.asarray(Y).reshape(-1, 9).var(0)
    # diagonal variance 2Δ, off-diagonal Δ; 20 000 samples: relative s.e. ≈ 1%
    np.testing.assert_allclose(v.reshape(3, 3), 0.5 * (1 + np.eye(3)), rtol=0.05)
    Y2 = noisy_labels(jax.random.PRNGKey(5), H, 0.5, "identity", 3.0, "output")
    np.testing.assert_allclose(np.asarray(Y2).reshape(-1, 9).var(0), 0.5, rtol=0.05)
    assert not np.allclose(Y2, jnp.swapaxes(Y2, -1, -2))


def test_labels_from_draw_is_the_one_label_formula():
    """``noisy_labels`` is ``labels_from_draw`` of a standard-normal draw from the same key, the GOE
    symmetrisation is the same on numpy and JAX arrays, and an unknown convention is refused."""
    key = jax.random.PRNGKey(2)
    H = jax.random.normal(jax.random.PRNGKey(3), (50, 3, 3))
    G = jax.random.normal(key, H.shape, H.dtype)
    for noise in ("logits", "output"):
        np.testing.assert_array_equal(noisy_labels(key, H, 0.3, "softmax", 1.0, noise),
                                      labels_from_draw(H, G, 0.3, "softmax", 1.0, noise))
    Gn = np.asarray(G)
    np.testing.assert_allclose(goe_from_square(Gn), goe_from_square(G), rtol=1e-6)
    np.testing.assert_allclose(goe_from_square(Gn, 4.0), goe_from_square(Gn) / 2.0, rtol=1e-12)
    with pytest.raises(ValueError, match="noise"):
        labels_from_draw(H, G, 0.3, "softmax", 1.0, "input")


def test_teacher_moments():
    D = 300
    S0 = sample_teacher(jax.random.PRNGKey(6), D, kappa0=0.5).S0
    ov = matrix_overlaps(S0, S0)
    # Tr(S0²)/D = 1 + κ0 + O(1/D); Tr(S0)/D = √κ0 (up to O(1/D) fluctuations)
    assert abs(ov["rho0"] - 1.5) < 0.05
    assert abs(float(jnp.trace(S0)) / D - math.sqrt(0.5)) < 0.02
    assert ov["mse_S"] == 0.0 and ov["m"] == ov["q"] == ov["rho0"]


def test_vector_overlaps_and_test_error():
    v = jnp.array([1.0, 2.0, 2.0])
    ov = vector_overlaps(-2 * v, v)
    assert ov["alignment"] == pytest.approx(1.0)
    assert vector_overlaps(0 * v, v)["alignment"] == 0.0
    S = jnp.eye(4)
    E, se = test_error(jax.random.PRNGKey(0), S, S, T=3, activation="softmax", n_test=100)
    assert E < 1e-25 and se < 1e-12
