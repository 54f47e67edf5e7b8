"""Pre-training ERM at finite ``D`` (docs/model.md §2).

    Ŝ = argmin_{S ⪰ 0, rank S ≤ κD}  L(S) + λ Tr S,   L(S) = (1/(2D)) Σ_μ ‖Y_μ − σ(H(S; X_μ))‖²_F

Two minimisers:

* :func:`fit_proximal` — the reference: accelerated proximal gradient (FISTA with
  backtracking and adaptive restart). The prox of ``t λ Tr S`` on the PSD cone
  with the rank constraint is the eigenvalue map ``U · top_R(relu(Λ − t λ)) · Uᵀ``
  (:func:`nuclear_prox`).
* :func:`fit_factorized` — what an attention layer really trains: ``W ∈ R^{R×D}``,
  ``S_W = WᵀW/(√κ D)`` with weight decay ``λ/(√κ D)‖W‖²_F`` (= ``λ Tr S_W``),
  optimised by optax L-BFGS from a small random initialisation.

For the identity activation the problem is convex and both reach the global
minimiser; for the softmax they reach a stationary point from a small
initialisation (the one the state evolution describes).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache, partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from solvable_attention.runtime import limit_blas_threads

from .lbfgs import minimize_lbfgs
from .objectives import (chunk_samples, factorized_objective, gradient_from_cotangent, logits_split,
                         loss_and_cotangent, pretrain_loss_and_grad, split_samples)


@dataclass(frozen=True)
class FitInfo:
    """Outcome of one ERM solve.

    Attributes:
        objective: the final objective ``L(Ŝ) + λ Tr Ŝ`` (FISTA) or ``F(W)`` (L-BFGS).
        residual: the stationarity residual: the scaled prox-gradient mapping norm (FISTA) or
            ``‖∇F(W)‖_F`` (L-BFGS).
        iterations: iterations spent.
        converged: whether the residual reached its tolerance.
    """

    objective: float
    residual: float
    iterations: int
    converged: bool


@partial(jax.jit, static_argnames=("rank",))
def nuclear_prox(A, threshold, rank):
    """``argmin_{S ⪰ 0, rank ≤ R} ‖S − A‖²_F/2 + threshold · Tr S`` = ``U top_R(relu(Λ_A − threshold)) Uᵀ``.

    Args:
        A: ``(D, D)`` matrix (symmetrised here).
        threshold: the shrinkage ``t λ ≥ 0``.
        rank: ``R``, the rank cap (static under ``jit``).

    Returns:
        The ``(D, D)`` prox.
    """
    lam, U = jnp.linalg.eigh(0.5 * (A + A.T))
    shrunk = jnp.maximum(lam - threshold, 0.0)
    D = A.shape[0]
    if rank < D:  # eigh sorts ascending: keep the top R
        shrunk = jnp.where(jnp.arange(D) >= D - rank, shrunk, 0.0)
    return (U * shrunk) @ U.T


def student_rank(D: int, kappa: float) -> int:
    """``R = round(κ D)`` capped to ``[1, D]`` (the constraint is inactive for ``R ≥ D``; docs/model.md §2).

    Args:
        D: the embedding dimension.
        kappa: ``κ > 0``, the student width ratio.

    Returns:
        The student rank ``R``.
    """
    return int(min(D, max(1, round(kappa * D))))


# FISTA runs inside one compiled ``lax.while_loop`` (the same code on CPU and GPU, no host round trip
# per iteration); the host only sees it every ``BLOCK`` iterations, to report progress.
BLOCK = 50
# Step doublings at most in one backtracking search (a NaN loss would otherwise never be accepted).
MAX_BACKTRACKS = 60


class _FistaState(NamedTuple):
    S: jax.Array        # current iterate S_k
    H_S: jax.Array      # its logits H(S_k)
    Yk: jax.Array       # extrapolated point Y_k
    H_Y: jax.Array      # its logits (by linearity)
    t: jax.Array        # momentum parameter
    Lip: jax.Array      # inverse step
    F_S: jax.Array      # objective at S_k
    residual: jax.Array
    it: jax.Array
    converged: jax.Array
    failed: jax.Array   # the backtracking search did not find a step (NaN or overflow)


@partial(jax.jit, static_argnames=("activation", "rank"))
def _fista_block(state, Xs, Ys, H0s, lam, beta, scale, tol, it_stop, activation, rank):
    """FISTA iterations from ``state`` until convergence, failure or ``it_stop`` (docs/model.md §2)."""
    D = Xs[0].shape[-1]

    def objective_terms(H):
        return loss_and_cotangent(H, Ys, activation, beta, D)

    def axpy(a, x, y):  # a x + y over tuples of logits
        return tuple(a * xi + yi for xi, yi in zip(x, y))

    def body(s):
        fY, GY = objective_terms(s.H_Y)
        gY = gradient_from_cotangent(GY, Xs)

        def trial(Lip):
            S_new = nuclear_prox(s.Yk - gY / Lip, lam / Lip, rank)
            H_new = logits_split(S_new, Xs)
            if H0s:  # an offset (full fine-tuning); () for pre-training, which then compiles without it
                H_new = tuple(h0 + h for h0, h in zip(H0s, H_new))
            f_new = objective_terms(H_new)[0]
            diff = S_new - s.Yk
            bound = fY + jnp.sum(gY * diff) + 0.5 * Lip * jnp.sum(diff * diff) + 1e-12 * jnp.abs(fY)
            return S_new, H_new, f_new, diff, f_new <= bound

        def bt_cond(b):
            return ~b[5] & (b[6] < MAX_BACKTRACKS)

        def bt_body(b):
            Lip = 2.0 * b[0]
            return (Lip, *trial(Lip), b[6] + 1)

        Lip, S_new, H_new, f_new, diff, ok, _ = jax.lax.while_loop(
            bt_cond, bt_body, (s.Lip, *trial(s.Lip), jnp.asarray(0)))
        residual = Lip * jnp.linalg.norm(diff) / scale
        F_new = f_new + lam * jnp.trace(S_new)
        restart = F_new > s.F_S  # adaptive restart: drop the momentum
        t_next = jnp.where(restart, 1.0, 0.5 * (1 + jnp.sqrt(1 + 4 * s.t * s.t)))
        c = jnp.where(restart, 0.0, (s.t - 1) / t_next)
        return _FistaState(S=S_new, H_S=H_new, Yk=S_new + c * (S_new - s.S), H_Y=axpy(1.0 + c, H_new, tuple(-c * h for h in s.H_S)),
                           t=t_next, Lip=0.9 * Lip, F_S=F_new, residual=residual, it=s.it + 1,
                           converged=residual <= tol, failed=~ok)

    def cond(s):
        return (s.it < it_stop) & ~s.converged & ~s.failed

    return jax.lax.while_loop(cond, body, state)


def fit_proximal(X, Y, *, lam, activation, beta, kappa=1.0, chunk=4096, tol=1e-7, max_iter=5000,
                 S_init=None, progress=None, H_offset=None) -> tuple[jax.Array, FitInfo]:
    """FISTA with backtracking and adaptive (function-value) restart.

    The iteration is one compiled loop (``jax.lax.while_loop``): on CPU and GPU alike nothing returns to
    the host until convergence, except every :data:`BLOCK` iterations when ``progress`` is given. The
    logits of the extrapolated point follow from linearity (``H(Y_k) = H_k + c(H_k − H_{k−1})``) and the
    gradient from the chain rule (:func:`~.objectives.gradient_from_cotangent`), so one iteration costs two
    products of the ``(nT × D)`` inputs with a ``D × D`` matrix and one ``eigh`` (plus one product and one
    ``eigh`` per backtracking step). The eigendecompositions of the prox run in LAPACK with ONE thread: on
    a small machine OpenBLAS threads fight XLA's pool and make ``eigh`` 40–75× slower.

    Stops when the prox-gradient mapping ``G = (Y_k − prox(Y_k − ∇L/L_k))·L_k`` satisfies
    ``‖G‖_F ≤ tol · max(‖∇L(0)‖_F, 1)``: the first-order optimality condition of the composite
    problem, scaled by the gradient at the origin.

    Args:
        X: ``(n, T, D)`` inputs.
        Y: ``(n, T, T)`` labels.
        lam: ``λ ≥ 0``, nuclear-norm strength.
        activation: ``"softmax"`` or ``"identity"``.
        beta: ``β > 0``, inverse temperature.
        kappa: ``κ > 0``, rank constraint ``rank Ŝ ≤ round(κ D)``.
        chunk: samples per batch of the loss (memory only).
        tol: relative tolerance on the prox-gradient mapping.
        max_iter: iterations at most.
        S_init: ``(D, D)`` starting matrix (default zeros).
        progress: optional callback ``progress(iteration, objective, residual)``, called every
            :data:`BLOCK` iterations and at the end.
        H_offset: optional ``(n, T, T)`` logits added to ``H(S; X)`` (full fine-tuning of an update ``S = Δ``
            on top of frozen logits ``Ĥ``; docs/model.md §6). Default none.

    Returns:
        ``(Ŝ, info)``: the ``(D, D)`` minimiser and its :class:`FitInfo` (``converged`` false also when
        a backtracking search found no step: a non-finite loss).
    """
    with limit_blas_threads(1):
        return _fista(X, Y, lam, activation, beta, kappa, chunk, tol, max_iter, S_init, progress, H_offset)


def _fista(X, Y, lam, activation, beta, kappa, chunk, tol, max_iter, S_init, progress, H_offset=None):
    D = X.shape[-1]
    R = student_rank(D, kappa)
    Xs, Ys = split_samples(X, Y, chunk)
    dtype = X.dtype
    H0s = () if H_offset is None else split_samples(X, H_offset, chunk)[1]
    shifted = lambda Hs: tuple(h0 + h for h0, h in zip(H0s, Hs)) if H0s else Hs  # noqa: E731
    _, G0 = loss_and_cotangent(shifted(logits_split(jnp.zeros((D, D), dtype), Xs)), Ys, activation, beta, D)
    scale = max(float(jnp.linalg.norm(gradient_from_cotangent(G0, Xs))), 1.0)
    S = jnp.zeros((D, D), dtype) if S_init is None else jnp.asarray(S_init, dtype)
    H = shifted(logits_split(S, Xs))
    F_S = loss_and_cotangent(H, Ys, activation, beta, D)[0] + lam * jnp.trace(S)
    scalar = lambda v: jnp.asarray(v, dtype)  # noqa: E731
    state = _FistaState(S=S, H_S=H, Yk=S, H_Y=H, t=scalar(1.0), Lip=scalar(1.0), F_S=F_S,
                        residual=scalar(np.inf), it=jnp.asarray(0), converged=jnp.asarray(False),
                        failed=jnp.asarray(False))
    args = (Xs, Ys, H0s, scalar(lam), scalar(beta), scalar(scale), scalar(tol))
    block = BLOCK if progress is not None else max_iter
    while True:
        stop = min(int(state.it) + block, max_iter)
        state = _fista_block(state, *args, jnp.asarray(stop), activation, R)
        it, done = int(state.it), bool(state.converged) or bool(state.failed)
        if progress is not None:
            progress(it, float(state.F_S), float(state.residual))
        if done or it >= max_iter:
            break
    return state.S, FitInfo(objective=float(state.F_S), residual=float(state.residual), iterations=int(state.it),
                            converged=bool(state.converged))


def prox_gradient_residual(S, X, Y, *, lam, activation, beta, kappa=1.0, step=None, chunk=4096) -> float:
    """``‖S − prox_{tλTr}(S − t∇L(S))‖_F / t`` — zero exactly at a stationary point of ``L + λ Tr``.

    Args:
        S: ``(D, D)`` the point to test.
        X: ``(n, T, D)`` inputs.
        Y: ``(n, T, T)`` labels.
        lam: ``λ ≥ 0``.
        activation: ``"softmax"`` or ``"identity"``.
        beta: ``β > 0``.
        kappa: ``κ > 0``, rank constraint of the prox.
        step: ``t`` (default ``1e-2``).
        chunk: samples per batch (memory only).

    Returns:
        The residual (same units as ``∇L``).
    """
    D = X.shape[-1]
    Xc, Yc, wc = chunk_samples(X, Y, chunk)
    _, g = pretrain_loss_and_grad(S, Xc, Yc, wc, activation, beta)
    t = 1e-2 if step is None else step
    S_plus = nuclear_prox(S - t * g, t * lam, student_rank(D, kappa))
    return float(jnp.linalg.norm(S - S_plus) / t)


def relative_stationarity(S, X, Y, *, lam, activation, beta, kappa=1.0, chunk=4096) -> float:
    """The prox-gradient residual of :func:`prox_gradient_residual` relative to ``max(‖∇L(0)‖_F, 1)``: the
    quantity FISTA's stopping rule bounds (:func:`fit_proximal`), so that any ``S`` — e.g. the factorised
    solution ``WᵀW/(√κD)`` — can be certified stationary for the problem in ``S`` on the same scale.

    Args:
        S: ``(D, D)`` the point to test.
        X: ``(n, T, D)`` inputs.
        Y: ``(n, T, T)`` labels.
        lam: ``λ ≥ 0``.
        activation: ``"softmax"`` or ``"identity"``.
        beta: ``β > 0``.
        kappa: ``κ > 0``.
        chunk: samples per batch (memory only).

    Returns:
        The relative residual (0 exactly at a stationary point of ``L + λ Tr`` on the PSD cone).
    """
    Xc, Yc, wc = chunk_samples(X, Y, chunk)
    _, g0 = pretrain_loss_and_grad(jnp.zeros_like(S), Xc, Yc, wc, activation, beta)
    scale = max(float(jnp.linalg.norm(g0)), 1.0)
    return prox_gradient_residual(S, X, Y, lam=lam, activation=activation, beta=beta, kappa=kappa,
                                  chunk=chunk) / scale


@lru_cache(maxsize=None)
def _factorized_fun(activation: str):
    """``F(W)`` as ``fun(W, args)`` for :func:`minimize_lbfgs` (one stable function per activation)."""
    def fun(W, args):
        Xc, Yc, wc, beta, lam, kappa = args
        return factorized_objective(W, Xc, Yc, wc, activation, beta, lam, kappa)
    return fun


def fit_factorized(X, Y, key, *, lam, activation, beta, kappa=1.0, chunk=4096, init_scale=1e-2,
                   gtol=1e-8, max_iter=5000) -> tuple[jax.Array, jax.Array, FitInfo]:
    """Train ``W`` (``R × D``) with optax L-BFGS on ``F(W)``; returns ``(S_W, W, info)``.

    Initialisation ``W ~ init_scale · N(0, 1)`` (small: ``W = 0`` is a saddle point).
    Runs until ``‖∇F‖_F ≤ (gtol/10) · max(|F|, 1)`` (or the line search stalls); reports
    ``converged`` when ``‖∇F‖_F ≤ gtol · max(|F|, 1)``.

    Args:
        X: ``(n, T, D)`` inputs.
        Y: ``(n, T, T)`` labels.
        key: ``jax.random`` key of the initialisation.
        lam: ``λ ≥ 0``; the weight decay is ``λ/(√κ D) ‖W‖²_F``.
        activation: ``"softmax"`` or ``"identity"``.
        beta: ``β > 0``.
        kappa: ``κ > 0``; ``W`` has ``R = round(κ D)`` rows.
        chunk: samples per batch (memory only).
        init_scale: standard deviation of the initial ``W``.
        gtol: relative gradient tolerance.
        max_iter: L-BFGS iterations at most.

    Returns:
        ``(S_W, W, info)``: ``S_W = WᵀW/(√κ D)`` ``(D, D)``, ``W`` ``(R, D)``, and the :class:`FitInfo`.
    """
    D = X.shape[-1]
    R = student_rank(D, kappa)
    Xc, Yc, wc = chunk_samples(X, Y, chunk)
    W0 = init_scale * jax.random.normal(key, (R, D), X.dtype)
    args = (Xc, Yc, wc, beta, lam, kappa)
    W, value, gnorm, it = minimize_lbfgs(_factorized_fun(activation), W0, args, max_iter, gtol / 10)
    converged = bool(float(gnorm) <= gtol * max(abs(float(value)), 1.0))
    S = W.T @ W / (np.sqrt(kappa) * D)
    return S, W, FitInfo(objective=float(value), residual=float(gnorm), iterations=int(it),
                         converged=converged)
