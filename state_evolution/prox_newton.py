"""Batched proximal maps by a safeguarded Newton method (shared by all sampled channels).

For each sample, the prox ``h* = argmin_h ‖h − ω‖²/(2V) + ℓ(h)`` is written ``h* = ω + V g*`` with

    g* + ∇ℓ(ω + V g*) = 0,

a parametrisation that stays well conditioned as ``V → 0`` (then ``g* = −∇ℓ(ω)``). Newton steps
use ``J = I + V ∇²ℓ``: pure Newton where ``J`` is positive definite (Cholesky succeeds), else ``J``
shifted by a Gershgorin bound; the step length is the longest of ``{1, ½, …, 1/16, 0}`` that does
not increase the merit ``V‖g‖²/2 + ℓ(ω + Vg)`` beyond round-off. The loop stops when every
sample's residual ``|g + ∇ℓ|`` is below ``tol`` (or after ``max_newton`` steps).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

_STEPS = jnp.asarray([1.0, 0.5, 0.25, 0.125, 0.0625, 0.0])


def solve_prox(omega, V, g_init, loss, derivs, max_newton, tol=1e-11):
    """Solve the batched prox from ``g_init``.

    Args:
        omega: ``(n, K)`` centres; ``V``: scalar ``> 0`` or ``0``; ``g_init``: ``(n, K)``.
        loss: ``h ↦ (n,)`` per-sample losses; ``derivs``: ``h ↦ ((n, K), (n, K, K))`` gradient and Hessian.
    Returns:
        ``(g*, ∇²ℓ(h*), max residual, Newton iterations)``.
    """
    K = omega.shape[-1]
    eye = jnp.eye(K, dtype=omega.dtype)

    def merit(g):
        return 0.5 * V * jnp.sum(g * g, axis=-1) + loss(omega + V * g)

    def newton(carry):
        g, k, _ = carry
        grad, hess = derivs(omega + V * g)
        F = g + grad
        J = eye + V * hess
        pd = jnp.all(jnp.isfinite(jnp.linalg.cholesky(J)), axis=(-1, -2))
        diag = jnp.diagonal(J, axis1=-2, axis2=-1)
        low = jnp.min(diag - (jnp.sum(jnp.abs(J), axis=-1) - jnp.abs(diag)), axis=-1)
        shift = jnp.where(pd, 0.0, jnp.maximum(0.0, 1e-2 - low))
        step = -jnp.linalg.solve(J + shift[:, None, None] * eye, F[..., None])[..., 0]
        cand = g[None] + _STEPS[:, None, None] * step[None]
        vals = jax.vmap(merit)(cand)  # (steps, n); the last candidate is t = 0
        ok = vals <= vals[-1] + 1e-13 * (jnp.abs(vals[-1]) + 1.0)
        best = jnp.argmax(ok, axis=0)
        return jnp.take_along_axis(cand, best[None, :, None], axis=0)[0], k + 1, jnp.max(jnp.abs(F))

    def not_done(carry):
        _, k, err = carry
        return (k < max_newton) & (err > tol)

    g, k, _ = jax.lax.while_loop(not_done, newton, (g_init, 0, jnp.asarray(jnp.inf, omega.dtype)))
    grad, hess = derivs(omega + V * g)
    return g, hess, jnp.max(jnp.abs(g + grad)), k
