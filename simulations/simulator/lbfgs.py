"""One L-BFGS driver (optax ``lbfgs`` with zoom line search) under ``jit``, shared by all finite-D fits."""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import optax


@partial(jax.jit, static_argnames=("fun", "max_iter"))
def minimize_lbfgs(fun, x0, args, max_iter: int, gtol: float):
    """Minimise ``fun(x, args)`` from ``x0`` (any pytree) with optax L-BFGS in a ``lax.while_loop``.

    ``fun`` must be hashable and stable (module-level or cached) so that the compiled
    loop is reused; ``args`` holds the data (traced, never baked in as constants).
    Stops when ``‖∇f‖ ≤ gtol · max(|f|, 1)`` or after ``max_iter`` iterations.

    Args:
        fun: ``fun(x, args) -> scalar`` (static under ``jit``).
        x0: the starting pytree.
        args: the data passed to ``fun``.
        max_iter: iterations at most (static).
        gtol: relative gradient tolerance.

    Returns:
        ``(x, f(x), ‖∇f(x)‖, iterations)``.
    """
    f = lambda x: fun(x, args)  # noqa: E731
    opt = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(f)

    def step(carry):
        x, state, _, _, k = carry
        value, grad = value_and_grad(x, state=state)
        updates, state = opt.update(grad, state, x, value=value, grad=grad, value_fn=f)
        return optax.apply_updates(x, updates), state, value, optax.tree.norm(grad), k + 1

    def cond(carry):
        _, _, value, gnorm, k = carry
        return (k < max_iter) & (gnorm > gtol * jnp.maximum(jnp.abs(value), 1.0))

    dtype = jax.tree.leaves(x0)[0].dtype
    zero, inf = jnp.zeros((), dtype), jnp.asarray(jnp.inf, dtype)
    x, _, _, _, k = jax.lax.while_loop(cond, step, (x0, opt.init(x0), zero, inf, 0))
    value, grad = jax.value_and_grad(f)(x)
    return x, value, optax.tree.norm(grad), k
