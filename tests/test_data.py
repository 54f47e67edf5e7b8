"""Teachers and labels of solvable_attention/data.py (docs/model.md §2): the teacher's moments and the
label-noise conventions."""

import math

import jax
import jax.numpy as jnp
import numpy as np

from solvable_attention.data import noisy_labels, sample_teacher
from solvable_attention.metrics import matrix_overlaps


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


def test_teacher_moments():
    D = 300
    S0 = sample_teacher(jax.random.PRNGKey(6), D, kappa0=0.5).S0
    ov = matrix_overlaps(S0, S0)
    # Tr(S0²)/D = 1 + κ0 + O(1/D); Tr(S0)/D = √κ0 (up to O(1/D) fluctuations)
    assert abs(ov["rho0"] - 1.5) < 0.05
    assert abs(float(jnp.trace(S0)) / D - math.sqrt(0.5)) < 0.02
    assert ov["mse_S"] == 0.0 and ov["m"] == ov["q"] == ov["rho0"]
