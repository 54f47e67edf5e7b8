"""Sweeps that lose nothing: one JSON file per finished point, written atomically.

A *point* is a JSON-serialisable dict of keyword arguments. :func:`run_sweep` calls
``fn(**point)`` for every point whose record is not on disk yet and writes
``{point, result, seconds, versions, finished_at}`` to ``out_dir/<point_id>.json`` through a
temporary file and ``os.replace`` (atomic on POSIX): an interrupt loses at most the points
being computed, never a finished one, and a rerun skips every finished point.
``workers > 1`` runs points in a process pool (``spawn``, safe with JAX).
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


def _run_one(fn, point: dict, out_dir: str) -> str:
    t0 = time.perf_counter()
    result = fn(**_restore_inf(point))
    if hasattr(result, "to_dict"):
        result = result.to_dict()
    record = {"point": point, "result": result, "seconds": time.perf_counter() - t0,
              "versions": versions(), "finished_at": datetime.now(timezone.utc).isoformat()}
    write_json_atomic(Path(out_dir) / f"{point_id(point)}.json", record)
    return point_id(point)


def pending(points, out_dir) -> list[dict]:
    """The points without a finished record in ``out_dir``."""
    out_dir = Path(out_dir)
    return [p for p in points if not (out_dir / f"{point_id(p)}.json").exists()]


def run_sweep(fn, points, out_dir, *, workers: int = 1, progress: bool = True, desc: str = "sweep") -> list[dict]:
    """Run ``fn(**point)`` for each unfinished point; return all records of ``points``.

    ``fn`` must be picklable (a module-level function) when ``workers > 1``.
    """
    from tqdm.auto import tqdm

    points = [dict(p) for p in points]
    todo = pending(points, out_dir)
    bar = tqdm(total=len(points), initial=len(points) - len(todo), disable=not progress, desc=desc)
    if workers <= 1:
        for p in todo:
            _run_one(fn, p, str(out_dir))
            bar.update()
    else:
        import multiprocessing as mp

        with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
            futures = [pool.submit(_run_one, fn, p, str(out_dir)) for p in todo]
            for fut in as_completed(futures):
                fut.result()
                bar.update()
    bar.close()
    return load_records(out_dir, points)


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
