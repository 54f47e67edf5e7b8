"""Batched proximal maps by a safeguarded Newton method (shared by all sampled channels).

For each sample, the prox ``h* = argmin_h ‖h − ω‖²/(2V) + ℓ(h)`` is written ``h* = ω + V g*`` with

    g* + ∇ℓ(ω + V g*) = 0,

a parametrisation that stays well conditioned as ``V → 0`` (then ``g* = −∇ℓ(ω)``). Newton steps
use ``J = I + V ∇²ℓ``: pure Newton where ``J`` is positive definite (Cholesky succeeds), else ``J``
shifted by a Gershgorin bound (then symmetric diagonally dominant, hence positive definite); the step length is the longest of ``{1, ¼, …, 4⁻¹⁰, 0}`` that does
not increase the merit ``V‖g‖²/2 + ℓ(ω + Vg)`` beyond round-off. The loop stops when every
sample's residual ``|g + ∇ℓ|`` is below ``tol`` (or after ``max_newton`` steps).

For a non-convex loss (softmax) the prox may have several local minima, and the state evolution
needs the global one (the Moreau envelope is a minimum over ``h``). :func:`solve_prox_multistart`
therefore runs Newton from a few deterministic starts (e.g. ``h = ω`` and the zero-loss point of the label)
and keeps, per sample, the lowest merit: the channel is then a *function* of the overlaps, never of
the history of the solver (a warm start from the previous evaluation made it history dependent).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .small_linalg import cholesky, spd_solve

_MAX_HALVINGS = 11  # step lengths 1, 1/4, …, 4⁻¹⁰


def prox_objective(omega, V, g, loss):
    """The prox objective in the variable ``g`` (``h = ω + Vg``), divided by ``V``:
    ``V‖g‖²/2 + ℓ(ω + Vg)`` per sample (the merit of the line search and of the multistart choice)."""
    return 0.5 * V * jnp.sum(g * g, axis=-1) + loss(omega + V * g)


def _newton(omega, V, g_init, loss, derivs, max_newton, tol):
    """The safeguarded Newton iterations from ``g_init``; returns ``(g, iterations)``."""
    K = omega.shape[-1]
    eye = jnp.eye(K, dtype=omega.dtype)

    def merit(g):
        return prox_objective(omega, V, g, loss)

    def newton(carry):
        g, k, _ = carry
        grad, hess = derivs(omega + V * g)
        F = g + grad
        J = eye + V * hess
        _, pd = cholesky(J)
        diag = jnp.diagonal(J, axis1=-2, axis2=-1)
        low = jnp.min(diag - (jnp.sum(jnp.abs(J), axis=-1) - jnp.abs(diag)), axis=-1)
        shift = jnp.where(pd, 0.0, jnp.maximum(0.0, 1e-2 - low))
        step = -spd_solve(J + shift[:, None, None] * eye, F)
        return backtrack(g, step), k + 1, jnp.max(jnp.abs(F))

    def backtrack(g, step):
        """Per sample the longest ``t ∈ {1, ¼, …, 4⁻¹⁰}`` with merit(g + t·step) ≤ merit(g) (up to
        round-off), else ``t = 0``; batched by a while loop that only goes on while some sample fails."""
        m0 = merit(g)
        slack = 1e-13 * (jnp.abs(m0) + 1.0)

        def body(c):
            t, done, _ = c
            ok = merit(g + t[:, None] * step) <= m0 + slack
            done_now = done | ok
            return jnp.where(done_now, t, t * 0.25), done_now, c[2] + 1

        def more(c):
            return (~jnp.all(c[1])) & (c[2] < _MAX_HALVINGS)

        t, done, _ = jax.lax.while_loop(more, body, (jnp.ones_like(m0), jnp.zeros(m0.shape, bool), 0))
        return g + jnp.where(done, t, 0.0)[:, None] * step

    def not_done(carry):
        _, k, err = carry
        return (k < max_newton) & (err > tol)

    g, k, _ = jax.lax.while_loop(not_done, newton, (g_init, 0, jnp.asarray(jnp.inf, omega.dtype)))
    return g, k


def solve_prox_multistart(omega, V, starts, loss, derivs, max_newton, tol=1e-11):
    """Solve the batched prox by Newton from each ``g_init`` in ``starts``; per sample the lowest
    :func:`prox_objective` wins (ties: the first start).

    Args:
        omega: ``(n, K)`` centres; ``V``: scalar ``> 0`` or ``0``; ``starts``: ``(n, K)`` arrays.
        loss: ``h ↦ (n,)`` per-sample losses; ``derivs``: ``h ↦ ((n, K), (n, K, K))`` gradient and Hessian.
    Returns:
        ``(g*, ∇²ℓ(h*), max residual |g + ∇ℓ| of the winners, Newton iterations summed over starts)``.
    """
    g_best = val_best = None
    iters = 0
    for g_init in starts:
        g, k = _newton(omega, V, g_init, loss, derivs, max_newton, tol)
        val = prox_objective(omega, V, g, loss)
        iters = iters + k
        if g_best is None:
            g_best, val_best = g, val
            continue
        take = val < val_best - 1e-12 * (jnp.abs(val_best) + 1.0)
        g_best, val_best = jnp.where(take[:, None], g, g_best), jnp.where(take, val, val_best)
    grad, hess = derivs(omega + V * g_best)
    return g_best, hess, jnp.max(jnp.abs(g_best + grad)), iters


def start_towards(omega, V, target):
    """The ``g`` of the start ``h = target`` (``g = (target − ω)/V``; ``0`` when ``V = 0``, where the
    prox is explicit)."""
    return jnp.where(V > 0, (target - omega) / jnp.where(V > 0, V, 1.0), 0.0)
