"""The activations of solvable_attention/activations.py (docs/model.md §1): row softmax and identity."""

import jax
import numpy as np
import pytest

from solvable_attention.activations import apply_activation


def test_activations():
    H = jax.random.normal(jax.random.PRNGKey(3), (4, 3, 3))
    P = apply_activation(H, "softmax", 2.0)
    np.testing.assert_allclose(P.sum(-1), 1.0, rtol=1e-12)
    # softmax is invariant to adding a constant to the whole symmetric H
    np.testing.assert_allclose(apply_activation(H + 5.0, "softmax", 2.0), P, rtol=1e-10)
    np.testing.assert_allclose(apply_activation(H, "identity", 2.0), 2.0 / 3 * H)
    with pytest.raises(ValueError, match="activation"):
        apply_activation(H, "gelu")
