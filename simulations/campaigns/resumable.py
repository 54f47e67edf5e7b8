"""Resumable runs that lose nothing: one JSON record per finished point, written atomically.

A *point* is a JSON-serialisable dict of keyword arguments. :func:`run_points` calls ``fn(**point)``
for every point whose record is not on disk yet and writes ``{point, result, seconds, versions,
finished_at}`` to ``out_dir/<point_id>.json`` (:func:`~simulations.campaigns.records.write_json_atomic`):
an interrupt loses at most the points being computed, never a finished one, and a rerun skips every
finished point. Where the points run is an :class:`Executor`:

* ``Executor(workers=1)`` (default): in this process; ``workers > 1``: a local process pool (``spawn``,
  safe with JAX). Each worker is pinned to ``cores // workers`` XLA and BLAS threads before it computes
  anything (:func:`solvable_attention.runtime.pin_worker_threads`), so that workers × threads never exceed
  the cores; more workers than cores is refused. Every record carries the thread settings it ran under.
  ``compilation_cache=<folder>`` gives the workers a persistent compilation cache
  (:func:`solvable_attention.runtime.enable_compilation_cache`): a worker loads a program another process
  compiled before instead of compiling it again.
* ``Executor(backend="dask", workers=W, address=None)``: tasks of a Dask ``distributed`` cluster
  (optional extra ``pip install -e '.[distributed]'``); ``address=None`` starts a local cluster of ``W``
  single-threaded processes, ``address="tcp://host:8786"`` uses an existing scheduler (``dask scheduler``
  and ``dask worker tcp://host:8786 --nthreads 1`` on each node, or dask-jobqueue). Workers only compute
  and return records: every record is written here, so no shared file system is needed.

(Warm-started *continuation* along a parameter grid is a different thing: see
:func:`state_evolution.sweep_state_evolution`.)
"""

from __future__ import annotations

import hashlib
import json
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from solvable_attention.runtime import (compilation_cache_folder, pin_worker_threads, thread_environment,
                                       threads_per_worker)

from .records import jsonable, restore_inf, thread_settings, versions, write_json_atomic

BACKENDS = ("process", "dask")


@dataclass(frozen=True)
class Executor:
    """Where the points of a resumable run are computed.

    Attributes:
        workers: processes (``backend="process"``) or Dask workers of a local cluster; an integer ≥ 1.
        backend: ``"process"`` (this machine) or ``"dask"``.
        address: scheduler address of an existing Dask cluster (``backend="dask"`` only).
        compilation_cache: folder of the persistent compilation cache of the local worker processes
            (``backend="process"``, ``workers > 1``), checked and created here; ``None``: none. With ``workers = 1``
            the points run in this process, which keeps whatever cache it has enabled
            (:func:`solvable_attention.runtime.enable_compilation_cache`), so a folder is refused there, as on
            Dask (its workers are not started by this package).

    Raises:
        ValueError: a backend outside :data:`BACKENDS`, ``workers`` not a positive integer, an
            ``address`` without ``backend="dask"``, more local worker processes than cores, or a
            ``compilation_cache`` that is not a writable folder or is given without local worker processes.
    """

    workers: int = 1
    backend: str = "process"
    address: str | None = None
    compilation_cache: str | None = None

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if not (isinstance(self.workers, int) and not isinstance(self.workers, bool) and self.workers >= 1):
            raise ValueError(f"workers must be a positive integer, got {self.workers!r}")
        if self.address is not None and self.backend != "dask":
            raise ValueError("address (a Dask scheduler) needs backend='dask'")
        if self.backend == "process" and self.workers > 1:
            threads_per_worker(self.workers)  # raises for more workers than cores
        if self.compilation_cache is not None:
            if self.backend != "process" or self.workers == 1:
                raise ValueError("compilation_cache is for local worker processes (backend='process', workers > 1); "
                                 "in this process call solvable_attention.runtime.enable_compilation_cache")
            object.__setattr__(self, "compilation_cache", str(compilation_cache_folder(self.compilation_cache)))

    @property
    def threads(self) -> int:
        """BLAS/XLA threads of each worker process (``cores // workers``; ``1`` on a Dask cluster).

        Returns:
            The per-worker thread cap (for ``workers = 1``, in-process: the cores of this machine).
        """
        if self.backend == "dask":
            return 1
        return threads_per_worker(self.workers)


def point_id(point: dict) -> str:
    """Stable identifier of a point: a hash of its canonical JSON.

    Args:
        point: a JSON-serialisable keyword dict (``±inf`` allowed).

    Returns:
        The first 16 hex digits of the SHA-1 of its sorted-key JSON (:func:`~.records.jsonable`).

    Raises:
        TypeError: a value that is not JSON serialisable.
    """
    blob = json.dumps(jsonable(point), sort_keys=True, separators=(",", ":"))
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


def compute_record(fn, point: dict) -> dict:
    """``fn(**point)`` and its record ``{point, result, seconds, versions, threads, finished_at}`` (no I/O).

    Args:
        fn: the point function; a result with ``to_dict()`` is stored through it.
        point: its keyword arguments (``"inf"`` strings are restored to ``float``).

    Returns:
        The record: ``point``, JSON-ready ``result``, wall-clock ``seconds``, :func:`~.records.versions`,
        the thread settings it ran under (:func:`~.records.thread_settings`) and the UTC ``finished_at``
        time (ISO 8601).

    Raises:
        TypeError: a result that is not JSON serialisable; anything ``fn`` raises propagates.
    """
    t0 = time.perf_counter()
    result = fn(**restore_inf(point))
    if hasattr(result, "to_dict"):
        result = result.to_dict()
    return {"point": point, "result": jsonable(result), "seconds": time.perf_counter() - t0,
            "versions": versions(), "threads": thread_settings(),
            "finished_at": datetime.now(timezone.utc).isoformat()}


def store_record(out_dir, record: dict) -> str:
    """Write ``record`` atomically to ``out_dir/<point_id>.json``.

    Args:
        out_dir: the folder of the records (created if missing).
        record: a record of :func:`compute_record`.

    Returns:
        The point's id (:func:`point_id`).

    Raises:
        TypeError: a record that is not JSON serialisable (nothing is written then).
        OSError: the file cannot be written.
    """
    pid = point_id(record["point"])
    write_json_atomic(Path(out_dir) / f"{pid}.json", record)
    return pid


def pending(points, out_dir) -> list[dict]:
    """The points without a finished record in ``out_dir``.

    Args:
        points: keyword dicts.
        out_dir: the folder of the records.

    Returns:
        Those of ``points`` whose ``<point_id>.json`` is missing, in order.
    """
    out_dir = Path(out_dir)
    return [p for p in points if not (out_dir / f"{point_id(p)}.json").exists()]


def run_points(fn, points, out_dir, *, executor: Executor | None = None, progress: bool = True,
               desc: str = "points", on_start=None, on_done=None) -> list[dict]:
    """Run ``fn(**point)`` for each point without a record in ``out_dir``; return all records of ``points``.

    Args:
        fn: the point function; picklable (a module-level function) unless ``executor`` runs in-process.
        points: iterable of JSON-serialisable keyword dicts (``±inf`` allowed).
        out_dir: folder of the records, one ``<point_id>.json`` each (created if missing).
        executor: where to compute (default :class:`Executor`, this process).
        progress: a tqdm bar of finished/total points with rate and ETA; ``desc`` labels it.
        on_start: optional callback ``on_start(pending_points)`` before computing, with the points to compute
            in the order the workers take them.
        on_done: optional callback ``on_done(point, seconds)`` after each point computed here, with the
            seconds it took (e.g. a progress bar shared by several sweeps; then pass ``progress=False``).

    Returns:
        The records ``{point, result, seconds, versions, finished_at}`` of ``points`` found on disk, in
        the order of ``points``.

    Raises:
        TypeError: a point or result that is not JSON serialisable.
        ImportError: ``backend="dask"`` without ``dask.distributed`` installed.
        Exception: whatever ``fn`` raises (records finished before are kept).
    """
    from tqdm.auto import tqdm

    executor = executor or Executor()
    points = [dict(p) for p in points]
    todo = pending(points, out_dir)
    if on_start is not None:
        on_start(todo)
    with tqdm(total=len(points), initial=len(points) - len(todo), disable=not progress, desc=desc,
              unit="point", dynamic_ncols=True) as bar:
        if not todo:
            pass
        elif executor.backend == "dask":
            _run_dask(fn, todo, out_dir, executor.workers, executor.address, bar, on_done)
        elif executor.workers == 1:
            for p in todo:
                record = compute_record(fn, p)
                store_record(out_dir, record)
                bar.update()
                if on_done is not None:
                    on_done(p, record["seconds"])
        else:
            import multiprocessing as mp

            with ProcessPoolExecutor(max_workers=executor.workers, mp_context=mp.get_context("spawn"),
                                     initializer=pin_worker_threads,
                                     initargs=(executor.threads, executor.compilation_cache)) as pool:
                futures = {pool.submit(compute_record, fn, p): p for p in todo}
                for fut in as_completed(futures):
                    record = fut.result()
                    store_record(out_dir, record)
                    bar.update()
                    if on_done is not None:
                        on_done(futures[fut], record["seconds"])
    return load_records(out_dir, points)


def _run_dask(fn, todo, out_dir, workers, address, bar, on_done) -> None:
    """The points of ``todo`` as tasks of a Dask cluster; each record is stored as it arrives."""
    try:
        from dask.distributed import Client, LocalCluster, as_completed as dask_completed
    except ImportError as exc:  # the optional extra
        raise ImportError("backend='dask' needs dask.distributed: pip install -e '.[distributed]'") from exc

    cluster = None
    if address is None:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                               env=thread_environment(1))  # each worker: one XLA/BLAS thread
    try:
        with Client(address or cluster) as client:
            futures = {client.submit(compute_record, fn, p, pure=False): i for i, p in enumerate(todo)}
            for fut in dask_completed(list(futures)):
                record = fut.result()
                store_record(out_dir, record)
                bar.update()
                if on_done is not None:
                    on_done(todo[futures[fut]], record["seconds"])
    finally:
        if cluster is not None:
            cluster.close()


def load_records(out_dir, points=None) -> list[dict]:
    """Finished records in ``out_dir`` (only those of ``points`` if given).

    Args:
        out_dir: the folder of the records.
        points: keyword dicts, or ``None`` for every record in the folder.

    Returns:
        The records as stored (``±inf`` still as strings; see :func:`~.records.restore_inf`): in the
        order of ``points``, or sorted by file name.
    """
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
