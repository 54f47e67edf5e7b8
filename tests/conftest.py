"""Test configuration: float64 everywhere (as diffrax's tests do) and single-threaded OpenBLAS; fixtures
shared by several test modules.

OPENBLAS_NUM_THREADS must be set before numpy/jaxlib load OpenBLAS: with multithreaded OpenBLAS,
jaxlib's CPU LAPACK calls from XLA's threads hung (see solvable_attention/runtime.py).
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import pytest  # noqa: E402


@pytest.fixture(scope="module")
def identity_pre():
    """The pre-training fixed point of the identity activation at α = 0.1, Δ = 0.5, λ = 0.1."""
    from state_evolution import solve_pretraining

    return solve_pretraining(0.1, 0.5, 0.1, activation="identity")


@pytest.fixture(autouse=True, scope="session")
def _compilation_cache_in_a_temporary_folder(tmp_path_factory):
    """The command line turns on the persistent compilation cache in its default folder (the user's
    ``~/.cache``); tests that run it keep it in a temporary folder instead."""
    from solvable_attention import runtime

    folder = tmp_path_factory.mktemp("xla_cache")
    original = runtime.default_compilation_cache
    runtime.default_compilation_cache = lambda: folder
    yield
    runtime.default_compilation_cache = original
