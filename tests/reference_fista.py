"""A plain FISTA for the pre-training ERM (host loop, autodiff gradient, three products per iteration):
the slow reference against which the compiled solver of simulations/simulator/pretraining_fit.py is
tested. Same algorithm (backtracking from ``L_k = 0.9 L_{k−1}``, adaptive restart on an objective
increase, the same stopping rule), written as directly as possible."""

import jax.numpy as jnp
import numpy as np

from simulations.simulator.objectives import chunk_samples, pretrain_loss, pretrain_loss_and_grad
from simulations.simulator.pretraining_fit import nuclear_prox, student_rank


def reference_fista(X, Y, *, lam, activation, beta, kappa=1.0, tol=1e-7, max_iter=5000):
    """``(S, objective, residual, iterations)`` of FISTA on ``L(S) + λ Tr S`` over the PSD cone."""
    D = X.shape[-1]
    R = student_rank(D, kappa)
    Xc, Yc, wc = chunk_samples(X, Y, 4096)
    loss = lambda S: float(pretrain_loss(S, Xc, Yc, wc, activation, beta))  # noqa: E731
    loss_grad = lambda S: pretrain_loss_and_grad(S, Xc, Yc, wc, activation, beta)  # noqa: E731
    scale = max(float(jnp.linalg.norm(loss_grad(jnp.zeros((D, D)))[1])), 1.0)
    S = jnp.zeros((D, D))
    Yk, t, Lip = S, 1.0, 1.0
    F_S = loss(S)
    residual, it = np.inf, 0
    for it in range(1, max_iter + 1):
        fY, gY = loss_grad(Yk)
        fY = float(fY)
        while True:
            S_new = nuclear_prox(Yk - gY / Lip, lam / Lip, R)
            diff = S_new - Yk
            f_new = loss(S_new)
            if f_new <= fY + float(jnp.sum(gY * diff)) + 0.5 * Lip * float(jnp.sum(diff * diff)) + 1e-12 * abs(fY):
                break
            Lip *= 2.0
        residual = Lip * float(jnp.linalg.norm(diff)) / scale
        F_new = f_new + lam * float(jnp.trace(S_new))
        if F_new > F_S:
            t_next, Yk_next = 1.0, S_new
        else:
            t_next = 0.5 * (1 + np.sqrt(1 + 4 * t * t))
            Yk_next = S_new + ((t - 1) / t_next) * (S_new - S)
        S, F_S, t, Yk = S_new, F_new, t_next, Yk_next
        Lip *= 0.9
        if residual <= tol:
            break
    return S, F_S, residual, it
