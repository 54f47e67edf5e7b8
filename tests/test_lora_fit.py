"""The LoRA fit of simulations/simulator/lora_fit.py: the infinite ridge gives û = 0, and recalibration
with it is rejected."""

import jax
import jax.numpy as jnp
import pytest
from simulator_helpers import problem

from simulations.simulator.lora_fit import fit_lora
from solvable_attention.attention import attention_logits


def test_lora_sign_invariance_and_infinite_ridge():
    teacher, X, Y = problem(D=16, alpha=3.0 / 16)
    H_hat = attention_logits(0.5 * teacher.S0, X)
    fit = fit_lora(H_hat, X, Y, jax.random.PRNGKey(0), lam_prime=float("inf"), activation="softmax", beta=1.0)
    assert float(jnp.abs(fit.u).max()) == 0.0 and fit.converged
    with pytest.raises(ValueError, match="lam_prime"):
        fit_lora(H_hat, X, Y, jax.random.PRNGKey(0), lam_prime=float("inf"), activation="softmax", beta=1.0,
                 recalibrate=True)
