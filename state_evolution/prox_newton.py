"""Batched proximal maps by a safeguarded Newton method (shared by all sampled channels).

For each sample, the prox ``h* = argmin_h ‖h − ω‖²/(2V) + ℓ(h)`` is written ``h* = ω + V g*`` with

    g* + ∇ℓ(ω + V g*) = 0,

a parametrisation that stays well conditioned as ``V → 0`` (then ``g* = −∇ℓ(ω)``). Newton steps
use ``J = I + V ∇²ℓ``: pure Newton where ``J`` is positive definite (Cholesky succeeds), else ``J``
shifted by a Gershgorin bound (then symmetric diagonally dominant, hence positive definite); the step length is the longest of ``{1, ¼, …, 4⁻¹⁰, 0}`` that does
not increase the merit ``V‖g‖²/2 + ℓ(ω + Vg)`` beyond round-off. A sample is done when its residual
``|g + ∇ℓ|`` is below ``tol`` (or after ``max_newton`` steps).

For a non-convex loss (softmax) the prox may have several local minima, and the state evolution
needs the global one (the Moreau envelope is a minimum over ``h``). :func:`solve_prox_multistart`
therefore runs Newton from a few deterministic starts (e.g. ``h = ω`` and the zero-loss point of the label)
and keeps, per sample, the lowest merit: the channel is then a *function* of the overlaps, never of
the history of the solver (a warm start from the previous evaluation made it history dependent).

Cost: a batched Newton loop runs until its slowest sample is done, and the slowest are rare (softmax
LoRA channel, Δ = 2: of 16384 samples 250 are left after 8 steps, 20 after 12, one needs 60). So the
loop is **compacted**: the whole batch is iterated only while more than ``n_tail`` samples are
unfinished; then the unfinished samples are gathered (into a batch of ``n_tail``) — their centres,
iterates and per-sample ``data`` — iterated alone to the end, and scattered back. The samples left out of
the tail are exactly the finished ones, so the result is that of the uncompacted loop (to round-off)
at a fraction of its cost (``tests/test_prox_newton.py`` checks it against ``compact=False``). The
line search is compacted the same way (:func:`_newton_loop`'s ``backtrack``): step 1 on the whole
batch, the shorter steps on the samples that rejected it.

The batch is also **chunked** (:data:`PROX_CHUNK` samples at a time, one after the other with ``lax.map``): the
Newton loop's working set then stays in cache (a chunk's samples × starts × the ``K × K`` Hessians), where the
whole batch's does not. Each sample's prox is its own, so this changes the cost only (``tests/test_prox_newton.py``
checks the chunked solve against the whole batch).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from .small_linalg import cholesky_factor, factor_solve

_MAX_HALVINGS = 11  # step lengths 1, 1/4, …, 4⁻¹⁰
TAIL_FRACTION = 64  # the compacted tail holds 1/TAIL_FRACTION of the batch ...
MIN_TAIL = 64  # ... and at least this many samples (smaller batches are not compacted)
SEARCH_FRACTION = 16  # the line search's shorter steps run on 1/SEARCH_FRACTION of the batch (when enough)


def prox_objective(omega, V, g, loss, data):
    """The prox objective in the variable ``g`` (``h = ω + Vg``), divided by ``V``:
    ``V‖g‖²/2 + ℓ(ω + Vg)`` per sample (the merit of the line search and of the multistart choice).

    docs/theory.md §2.1 (the proximal map), §2.4.

    Args:
        omega: ``(n, K)`` centres ``ω`` (whitened coordinates).
        V: scalar response ``V ≥ 0``.
        g: ``(n, K)`` the variable ``g``.
        loss: ``(h, data) ↦ (n,)`` per-sample losses ``ℓ``.
        data: per-sample arrays passed to ``loss``.

    Returns:
        ``(n,)`` merits.
    """
    return 0.5 * V * jnp.sum(g * g, axis=-1) + loss(omega + V * g, data)


def _indices(mask, size):
    """The indices of the ``True`` entries of ``mask`` (at most ``size`` of them: callers check),
    padded to ``size`` with index 0. Duplicated indices are harmless where they are used: a gathered
    copy of a sample computes exactly what the sample itself does. (``jnp.nonzero`` with a static
    size is a cumulative sum: ``lax.top_k`` cost 14 ms at 65536 samples, this 0.6 ms.)"""
    return jnp.nonzero(mask, size=size, fill_value=0)[0]


def _halvings(merit, g, step, bound, t, done):
    """The backtracking loop: per sample not yet ``done``, ``t ← t/4`` until ``merit(g + t·step) ≤ bound``
    (at most ``_MAX_HALVINGS`` evaluations in all; a sample never accepted gets ``t = 0``); a while loop
    that only goes on while some sample is not done."""

    def body(c):
        t, done, k = c
        ok = merit(g + t[:, None] * step) <= bound
        done_now = done | ok
        return jnp.where(done_now, t, t * 0.25), done_now, k + 1

    def more(c):
        return (~jnp.all(c[1])) & (c[2] < _MAX_HALVINGS)

    t, done, _ = jax.lax.while_loop(more, body, (t, done, 1))
    return jnp.where(done, t, 0.0)


def _newton_loop(omega, V, g, data, loss, derivs, k0, max_newton, tol, keep_going):
    """Safeguarded Newton steps on a batch from ``g`` (step count starting at ``k0``) while
    ``k < max_newton`` and ``keep_going(residuals)``; returns ``(g, k, per-sample residual before the
    last step)``."""
    n, K = omega.shape
    eye = jnp.eye(K, dtype=omega.dtype)
    n_search = max(n // SEARCH_FRACTION, MIN_TAIL)

    def merit(g):
        return prox_objective(omega, V, g, loss, data)

    def backtrack(g, step):
        """Per sample the longest ``t ∈ {1, ¼, …, 4⁻¹⁰}`` with merit(g + t·step) ≤ merit(g) (up to
        round-off), else ``t = 0``. ``t = 1`` is tried on the whole batch; the shorter steps only on the
        samples that rejected it, gathered into a batch of ``n_search`` when they are that few (the
        same ``t`` per sample as a batch-wide search, at a fraction of the cost: a few samples that
        need many halvings no longer cost the whole batch a merit evaluation each)."""
        m0 = merit(g)
        slack = 1e-13 * (jnp.abs(m0) + 1.0)
        ok = merit(g + step) <= m0 + slack
        t0 = jnp.where(ok, 1.0, 0.25)
        if n_search >= n // 2:
            return g + _halvings(merit, g, step, m0 + slack, t0, ok)[:, None] * step
        idx = _indices(~ok, n_search)  # every rejecting sample, if few

        def gathered(_):
            take = lambda a: a[idx]  # noqa: E731
            sub_omega, sub_data = take(omega), jax.tree_util.tree_map(take, data)
            sub_merit = lambda gg: prox_objective(sub_omega, V, gg, loss, sub_data)  # noqa: E731
            t_sub = _halvings(sub_merit, take(g), take(step), take(m0 + slack), take(t0), take(ok))
            return jnp.where(ok, 1.0, 0.0).at[idx].set(t_sub)

        def batch_wide(_):
            return _halvings(merit, g, step, m0 + slack, t0, ok)

        t = jax.lax.cond(jnp.sum(~ok) <= n_search, gathered, batch_wide, None)
        return g + t[:, None] * step

    def newton(carry):
        g, k, _ = carry
        grad, hess = derivs(omega + V * g, data)
        F = g + grad
        J = eye + V * hess
        L, pd = jax.lax.optimization_barrier(cholesky_factor(J))

        def shifted(_):  # some J indefinite: refactor J + shift·I (shift = 0 where J ≻ 0: the same factor)
            diag = jnp.diagonal(J, axis1=-2, axis2=-1)
            low = jnp.min(diag - (jnp.sum(jnp.abs(J), axis=-1) - jnp.abs(diag)), axis=-1)
            shift = jnp.where(pd, 0.0, jnp.maximum(0.0, 1e-2 - low))
            return jax.lax.optimization_barrier(cholesky_factor(J + shift[:, None, None] * eye)[0])

        L = jax.lax.cond(jnp.all(pd), lambda _: L, shifted, None)
        step = -factor_solve(L, F)
        return backtrack(g, step), k + 1, jnp.max(jnp.abs(F), axis=-1)

    def not_done(carry):
        _, k, err = carry
        return (k < max_newton) & keep_going(err)

    err0 = jnp.full(omega.shape[:1], jnp.inf, omega.dtype)
    return jax.lax.while_loop(not_done, newton, (g, jnp.asarray(k0), err0))


def newton_prox(omega, V, g_init, data, loss, derivs, max_newton, tol, compact=True):
    """Newton iterations from ``g_init`` until every sample's residual is below ``tol``; returns
    ``(g, steps)``. ``compact``: iterate the whole batch only while more than ``n_tail`` samples are
    unfinished, then the ``n_tail`` worst alone (module docstring); ``False``: the plain loop (the oracle).

    Solves ``g + ∇ℓ(ω + V g) = 0`` per sample (docs/theory.md §2.4).

    Args:
        omega: ``(n, K)`` centres.
        V: scalar response ``V ≥ 0``.
        g_init: ``(n, K)`` starting ``g``.
        data: pytree of per-sample arrays (leading axis ``n``) read by ``loss`` and ``derivs``.
        loss: ``(h, data) ↦ (n,)`` per-sample losses.
        derivs: ``(h, data) ↦ ((n, K), (n, K, K))`` gradient and Hessian of ``ℓ``.
        max_newton: Newton steps at most.
        tol: residual tolerance on ``|g + ∇ℓ|``.
        compact: compact the tail of unfinished samples.

    Returns:
        ``(g, steps)``: ``(n, K)`` solutions and the number of Newton steps taken.
    """
    n = omega.shape[0]
    n_tail = max(n // TAIL_FRACTION, MIN_TAIL)
    if not compact or n_tail >= n // 2:
        g, k, _ = _newton_loop(omega, V, g_init, data, loss, derivs, 0, max_newton, tol,
                               lambda err: jnp.max(err) > tol)
        return g, k
    g, k, err = _newton_loop(omega, V, g_init, data, loss, derivs, 0, max_newton, tol,
                             lambda err: jnp.sum(err > tol) > n_tail)
    idx = _indices(err > tol, n_tail)  # every unfinished sample (residual before the last step)
    take = lambda a: a[idx]  # noqa: E731
    g_tail, k_tail, _ = _newton_loop(take(omega), V, take(g), jax.tree_util.tree_map(take, data), loss, derivs,
                                     k, max_newton, tol, lambda e: jnp.max(e) > tol)
    return g.at[idx].set(g_tail), k_tail


# A per-sample prox whose stationarity residual |g + ∇ℓ| ends above this is unfinished. The Newton tolerance is
# 1e-11; 1e-8 leaves room for round-off in the gradient of a T×T softmax at large β, and still moves a sample's
# contribution to any average by a relative 1e-8 at most.
UNFINISHED_RESIDUAL = 1e-8


# Samples per chunk of :func:`solve_prox_multistart` (each chunk: its samples × the starts, one compacted Newton
# loop; the chunks one after the other, so that a chunk's working set stays in cache where the whole batch's does
# not). Measured in benchmarks/README.md ("Chunked prox").
PROX_CHUNK = 2 ** 10


def solve_prox_multistart(omega, V, starts, loss, derivs, max_newton, tol=1e-11, data=(), compact=True,
                          chunk=PROX_CHUNK):
    """Solve the batched prox by Newton from each ``g_init`` in ``starts``; per sample the lowest
    :func:`prox_objective` wins (ties: the earlier start).

    The batch is cut into chunks of ``chunk`` samples, solved one after the other (``lax.map``); in each, the
    starts are stacked into one batch of ``len(starts)·chunk`` samples (one Newton loop, compacted once:
    :func:`newton_prox`). Each sample's prox is its own, so the chunking changes the cost, not the result
    (beyond the compaction's round-off).

    Args:
        omega: ``(n, K)`` centres; ``V``: scalar ``> 0`` or ``0``; ``starts``: ``(n, K)`` arrays.
        loss: ``(h, data) ↦ (n,)`` per-sample losses; ``derivs``: ``(h, data) ↦ ((n, K), (n, K, K))``
            gradient and Hessian; ``data``: a pytree of per-sample arrays (leading axis ``n``: labels,
            side fields) that both read, gathered with the samples when the loop is compacted.
        compact: see :func:`newton_prox` (``False``: the plain, slower loop).
        chunk: samples per chunk (``None``, or a batch not a multiple of it: the whole batch at once).
    Returns:
        ``(g*, ∇²ℓ(h*), per-sample residual max_k |g + ∇ℓ|_k of the winners (shape (n,)), Newton steps of the
        batched loop (the most over the chunks))``; a sample whose residual exceeds :data:`UNFINISHED_RESIDUAL` is
        *unfinished* (its Newton iteration stopped at ``max_newton``).
    """
    n = omega.shape[0]
    solve_batch = lambda om, st, d: _multistart_batch(om, V, st, d, loss, derivs, max_newton, tol,  # noqa: E731
                                                      compact)
    if chunk is None or n <= chunk or n % chunk:
        return solve_batch(omega, tuple(starts), data)
    k = n // chunk
    split = lambda a: a.reshape((k, chunk) + a.shape[1:])  # noqa: E731
    merge = lambda a: a.reshape((n,) + a.shape[2:])  # noqa: E731
    g, hess, res, iters = jax.lax.map(lambda a: solve_batch(*a),
                                      (split(omega), tuple(split(s) for s in starts),
                                       jax.tree_util.tree_map(split, data)))
    return merge(g), merge(hess), merge(res), jnp.max(iters)


def _multistart_batch(omega, V, starts, data, loss, derivs, max_newton, tol, compact):
    """:func:`solve_prox_multistart` on one batch (no chunking)."""
    n, S = omega.shape[0], len(starts)
    tile = lambda a: jnp.concatenate([a] * S, axis=0)  # noqa: E731
    omega_s, data_s = tile(omega), jax.tree_util.tree_map(tile, data)
    g_all, iters = newton_prox(omega_s, V, jnp.concatenate(starts, axis=0), data_s, loss, derivs, max_newton, tol,
                               compact)
    val_all = prox_objective(omega_s, V, g_all, loss, data_s)
    g_best, val_best = g_all[:n], val_all[:n]
    for s in range(1, S):
        g, val = g_all[s * n:(s + 1) * n], val_all[s * n:(s + 1) * n]
        take = val < val_best - 1e-12 * (jnp.abs(val_best) + 1.0)
        g_best, val_best = jnp.where(take[:, None], g, g_best), jnp.where(take, val, val_best)
    grad, hess = derivs(omega + V * g_best, data)
    return g_best, hess, jnp.max(jnp.abs(g_best + grad), axis=-1), iters


def start_towards(omega, V, target):
    """The ``g`` of the start ``h = target`` (``g = (target − ω)/V``; ``0`` when ``V = 0``, where the
    prox is explicit).

    Args:
        omega: ``(n, K)`` centres.
        V: scalar response ``V ≥ 0``.
        target: ``(n, K)`` the start points ``h``.

    Returns:
        ``(n, K)`` starting ``g``.
    """
    return jnp.where(V > 0, (target - omega) / jnp.where(V > 0, V, 1.0), 0.0)
