"""Importable point functions for the resumable-runner tests (subprocesses and Dask workers import them by name)."""

import os
import time
import uuid
from pathlib import Path


def logged_square(x, log_dir, delay=0.0):
    """``{"square": x²}``, leaving one file per call in ``log_dir`` (to count calls across processes)."""
    Path(log_dir).mkdir(parents=True, exist_ok=True)
    (Path(log_dir) / f"{x}-{uuid.uuid4().hex}.call").touch()
    time.sleep(delay)
    return {"square": x * x, "pid": os.getpid()}


def calls(log_dir) -> dict:
    """``{x: number of calls}`` from the files of :func:`logged_square`."""
    out = {}
    for f in Path(log_dir).glob("*.call"):
        x = int(f.name.split("-")[0])
        out[x] = out.get(x, 0) + 1
    return out


def fake_simulation(D, seed, a=1.0, b=-2.0, theory=0.9, **setting):
    """A "simulation" whose metric is ``a + b/D`` ± 0.01 (sign set by the seed's parity): its
    extrapolation to D → ∞ is exactly ``a``."""
    eps = 0.01 if seed % 2 == 0 else -0.01
    return {"x": a + b / D + eps, "converged": True}


def fake_theory(setting, seed=0):
    return {"x": setting["theory"], "converged": True, "residual": 0.0, "seconds": 0.0}


def threads_in_effect(x):
    """The thread settings this worker computes under, after a JAX computation: the XLA flags, BLAS
    pools (threadpoolctl) and the number of OS threads of the process."""
    import jax.numpy as jnp
    from threadpoolctl import threadpool_info

    float(jnp.ones((64, 64)).sum())  # start XLA's CPU backend (and its thread pool)
    with open("/proc/self/status") as fh:
        os_threads = next((int(line.split()[1]) for line in fh if line.startswith("Threads:")), None)
    return {"xla_flags": os.environ.get("XLA_FLAGS"), "os_threads": os_threads,
            "blas": [p["num_threads"] for p in threadpool_info() if p.get("user_api") == "blas"]}
