"""Result files: JSON that keeps ``±inf``, atomic writes, and the metadata stored next to every result.

One home for how the package writes and reads its records: :func:`jsonable` / :func:`restore_inf`
(``±inf`` stored as the strings ``"inf"``/``"-inf"``, which plain JSON lacks), :func:`write_json_atomic`
(temporary file, ``fsync``, ``os.replace``), and :func:`run_metadata` (versions, machine, thread
settings, UTC time).
"""

from __future__ import annotations

import datetime as _dt
import enum
import json
import math
import os
import platform
import tempfile
from importlib import metadata
from pathlib import Path


def versions() -> dict:
    """Versions of Python and the numerical stack (recorded next to every result).

    Returns:
        ``{"python", "platform", "jax", "jaxlib", "optax", "numpy", "scipy", "solvable-attention"}`` →
        version strings (``None`` for a package not installed).
    """
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("jax", "jaxlib", "optax", "numpy", "scipy", "solvable-attention"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def jsonable(x):
    """JSON-ready copy of ``x``: ``±inf`` as ``"inf"``/``"-inf"`` strings (restored on load), numpy/JAX
    scalars and arrays as Python numbers and lists, objects with ``to_dict()`` through it.

    Args:
        x: a nested structure of dicts, lists, tuples, numbers, strings, ``None``, arrays and objects
            with ``to_dict()``.

    Returns:
        The copy (tuples become lists).

    Raises:
        TypeError: a value of any other type.
    """
    if isinstance(x, enum.Enum):  # a Status: its name
        return x.value
    if isinstance(x, float) and math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if isinstance(x, dict):
        return {k: jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if hasattr(x, "to_dict"):
        return jsonable(x.to_dict())
    if hasattr(x, "tolist") and not isinstance(x, (str, bytes)):  # numpy / JAX scalars and arrays
        return jsonable(x.tolist())
    if x is None or isinstance(x, (str, bool, int, float)):
        return x
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def write_json_atomic(path, obj) -> None:
    """Write ``obj`` as JSON to ``path`` atomically: a temporary file in the same folder, ``fsync``,
    then ``os.replace`` (atomic on POSIX). On any failure the previous file, if any, is untouched.

    Args:
        path: the file to write (its folder is created if missing).
        obj: what to write, through :func:`jsonable`.

    Raises:
        TypeError: ``obj`` is not JSON serialisable (nothing is written).
        OSError: the file cannot be written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = jsonable(obj)  # fails before anything is written
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f, indent=1, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _restore_inf(point: dict) -> dict:
    return {k: (float(v) if v in ("inf", "-inf") else v) for k, v in point.items()}




def restore_inf(x):
    """Inverse of :func:`jsonable` for infinities: the strings ``"inf"``/``"-inf"`` (at any depth of dicts
    and lists) back to ``float``; everything else unchanged.

    Args:
        x: a loaded JSON value.

    Returns:
        The copy with infinities restored.
    """
    if isinstance(x, str) and x in ("inf", "-inf"):
        return float(x)
    if isinstance(x, dict):
        return {k: restore_inf(v) for k, v in x.items()}
    if isinstance(x, list):
        return [restore_inf(v) for v in x]
    return x


def thread_settings() -> dict:
    """The BLAS/XLA thread settings in force (environment and threadpoolctl's view), for result metadata.

    Returns:
        ``{"environment": {variable: value or None}, "blas_pools": [{"api", "threads"}, ...]}``.
    """
    env = {k: os.environ.get(k) for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "XLA_FLAGS")}
    try:
        from threadpoolctl import threadpool_info

        pools = [{"api": p.get("internal_api"), "threads": p.get("num_threads")} for p in threadpool_info()]
    except Exception:  # threadpoolctl cannot inspect every build
        pools = []
    return {"environment": env, "blas_pools": pools}


def machine_info() -> dict:
    """Platform, CPU count and JAX backend/devices (no host name).

    Returns:
        ``{"platform", "machine", "processor", "python_implementation", "cpu_count", "jax_backend",
        "jax_devices"}``.
    """
    import jax

    return {"platform": platform.platform(), "machine": platform.machine(),
            "processor": platform.processor(), "python_implementation": platform.python_implementation(),
            "cpu_count": os.cpu_count(), "jax_backend": jax.default_backend(),
            "jax_devices": [str(d) for d in jax.devices()]}


def run_metadata() -> dict:
    """Versions, machine (no host name), thread settings and a UTC timestamp, for any result file.

    Returns:
        ``{"versions", "machine", "threads", "timestamp"}`` (:func:`versions`, :func:`machine_info`,
        :func:`thread_settings`, ISO 8601 seconds).
    """
    return {"versions": versions(), "machine": machine_info(), "threads": thread_settings(),
            "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}


def write_file_atomic(path, write) -> None:
    """Write a file atomically through ``write(temporary_path)``: a temporary file in the same folder (same
    suffix, so that writers that read the format from the name keep working), then ``os.replace``. On any
    failure the previous file, if any, is untouched and the temporary file is removed.

    Args:
        path: the destination.
        write: a callable that writes the whole file at the path it is given (e.g. ``fig.savefig``).

    Raises:
        Exception: whatever ``write`` raises (after the clean-up).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def new_figure(nrows: int, ncols: int, figsize: tuple):
    """A matplotlib ``Figure`` with a grid of axes, made without pyplot: the process's backend and pyplot's
    figure list are left alone (inline plots in a notebook keep working).

    Args:
        nrows: rows of axes.
        ncols: columns of axes.
        figsize: ``(width, height)`` in inches.

    Returns:
        ``(fig, axes)`` with ``axes`` a ``(nrows, ncols)`` array.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, squeeze=False)
