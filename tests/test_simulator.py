"""The finite-D simulator: objectives' gradients, optimality of the minimisers, invariances."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from simulations import simulate
from simulations.simulator.lora_fit import fit_lora
from simulations.simulator.objectives import (chunk_samples, lora_objective, pretrain_loss, pretrain_loss_and_grad)
from simulations.simulator.pretraining_fit import fit_factorized, fit_proximal, prox_gradient_residual
from solvable_attention.attention import attention_logits
from solvable_attention.data import sample_inputs, sample_labels, sample_teacher


def _problem(D=16, alpha=0.4, T=3, activation="softmax", delta=0.5, seed=0):
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
    teacher = sample_teacher(k1, D)
    X = sample_inputs(k2, int(round(alpha * D * D)), T, D)
    Y = sample_labels(k3, teacher.S0, X, delta, activation, 1.0, "logits")
    return teacher, X, Y


@pytest.mark.parametrize("activation", ["softmax", "identity"])
def test_pretrain_gradient_matches_finite_differences(activation):
    teacher, X, Y = _problem(activation=activation)
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
    teacher, X, Y = _problem(D=12, alpha=2.0)
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


@pytest.mark.parametrize("activation,kappa", [("identity", 1.0), ("softmax", 1.0), ("identity", 0.5)])
def test_proximal_solution_is_stationary_and_satisfies_kkt(activation, kappa):
    teacher, X, Y = _problem(D=20, activation=activation)
    lam = 0.05
    # κ < 1 adds a non-convex rank constraint: FISTA reaches a stationary point more slowly
    tol = 1e-9 if kappa == 1 else 1e-6
    S, info = fit_proximal(X, Y, lam=lam, activation=activation, beta=1.0, kappa=kappa, tol=tol)
    assert info.converged
    assert prox_gradient_residual(S, X, Y, lam=lam, activation=activation, beta=1.0, kappa=kappa) < 1e-5
    if kappa < 1:
        assert np.sum(np.linalg.eigvalsh(np.asarray(S)) > 1e-9) <= round(kappa * 20)
        return
    # KKT of min L(S) + λ Tr S over S ⪰ 0: G = ∇L(Ŝ) + λI ⪰ 0 and Ŝ G = 0
    _, g = pretrain_loss_and_grad(S, *chunk_samples(X, Y, 4096), activation, 1.0)
    G = np.asarray(g) + lam * np.eye(20)
    assert np.linalg.eigvalsh(G).min() > -1e-7
    assert np.abs(np.asarray(S) @ G).max() < 1e-7


@pytest.mark.parametrize("activation", ["identity", "softmax"])
def test_proximal_and_factorized_reach_the_same_minimiser(activation):
    teacher, X, Y = _problem(D=24, alpha=0.3, activation=activation)
    lam = 0.05
    S1, info1 = fit_proximal(X, Y, lam=lam, activation=activation, beta=1.0, tol=1e-9)
    S2, _, info2 = fit_factorized(X, Y, jax.random.PRNGKey(3), lam=lam, activation=activation, beta=1.0)
    # same objective to 1e-8 relative; same matrix to 1e-4 (flat directions are weak at small D)
    assert info2.objective == pytest.approx(info1.objective, rel=1e-8)
    assert float(jnp.linalg.norm(S1 - S2) / jnp.linalg.norm(S1)) < 1e-4


def test_lora_sign_invariance_and_infinite_ridge():
    teacher, X, Y = _problem(D=16, alpha=3.0 / 16)
    H_hat = attention_logits(0.5 * teacher.S0, X)
    fit = fit_lora(H_hat, X, Y, jax.random.PRNGKey(0), lam_prime=float("inf"), activation="softmax", beta=1.0)
    assert float(jnp.abs(fit.u).max()) == 0.0 and fit.converged
    with pytest.raises(ValueError, match="lam_prime"):
        fit_lora(H_hat, X, Y, jax.random.PRNGKey(0), lam_prime=float("inf"), activation="softmax", beta=1.0,
                 recalibrate=True)


def test_simulate_is_deterministic_and_consistent():
    kw = dict(D=20, alpha=0.2, alpha_prime=3.0, delta=0.5, lam=0.05, activation="identity", n_test=2000)
    a, b = simulate(**kw, seed=3), simulate(**kw, seed=3)
    da, db = a.to_dict(), b.to_dict()
    da.pop("timings"), db.pop("timings")
    assert da == db
    c = simulate(**kw, seed=4)
    assert c.pretrain.m != a.pretrain.m
    p = a.pretrain
    assert p.mse_S == pytest.approx(p.rho0 - 2 * p.m + p.q, rel=1e-10)
    assert a.finetune.converged and a.pretrain.converged
    # E' and E'_0 use the same test inputs; fine-tuning on S1's data should help here
    assert a.finetune.test_error < a.finetune.test_error_baseline


def test_infinite_lam_prime_gives_baseline_exactly():
    r = simulate(16, 0.2, 3.0, 0.5, 0.05, lam_prime=float("inf"), activation="softmax", n_test=1000)
    assert r.finetune.q == 0.0 and r.finetune.m == 0.0
    assert r.finetune.test_error == r.finetune.test_error_baseline
    assert math.isnan(r.finetune.train_loss)  # nothing is fitted


def test_recalibration_and_reuse_run():
    r = simulate(16, 0.2, 3.0, 0.5, 0.05, activation="softmax", n_test=1000, recalibrate=True, reuse=True)
    assert r.finetune.c != 1.0 and r.finetune.converged
    assert math.isfinite(r.finetune.train_loss) and r.finetune.train_loss >= 0


@pytest.mark.parametrize("kw,name", [(dict(method="adam"), "method"), (dict(n_test=0), "n_test"),
                                     (dict(D=1), "D"), (dict(activation="tanh"), "activation")])
def test_simulate_rejects_bad_input(kw, name):
    args = dict(D=10, alpha=0.1, alpha_prime=3, delta=0.5, lam=0.1) | kw
    with pytest.raises(ValueError, match=name):
        simulate(**args)
