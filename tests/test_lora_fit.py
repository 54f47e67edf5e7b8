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


def test_a_start_at_the_saddle_is_refused():
    """u = 0 is an exact critical point of the LoRA objective (its gradient vanishes there), so L-BFGS started
    there would stop at once and call it converged: init_scale = 0 is refused."""
    teacher, X, Y = problem(D=12, alpha=0.3)
    H_hat = attention_logits(teacher.S0, X)
    with pytest.raises(ValueError, match="init_scale must be > 0"):
        fit_lora(H_hat, X, Y, jax.random.PRNGKey(0), lam_prime=1.0, activation="softmax", beta=1.0, init_scale=0.0)
