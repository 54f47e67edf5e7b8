"""Numerical runtime settings: double precision on demand, and single-threaded LAPACK/BLAS.

* ``float64()`` switches JAX to 64-bit inside a ``with`` block (a no-op when already on).
* ``limit_blas_threads()`` caps the OpenBLAS libraries bundled with numpy/scipy at one thread.
  jaxlib's CPU linear algebra (``eigh``, ``cholesky``, ``solve`` on batches) calls LAPACK from
  scipy's OpenBLAS *from XLA's own worker threads*; with OpenBLAS multithreaded as well we observed
  (jax 0.10.2, 2-core CPU) a 40–75× slower ``eigh`` and, worse, batched ``cholesky``/``solve`` inside
  a jitted ``while_loop`` that never returned (the theory's channels therefore use no LAPACK:
  :mod:`state_evolution.small_linalg`). The simulator's FISTA prox (``eigh``) runs inside it; XLA's
  own matrix products do not use OpenBLAS and keep their threads.
"""

from __future__ import annotations

import contextlib

import jax


@contextlib.contextmanager
def float64(enabled: bool = True):
    """Context in which JAX creates float64 arrays (``enabled=False``: float32 unless globally on).

    Args:
        enabled: 64-bit on (``True``) or off inside the block.

    Yields:
        Nothing; the previous setting is restored on exit.
    """
    if bool(jax.config.jax_enable_x64) == bool(enabled):
        yield
    else:
        with jax.enable_x64(bool(enabled)):
            yield


def limit_blas_threads(n: int = 1):
    """Cap every loaded BLAS/LAPACK (OpenBLAS, MKL) at ``n`` threads; use as a context manager
    (``with limit_blas_threads(1): ...``), which restores the previous limits on exit.

    Args:
        n: the thread cap, ``≥ 1``.

    Returns:
        A ``threadpoolctl.threadpool_limits`` context manager (already in force).
    """
    from threadpoolctl import threadpool_limits

    import numpy  # noqa: F401  (load numpy's and scipy's OpenBLAS so the cap reaches them; jaxlib's
    import scipy.linalg  # noqa: F401  CPU LAPACK calls scipy's, through scipy.linalg.cython_lapack)

    return threadpool_limits(n, user_api="blas")
