"""The objectives of simulations/simulator/objectives.py: the pre-training loss and the LoRA objective
against finite differences, chunking with padding, and the sign invariance u → −u."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from simulator_helpers import problem

from simulations.simulator.objectives import (chunk_samples, gradient_from_cotangent, logits_split, lora_objective,
                                              loss_and_cotangent, pretrain_loss, pretrain_loss_and_grad, split_samples)
from solvable_attention.attention import attention_logits


@pytest.mark.parametrize("activation", ["softmax", "identity"])
def test_pretrain_gradient_matches_finite_differences(activation):
    teacher, X, Y = problem(activation=activation)
    Xc, Yc, wc = chunk_samples(X, Y, 37)  # chunking with padding must not change anything
    A = jax.random.normal(jax.random.PRNGKey(9), teacher.S0.shape)
    E = (A + A.T) / 2
    S = 0.3 * teacher.S0
    val, g = pretrain_loss_and_grad(S, Xc, Yc, wc, activation, 1.0)
    assert float(val) == pytest.approx(float(pretrain_loss(S, *chunk_samples(X, Y, 4096), activation, 1.0)),
                                       rel=1e-12)
    eps = 1e-6
    fd = (pretrain_loss(S + eps * E, Xc, Yc, wc, activation, 1.0)
          - pretrain_loss(S - eps * E, Xc, Yc, wc, activation, 1.0)) / (2 * eps)
    # central differences: error O(eps²) ~ 1e-12 relative, round-off ~1e-9
    assert float(jnp.sum(g * E)) == pytest.approx(float(fd), rel=1e-6)
    np.testing.assert_allclose(g, g.T, atol=1e-14)


def test_lora_gradient_matches_finite_differences():
    teacher, X, Y = problem(D=12, alpha=2.0)
    H_hat = attention_logits(0.5 * teacher.S0, X)
    u = jax.random.normal(jax.random.PRNGKey(1), (12,))
    d = jax.random.normal(jax.random.PRNGKey(2), (12,))
    f = lambda uu, c: lora_objective((uu, c), H_hat, X, Y, "softmax", 1.0, 0.3)  # noqa: E731
    gu, gc = jax.grad(lambda p: f(*p))((u, 1.1))
    eps = 1e-6
    assert float(gu @ d) == pytest.approx(float((f(u + eps * d, 1.1) - f(u - eps * d, 1.1)) / (2 * eps)), rel=1e-6)
    assert float(gc) == pytest.approx(float((f(u, 1.1 + eps) - f(u, 1.1 - eps)) / (2 * eps)), rel=1e-6)
    # u → −u leaves the objective unchanged (S(u) depends on u uᵀ)
    assert float(f(-u, 1.1)) == pytest.approx(float(f(u, 1.1)), rel=1e-14)


@pytest.mark.parametrize("activation", ["softmax", "identity"])
def test_logits_path_matches_autodiff_of_the_loss(activation):
    """The FISTA path (logits → cotangent → chain-rule gradient, pieces of unequal size) against
    autodiff through ``X S Xᵀ`` (an independent computation). Tolerance 1e-12 relative: the same
    sums in another order, so only round-off separates them."""
    teacher, X, Y = problem(activation=activation)
    S = 0.3 * teacher.S0 + 0.01 * jnp.eye(teacher.S0.shape[0])
    Xs, Ys = split_samples(X, Y, 37)  # 102 samples → pieces of 37, 37, 28
    assert [x.shape[0] for x in Xs] == [37, 37, 28]
    Hs = logits_split(S, Xs)
    np.testing.assert_allclose(np.concatenate(Hs), attention_logits(S, X), rtol=1e-12, atol=1e-12)
    val, Gs = loss_and_cotangent(Hs, Ys, activation, 1.0, S.shape[0])
    g = gradient_from_cotangent(Gs, Xs)
    val_ref, g_ref = pretrain_loss_and_grad(S, *chunk_samples(X, Y, 4096), activation, 1.0)
    assert float(val) == pytest.approx(float(val_ref), rel=1e-12)
    np.testing.assert_allclose(g, g_ref, rtol=1e-10, atol=1e-12 * float(jnp.abs(g_ref).max()))
