"""The GOE coordinates of state_evolution/goe_coordinates.py (docs/theory.md §1): the round trip between a
symmetric ``T×T`` matrix and its ``K = T(T+1)/2`` coordinates, and the metric they carry."""

import jax
import jax.numpy as jnp
import numpy as np

from state_evolution.goe_coordinates import from_coordinates, to_coordinates


def test_goe_coordinates_round_trip_and_metric():
    H = jax.random.normal(jax.random.PRNGKey(0), (5, 4, 4))
    H = H + jnp.swapaxes(H, -1, -2)
    h = to_coordinates(H)
    np.testing.assert_allclose(from_coordinates(h, 4), H, atol=1e-14)
    np.testing.assert_allclose(jnp.sum(H * H, axis=(-1, -2)), 2 * jnp.sum(h * h, -1), rtol=1e-13)
