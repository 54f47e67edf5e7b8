"""The crash-safe runner of simulations/campaigns/resumable.py: resume, interrupt, process pool, Dask."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import resumable_helpers
from solvable_attention.runtime import available_cores, threads_per_worker
from simulations.campaigns.resumable import Executor, load_records, pending, point_id, run_points

HERE = Path(__file__).parent


def _points(n, log_dir, delay=0.0):
    return [dict(x=i, log_dir=str(log_dir), delay=delay) for i in range(n)]


def _check_complete(records, n):
    assert sorted(r["point"]["x"] for r in records) == list(range(n))
    for r in records:
        assert r["result"]["square"] == r["point"]["x"] ** 2
        for key in ("seconds", "versions", "finished_at"):
            assert key in r


def test_rerun_skips_finished_points(tmp_path):
    log = tmp_path / "log"
    points = _points(5, log)
    run_points(resumable_helpers.logged_square, points[:3], tmp_path / "out", progress=False)
    assert pending(points, tmp_path / "out") == points[3:]
    records = run_points(resumable_helpers.logged_square, points, tmp_path / "out", progress=False)
    _check_complete(records, 5)
    assert resumable_helpers.calls(log) == {i: 1 for i in range(5)}  # nothing computed twice


def test_killed_sweep_loses_no_finished_point_and_rerun_recomputes_none(tmp_path):
    """SIGKILL a sweep (no chance to clean up) mid-way; every finished record survives intact and
    the rerun computes only the missing points."""
    out, log, n = tmp_path / "out", tmp_path / "log", 30
    script = (f"import sys; sys.path.insert(0, {str(HERE)!r}); import resumable_helpers; "
              f"from simulations.campaigns.resumable import run_points; "
              f"run_points(resumable_helpers.logged_square, "
              f"[dict(x=i, log_dir={str(log)!r}, delay=0.25) for i in range({n})], {str(out)!r}, progress=False)")
    proc = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 120
    while len(list(out.glob("*.json"))) < 4:  # wait until a few points have finished
        assert proc.poll() is None, "the sweep ended before it could be interrupted"
        assert time.monotonic() < deadline, "the sweep made no progress"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = {json.loads(f.read_text())["point"]["x"] for f in out.glob("*.json")}  # each parses: atomic
    assert 4 <= len(finished) < n
    before = resumable_helpers.calls(log)
    assert all(before[x] == 1 for x in finished)

    records = run_points(resumable_helpers.logged_square, _points(n, log, 0.25), out, progress=False)
    _check_complete(records, n)
    after = resumable_helpers.calls(log)
    assert all(after[x] == 1 for x in finished), "a finished point was computed again"
    # at most the point being computed when the sweep was killed runs twice
    assert sum(after.values()) - n <= 1
    # the only other files are temporaries of a write the kill interrupted (never read as records)
    assert all(f.endswith(".tmp") for f in os.listdir(out) if not f.endswith(".json"))


def test_process_pool_gives_the_serial_records(tmp_path):
    points = _points(4, tmp_path / "log")
    records = run_points(resumable_helpers.logged_square, points, tmp_path / "pool", executor=Executor(workers=2), progress=False)
    _check_complete(records, 4)
    assert [point_id(r["point"]) for r in records] == [point_id(p) for p in points]  # order of the points


def test_dask_local_cluster_runs_and_resumes(tmp_path):
    """The Dask backend on a local cluster of 2 worker processes: same records as the serial runner,
    records written by the client, and a rerun skips every finished point."""
    import dask.distributed  # noqa: F401  (part of the [test] extra: a missing install fails here)

    log, out = tmp_path / "log", tmp_path / "dask"
    points = _points(6, log)
    run_points(resumable_helpers.logged_square, points[:2], out, progress=False)  # two finished before
    records = run_points(resumable_helpers.logged_square, points, out, executor=Executor(workers=2, backend="dask"),
                         progress=False)
    _check_complete(records, 6)
    assert resumable_helpers.calls(log) == {i: 1 for i in range(6)}
    pids = {r["result"]["pid"] for r in records if r["point"]["x"] >= 2}
    assert os.getpid() not in pids  # computed on the workers
    assert load_records(out, points) == records


def test_bad_backend_and_workers_are_named(tmp_path):
    with pytest.raises(ValueError, match="backend must be one of"):
        Executor(backend="spark")
    with pytest.raises(ValueError, match="workers must be a positive integer"):
        Executor(workers=0)
    with pytest.raises(ValueError, match="address"):
        Executor(address="tcp://x:1")


@pytest.mark.parametrize("backend", ["process", "dask"])
def test_workers_are_pinned_so_that_workers_times_threads_fit_the_cores(tmp_path, backend):
    """Two workers on this machine: each computes under XLA flags and BLAS pools capped at
    cores // 2 threads (process pool) or 1 (Dask), and every record says so."""
    if backend == "dask":
        import dask.distributed  # noqa: F401
    executor = Executor(workers=2, backend=backend)
    cap = executor.threads
    assert cap == (1 if backend == "dask" else max(1, available_cores() // 2))
    records = run_points(resumable_helpers.threads_in_effect, [{"x": 0}, {"x": 1}], tmp_path / backend,
                         executor=executor, progress=False)
    for r in records:
        assert f"intra_op_parallelism_threads={cap}" in r["result"]["xla_flags"]
        assert r["result"]["blas"] and set(r["result"]["blas"]) == {cap}
        assert r["threads"]["environment"]["OPENBLAS_NUM_THREADS"] == str(cap)


def test_thread_budget_arithmetic_and_oversubscription_refused():
    assert threads_per_worker(1, cores=2) == 2
    assert threads_per_worker(2, cores=2) == 1
    assert threads_per_worker(2, cores=16) == 8
    assert threads_per_worker(3, cores=16) == 5  # 3 × 5 = 15 ≤ 16
    with pytest.raises(ValueError, match="exceeds the 2 available cores"):
        threads_per_worker(3, cores=2)
    with pytest.raises(ValueError, match="workers"):
        Executor(workers=available_cores() + 1)
