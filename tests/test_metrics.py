"""The metrics of solvable_attention/metrics.py (docs/model.md §4): vector overlaps and the test error."""

import jax
import jax.numpy as jnp
import pytest

from solvable_attention.metrics import test_error, vector_overlaps


def test_vector_overlaps_and_test_error():
    v = jnp.array([1.0, 2.0, 2.0])
    ov = vector_overlaps(-2 * v, v)
    assert ov["alignment"] == pytest.approx(1.0)
    assert vector_overlaps(0 * v, v)["alignment"] == 0.0
    S = jnp.eye(4)
    E, se = test_error(jax.random.PRNGKey(0), S, S, T=3, activation="softmax", n_test=100)
    assert E < 1e-25 and se < 1e-12
