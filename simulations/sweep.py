"""Sweeps that lose nothing: one JSON file per finished point, written atomically.

A *point* is a JSON-serialisable dict of keyword arguments. :func:`run_sweep` calls
``fn(**point)`` for every point whose record is not on disk yet and writes
``{point, result, seconds, versions, finished_at}`` to ``out_dir/<point_id>.json`` through a
temporary file and ``os.replace`` (atomic on POSIX): an interrupt loses at most the points
being computed, never a finished one, and a rerun skips every finished point.
Backends (``backend=``):

* ``"process"`` (default): ``workers > 1`` runs points in a local process pool (``spawn``, safe
  with JAX); ``workers = 1`` runs them in this process.
* ``"dask"``: points run as tasks of a Dask ``distributed`` cluster (optional extra
  ``pip install -e '.[distributed]'``). ``address=None`` starts a :class:`LocalCluster` of
  ``workers`` single-threaded processes on this machine; ``address="tcp://host:8786"`` (or the
  ``SA_DASK_SCHEDULER`` environment variable) uses an existing scheduler, e.g. one started with
  ``dask scheduler`` and ``dask worker tcp://host:8786 --nthreads 1`` on each node (or by
  dask-jobqueue / dask-kubernetes). The workers need this package installed; they only compute and
  return records: every record is written here, by the submitting process, so no shared file
  system is needed.

``backend=None`` reads the ``SA_SWEEP_BACKEND`` environment variable (default ``"process"``).
With every backend a record is written the moment its point finishes, so a killed sweep keeps
all finished points and its rerun computes only the others.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path


def versions() -> dict:
    """Versions of Python and the numerical stack (recorded next to every result)."""
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("jax", "jaxlib", "optax", "numpy", "scipy", "solvable-attention"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def _jsonable(x):
    """JSON-ready copy of ``x``: ``±inf`` as ``"inf"``/``"-inf"`` strings (restored on load), numpy/JAX
    scalars and arrays as Python numbers and lists, objects with ``to_dict()`` through it."""
    if isinstance(x, float) and math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if hasattr(x, "to_dict"):
        return _jsonable(x.to_dict())
    if hasattr(x, "tolist") and not isinstance(x, (str, bytes)):  # numpy / JAX scalars and arrays
        return _jsonable(x.tolist())
    if x is None or isinstance(x, (str, bool, int, float)):
        return x
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def point_id(point: dict) -> str:
    """Stable identifier of a point: a hash of its canonical JSON."""
    blob = json.dumps(_jsonable(point), sort_keys=True, separators=(",", ":"))
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def write_json_atomic(path, obj) -> None:
    """Write ``obj`` as JSON to ``path`` atomically: a temporary file in the same folder, ``fsync``,
    then ``os.replace`` (atomic on POSIX). On any failure the previous file, if any, is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = _jsonable(obj)  # fails before anything is written
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


def compute_record(fn, point: dict) -> dict:
    """``fn(**point)`` and its record ``{point, result, seconds, versions, finished_at}`` (no I/O)."""
    t0 = time.perf_counter()
    result = fn(**_restore_inf(point))
    if hasattr(result, "to_dict"):
        result = result.to_dict()
    return {"point": point, "result": _jsonable(result), "seconds": time.perf_counter() - t0,
            "versions": versions(), "finished_at": datetime.now(timezone.utc).isoformat()}


def store_record(out_dir, record: dict) -> str:
    """Write ``record`` atomically to ``out_dir/<point_id>.json``; returns the id."""
    pid = point_id(record["point"])
    write_json_atomic(Path(out_dir) / f"{pid}.json", record)
    return pid


def pending(points, out_dir) -> list[dict]:
    """The points without a finished record in ``out_dir``."""
    out_dir = Path(out_dir)
    return [p for p in points if not (out_dir / f"{point_id(p)}.json").exists()]


BACKENDS = ("process", "dask")


def run_sweep(fn, points, out_dir, *, workers: int = 1, progress: bool = True, desc: str = "sweep",
              backend: str | None = None, address: str | None = None) -> list[dict]:
    """Run ``fn(**point)`` for each unfinished point; return all records of ``points``.

    ``fn`` must be picklable (a module-level function) when ``workers > 1`` or ``backend="dask"``.
    ``address``: scheduler of an existing Dask cluster (``backend="dask"`` only; default the
    ``SA_DASK_SCHEDULER`` environment variable, else a local cluster of ``workers`` processes).
    ``backend=None``: the ``SA_SWEEP_BACKEND`` environment variable, else ``"process"`` (so a whole
    program's sweeps can be sent to Dask without changing its code, e.g. ``reproduce --dask``).
    The bar shows finished/total points with the rate and ETA of this run.
    """
    from tqdm.auto import tqdm

    backend = backend or os.environ.get("SA_SWEEP_BACKEND") or "process"

    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if not (isinstance(workers, int) and workers >= 1):
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    if address is not None and backend != "dask":
        raise ValueError("address (a Dask scheduler) needs backend='dask'")
    points = [dict(p) for p in points]
    todo = pending(points, out_dir)
    with tqdm(total=len(points), initial=len(points) - len(todo), disable=not progress, desc=desc,
              unit="point", dynamic_ncols=True) as bar:
        if not todo:
            pass
        elif backend == "dask":
            _run_dask(fn, todo, out_dir, workers, address or os.environ.get("SA_DASK_SCHEDULER"), bar)
        elif workers == 1:
            for p in todo:
                store_record(out_dir, compute_record(fn, p))
                bar.update()
        else:
            import multiprocessing as mp

            with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
                futures = [pool.submit(compute_record, fn, p) for p in todo]
                for fut in as_completed(futures):
                    store_record(out_dir, fut.result())
                    bar.update()
    return load_records(out_dir, points)


def _run_dask(fn, todo, out_dir, workers, address, bar) -> None:
    """The points of ``todo`` as tasks of a Dask cluster; each record is stored as it arrives."""
    try:
        from dask.distributed import Client, LocalCluster, as_completed as dask_completed
    except ImportError as exc:  # the optional extra
        raise ImportError("backend='dask' needs dask.distributed: pip install -e '.[distributed]'") from exc

    cluster = None
    if address is None:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
    try:
        with Client(address or cluster) as client:
            futures = [client.submit(compute_record, fn, p, pure=False) for p in todo]
            for fut in dask_completed(futures):
                store_record(out_dir, fut.result())
                bar.update()
    finally:
        if cluster is not None:
            cluster.close()


def load_records(out_dir, points=None) -> list[dict]:
    """Finished records in ``out_dir`` (only those of ``points`` if given)."""
    out_dir = Path(out_dir)
    if points is not None:
        files = [out_dir / f"{point_id(p)}.json" for p in points]
        files = [f for f in files if f.exists()]
    else:
        files = sorted(out_dir.glob("*.json"))
    records = []
    for f in files:
        with open(f) as fh:
            records.append(json.load(fh))
    return records
