"""The closed-form loss derivatives of state_evolution/loss_derivatives.py against automatic
differentiation of the plain per-sample loss."""

import jax
import numpy as np
import pytest

from state_evolution.channel_monte_carlo import per_sample_loss
from state_evolution.loss_derivatives import loss_derivatives


@pytest.mark.parametrize("activation", ["softmax", "identity"])
def test_closed_form_loss_derivatives_match_autodiff(activation):
    k1, k2 = jax.random.split(jax.random.PRNGKey(1))
    h = jax.random.normal(k1, (50, 6))
    Y = jax.nn.softmax(jax.random.normal(k2, (50, 3, 3)), -1) + 0.2
    f = lambda hh, yy: per_sample_loss(hh, yy, 3, activation, 1.7)  # noqa: E731
    g, H = loss_derivatives(h, Y, 3, activation, 1.7)
    np.testing.assert_allclose(g, jax.vmap(jax.grad(f))(h, Y), atol=1e-12)
    np.testing.assert_allclose(H, jax.vmap(jax.hessian(f))(h, Y), atol=1e-12)
