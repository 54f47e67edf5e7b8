"""Fine-tuning beyond rank one (simulations/simulator/finetune_fit.py): rank-r LoRA, full nuclear and full
ridge fine-tuning, each against an independent computation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from simulator_helpers import problem

from simulations.simulator.finetune_fit import (fit_full_nuclear, fit_full_ridge, fit_lora_rank,
                                                lora_rank_logits)
from simulations.simulator.lora_fit import fit_lora
from solvable_attention.attention import attention_logits
from solvable_attention.data import sample_inputs, sample_labels, sample_teacher
from solvable_attention.metrics import lora_order_parameters, update_metrics, vector_overlaps


def _finetune_problem(D=10, alpha_prime=6.0, activation="identity", shift_rank=2, seed=0):
    """Frozen ``Ŝ = S0/2``, a rank-``r*`` shift, ``n' = α'D`` fresh inputs and their labels."""
    k = jax.random.split(jax.random.PRNGKey(seed), 3)
    teacher = sample_teacher(k[0], D, shift_rank=shift_rank)
    X = sample_inputs(k[1], int(alpha_prime * D), 3, D)
    Y = sample_labels(k[2], teacher.S1, X, 0.1, activation, 1.0, "logits")
    H_hat = attention_logits(0.5 * teacher.S0, X)
    return teacher, X, Y, H_hat


def test_teacher_of_rank_one_is_todays_teacher_and_the_first_column_is_shared():
    key = jax.random.PRNGKey(3)
    t1, t3 = sample_teacher(key, 12), sample_teacher(key, 12, shift_rank=3)
    assert t1.shift_rank == 1 and t3.shift_rank == 3 and t3.V.shape == (12, 3)
    np.testing.assert_array_equal(t1.v, t3.v)
    np.testing.assert_array_equal(t1.S0, t3.S0)
    V = t3.V
    np.testing.assert_allclose(t3.S1, t3.S0 + V @ V.T / np.sqrt(12), rtol=1e-13, atol=1e-13)


def test_rank_r_logits_are_the_attention_map_of_the_updated_matrix():
    teacher, X, _, H_hat = _finetune_problem()
    U = jax.random.normal(jax.random.PRNGKey(1), (10, 3))
    np.testing.assert_allclose(lora_rank_logits(H_hat, X, U),
                               attention_logits(0.5 * teacher.S0 + U @ U.T / np.sqrt(10), X), rtol=1e-11, atol=1e-11)


def test_rank_one_fit_agrees_with_the_rank_one_lora_fit():
    """Two implementations of the same rank-one problem (vector u vs a D×1 matrix U): same objective to 1e-8."""
    _, X, Y, H_hat = _finetune_problem(activation="softmax", shift_rank=1)
    key = jax.random.PRNGKey(5)
    a = fit_lora(H_hat, X, Y, key, lam_prime=0.5, activation="softmax", beta=1.0)
    b = fit_lora_rank(H_hat, X, Y, key, rank=1, lam_prime=0.5, activation="softmax", beta=1.0)
    assert a.converged and b.converged
    assert b.objective == pytest.approx(a.objective, rel=1e-8)


def test_rank_r_lora_reaches_the_full_nuclear_objective_when_r_exceeds_the_rank():
    """Identity activation: the nuclear problem over Δ ⪰ 0 is convex and LoRA of rank r ≥ rank(Δ̂) has the same
    minimum (‖U‖²_F = √D Tr UUᵀ/√D, docs/model.md §6). Tolerance 1e-6 relative: both solvers stop at
    residuals ~1e-8."""
    D = 10
    _, X, Y, H_hat = _finetune_problem(D=D)
    nuc = fit_full_nuclear(H_hat, X, Y, lam_prime=2.0, activation="identity", beta=1.0, tol=1e-10)
    rank = update_metrics(nuc.Delta, jnp.eye(D)[:, :1])["update_rank"]
    assert nuc.converged and 1 <= rank < D
    lora = fit_lora_rank(H_hat, X, Y, jax.random.PRNGKey(2), rank=rank + 1, lam_prime=2.0, activation="identity",
                         beta=1.0)
    assert lora.converged
    assert lora.objective == pytest.approx(nuc.objective, rel=1e-6)
    np.testing.assert_allclose(lora.Delta, nuc.Delta, atol=1e-4 * float(jnp.abs(nuc.Delta).max()))
    # a rank below rank(Δ̂) cannot do as well
    small = fit_lora_rank(H_hat, X, Y, jax.random.PRNGKey(2), rank=max(1, rank - 1), lam_prime=2.0,
                          activation="identity", beta=1.0)
    if rank > 1:
        assert small.objective > nuc.objective * (1 + 1e-6)


def test_full_ridge_solves_the_normal_equations_for_the_identity():
    """Identity activation: the ridge problem is least squares in the D(D+1)/2 coordinates of a symmetric Δ in
    an orthonormal basis; numpy's solve of its normal equations is the oracle (tolerance 1e-6 relative:
    L-BFGS stops at a relative gradient of 1e-9)."""
    D, beta, lam_F = 6, 1.0, 0.7
    _, X, Y, H_hat = _finetune_problem(D=D, alpha_prime=4.0)
    T = X.shape[-2]
    basis = []
    for i in range(D):
        for j in range(i, D):
            E = np.zeros((D, D))
            E[i, j] = E[j, i] = 1.0 if i == j else 1 / np.sqrt(2)
            basis.append(E)
    A = np.stack([np.asarray(beta / T * attention_logits(jnp.asarray(E), X)).ravel() for E in basis], axis=1)
    b = np.asarray(Y - beta / T * H_hat).ravel()
    theta = np.linalg.solve(A.T @ A + lam_F * np.eye(len(basis)), A.T @ b)
    Delta_ref = sum(t * E for t, E in zip(theta, basis))
    fit = fit_full_ridge(H_hat, X, Y, lam_prime=lam_F, activation="identity", beta=beta, gtol=1e-10)
    assert fit.converged
    np.testing.assert_allclose(fit.Delta, Delta_ref, rtol=1e-6, atol=1e-6 * np.abs(Delta_ref).max())


def test_metrics_are_rotation_invariant_and_reduce_to_rank_one():
    D = 40
    key = jax.random.PRNGKey(0)
    U = jax.random.normal(key, (D, 3))
    V = jax.random.normal(jax.random.fold_in(key, 1), (D, 2))
    O, _ = jnp.linalg.qr(jax.random.normal(jax.random.fold_in(key, 2), (3, 3)))
    a, b = lora_order_parameters(U, V), lora_order_parameters(U @ O, V)
    np.testing.assert_allclose(a["MtM"], b["MtM"], rtol=1e-12)
    np.testing.assert_allclose(a["Q_eigenvalues"], b["Q_eigenvalues"], rtol=1e-12)
    ua = update_metrics(U @ U.T / np.sqrt(D), V)
    ub = update_metrics((U @ O) @ (U @ O).T / np.sqrt(D), V)
    assert ua["update_alignment"] == pytest.approx(ub["update_alignment"], rel=1e-12)
    assert ua["update_rank"] == ub["update_rank"] == 3
    # the LoRA formula of the alignment, ‖M'‖²_F/(‖Q'‖_F ‖ρ_V‖_F)
    M, Q, rho = U.T @ V / D, U.T @ U / D, V.T @ V / D
    assert ua["update_alignment"] == pytest.approx(float(jnp.sum(M * M) / (jnp.linalg.norm(Q) * jnp.linalg.norm(rho))),
                                                   rel=1e-12)
    # r = r* = 1: the square of the rank-one alignment
    u, v = U[:, 0], V[:, 0]
    one = update_metrics(jnp.outer(u, u) / np.sqrt(D), v[:, None])
    assert one["update_alignment"] == pytest.approx(vector_overlaps(u, v)["alignment"] ** 2, rel=1e-12)
