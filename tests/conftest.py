"""Test configuration: float64 everywhere (as diffrax's tests do) and single-threaded OpenBLAS.

OPENBLAS_NUM_THREADS must be set before numpy/jaxlib load OpenBLAS: with multithreaded OpenBLAS,
jaxlib's CPU LAPACK calls from XLA's threads hung (see solvable_attention/runtime.py).
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
