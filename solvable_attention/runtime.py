"""Numerical runtime settings: double precision on demand, and single-threaded LAPACK/BLAS.

* ``float64()`` switches JAX to 64-bit inside a ``with`` block (a no-op when already on).
* ``limit_blas_threads()`` caps the OpenBLAS libraries bundled with numpy/scipy at one thread.
  jaxlib's CPU linear algebra (``eigh``, ``cholesky``, ``solve`` on batches) calls LAPACK from
  scipy's OpenBLAS *from XLA's own worker threads*; with OpenBLAS multithreaded as well we observed
  (jax 0.10.2, 2-core CPU) a 40–75× slower ``eigh`` and, worse, batched ``cholesky``/``solve`` inside
  a jitted ``while_loop`` that never returned (the theory's channels therefore use no LAPACK:
  :mod:`state_evolution.small_linalg`). The simulator's FISTA prox (``eigh``) runs inside it; XLA's
  own matrix products do not use OpenBLAS and keep their threads.
* ``enable_compilation_cache()`` keeps XLA's compiled programs on disk (JAX's persistent compilation cache), so
  that a new process loads the theory's channels in about a second instead of compiling them again (10–15 s
  each on one CPU core). Off unless called; the command line and the package's worker processes turn it on.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import jax

# Programs that compile faster than this are not written to the persistent cache (JAX's default, stated here).
CACHE_MIN_COMPILE_SECONDS = 1.0


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


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one, else ``os.cpu_count``).

    Returns:
        An integer ``≥ 1``.
    """
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


def threads_per_worker(workers: int, cores: int | None = None) -> int:
    """The BLAS/XLA threads each of ``workers`` processes may use so that ``workers × threads ≤ cores``.

    Args:
        workers: processes running at once, ``≥ 1``.
        cores: the cores to share (default :func:`available_cores`).

    Returns:
        ``max(1, cores // workers)``.

    Raises:
        ValueError: ``workers`` not a positive integer, or more workers than cores (each needs at least
            one thread, so the cores would be oversubscribed).
    """
    cores = available_cores() if cores is None else int(cores)
    if not (isinstance(workers, int) and workers >= 1):
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    if workers > cores:
        raise ValueError(f"workers = {workers} exceeds the {cores} available cores: each worker needs one "
                         f"thread, so they would oversubscribe the machine; use workers <= {cores}")
    return max(1, cores // workers)


def thread_environment(threads: int) -> dict:
    """Environment variables that cap a *new* process's XLA CPU pool and BLAS libraries at ``threads``.

    XLA reads its thread settings when its CPU backend starts, BLAS libraries when they load; these are
    their only interfaces, so a worker process gets them before it computes anything (see
    :func:`pin_worker_threads`). The package itself reads no environment variable.

    Args:
        threads: the cap, ``≥ 1``.

    Returns:
        ``{"XLA_FLAGS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"}`` → values.
    """
    n = int(threads)
    xla = f"--xla_cpu_multi_thread_eigen={'true' if n > 1 else 'false'} intra_op_parallelism_threads={n}"
    return {"XLA_FLAGS": xla, "OPENBLAS_NUM_THREADS": str(n), "OMP_NUM_THREADS": str(n), "MKL_NUM_THREADS": str(n)}


def default_compilation_cache() -> Path:
    """The folder of the persistent compilation cache when none is given: ``~/.cache/solvable-attention/xla``.

    Returns:
        The path (not created here).
    """
    return Path.home() / ".cache" / "solvable-attention" / "xla"


def compilation_cache_folder(path) -> Path:
    """Check a compilation cache folder and create it if missing (nothing is enabled here).

    Args:
        path: a non-empty ``str`` or ``os.PathLike``; ``~`` is expanded.

    Returns:
        The folder as a :class:`~pathlib.Path`.

    Raises:
        ValueError: ``path`` is not a non-empty path, exists and is not a folder, or cannot be created or written.
    """
    import os

    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise ValueError(f"compilation_cache must be a non-empty folder path, got {path!r}")
    folder = Path(path).expanduser()
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"compilation cache {str(folder)!r} exists and is not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"cannot create the compilation cache folder {str(folder)!r}: {exc.strerror}") from None
    if not os.access(folder, os.W_OK):
        raise ValueError(f"cannot write to the compilation cache folder {str(folder)!r}")
    return folder


def enable_compilation_cache(path=None) -> Path:
    """Keep compiled XLA programs in ``path`` (JAX's persistent compilation cache) for this process.

    A program compiled once (for example a theory channel: 10–15 s on one CPU core) is then loaded from disk
    by every later process with the same JAX version, device and program (about 1 s). The cache holds only
    compiled code: results are the same with and without it. Programs compiling in less than
    :data:`CACHE_MIN_COMPILE_SECONDS` are not stored.

    Args:
        path: a folder (created if missing); default :func:`default_compilation_cache`.

    Returns:
        The folder in use.

    Raises:
        ValueError: ``path`` is not a non-empty path, exists and is not a folder, or cannot be created or written.
    """
    folder = compilation_cache_folder(default_compilation_cache() if path is None else path)
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", CACHE_MIN_COMPILE_SECONDS)
    return folder


def pin_worker_threads(threads: int, compilation_cache=None) -> None:
    """Cap this (worker) process at ``threads`` XLA and BLAS threads; call it first thing in a new process.

    Used as the initializer of the package's process pools (``spawn``), so that ``workers × threads``
    never exceeds the cores (:func:`threads_per_worker`).

    Args:
        threads: the cap, ``≥ 1``.
        compilation_cache: a folder for :func:`enable_compilation_cache` (``None``: no persistent cache).

    Raises:
        RuntimeError: JAX's backend already started in this process (its thread pool can no longer change).
    """
    import os

    from jax._src import xla_bridge

    if getattr(xla_bridge, "_backends", None):
        raise RuntimeError("pin_worker_threads must run before JAX computes anything in this process")
    os.environ.update(thread_environment(threads))
    import numpy  # noqa: F401  (load the BLAS libraries now, so that the cap below reaches them)
    import scipy.linalg  # noqa: F401
    from threadpoolctl import threadpool_limits

    threadpool_limits(int(threads), user_api="blas")
    if compilation_cache is not None:
        enable_compilation_cache(compilation_cache)
