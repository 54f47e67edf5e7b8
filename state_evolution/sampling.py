"""Fixed Gaussian samples for the Monte Carlo channels: scrambled Sobol (randomised quasi-Monte Carlo).

The channel expectations are smooth functions of ``d`` standard normals (``d = 2K + T²`` for the
pre-training channel). Scrambled Sobol points mapped through the normal quantile reduce the
variance of these averages over i.i.d. draws at the same cost (measured: seed-to-seed spread of the
softmax fixed point's ``q`` at 2¹⁴ samples, see docs/theory.md §2.4); different ``seed`` values give
independent randomisations, whose spread is the honest Monte Carlo error of a whole fixed point
(``--mc-replicas`` of the validation campaigns, :func:`simulations.campaigns.validation.replicate_theory`).
"""

from __future__ import annotations

import math

import numpy as np
import scipy.special
from scipy.stats import qmc

from solvable_attention.averages import mean_se

# Default sample counts of the Monte Carlo channels. Training samples: every evaluation solves a prox per
# sample, and 2¹⁴ Sobol points put the seed-to-seed spread of a softmax fixed point (docs/theory.md §2.4)
# below the finite-D simulations' error at seconds per evaluation. Test samples need no prox (a closed
# function of the fields), so 2¹⁷ of them make the test error's Monte Carlo error negligible at the same cost.
N_SAMPLES = 2 ** 14
N_TEST_SAMPLES = 2 ** 17

# Seed offsets of independent sample streams (each one a different Sobol scrambling / PRNG key):
# the test samples of a channel use seed + TEST_SEED_OFFSET, so that they never coincide with the training
# samples of this or of a nearby seed (the stages and replicas use seed, seed + 1, …); 7919 is the 1000th
# prime, far above any offset used between stages.
TEST_SEED_OFFSET = 7919
# The fine-tuning (LoRA) channel of :func:`state_evolution.solve_state_evolution` and of the selection
# figures draws from the pre-training seed + 1: a stream independent of the pre-training channel's.
FINETUNE_SEED_OFFSET = 1


def gaussian_samples(n: int, shapes, seed: int, method: str = "sobol"):
    """Standard-normal arrays of shapes ``(n, *shape)`` for each ``shape`` in ``shapes``, jointly drawn.

    ``method="sobol"``: one scrambled Sobol sequence of dimension ``Σ prod(shape)`` (``n`` rounded up
    to a power of two); ``"iid"``: plain pseudo-random draws.

    Args:
        n: the number of samples (Sobol: rounded up to a power of two, at least 2).
        shapes: the per-sample shapes, e.g. ``[(K,), (K,), (T, T)]``.
        seed: the scrambling (Sobol) or ``jax.random`` (i.i.d.) seed.
        method: ``"sobol"`` or ``"iid"``.

    Returns:
        One numpy float64 array of shape ``(n', *shape)`` per shape (``n' = n`` for ``"iid"``).

    Raises:
        ValueError: an unknown ``method``.
    """
    sizes = [int(np.prod(s)) if len(s) else 1 for s in shapes]
    d = sum(sizes)
    if method == "sobol":
        m = max(1, math.ceil(math.log2(n)))
        u = qmc.Sobol(d, scramble=True, seed=seed).random_base2(m)
        z = scipy.special.ndtri(np.clip(u, 1e-16, 1 - 1e-16))
    elif method == "iid":
        import jax
        import jax.numpy as jnp

        from solvable_attention.runtime import float64

        with float64():  # reproducible pseudo-random normals from jax.random
            z = np.asarray(jax.random.normal(jax.random.PRNGKey(seed), (n, d), jnp.float64))
    else:
        raise ValueError(f"method must be 'sobol' or 'iid', got {method!r}")
    out, start = [], 0
    for s, size in zip(shapes, sizes):
        out.append(np.ascontiguousarray(z[:, start:start + size]).reshape(z.shape[0], *s))
        start += size
    return out


def sample_mean_se(x, weights=None) -> tuple[float, float]:
    """``(mean, s.e.)`` of per-sample values (optionally importance-weighted): the first two fields of
    :func:`solvable_attention.averages.mean_se`.

    Args:
        x: ``(n,)`` per-sample values.
        weights: optional ``(n,)`` non-negative importance weights.

    Returns:
        ``(mean, s.e.)``.
    """
    est = mean_se(x, weights)
    return est.mean, est.se
