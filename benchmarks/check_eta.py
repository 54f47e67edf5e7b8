#!/usr/bin/env python
"""Replay a figure reproduction from its cache to check the progress bar's ETA (a script, not a test).

    python benchmarks/check_eta.py DIR [--workers 2] [--order simulation theory theory_inset]

``DIR`` is the ``--out`` folder of a reproduction, with its ``cache/`` (``docs/figures`` holds no cache).

For each figure cached under ``<out>/cache/<figure>/<sweep>/`` (the records of ``run_points``, each with the
``seconds`` it took), the sweeps are replayed in the order the figure runs them (simulations, theory, inset;
a sweep starts when the previous one has finished), each point going to the first free worker as in the
process pool. At the moment the finished *estimated* cost (``simulations.figures.common.estimated_cost``)
first reaches 10 % of the total, the tracker's ETA (``simulations/campaigns/progress.py``: the estimates
calibrated by the finished points' seconds, the in-flight work counted) is compared with the replayed time
that actually remained. The figure runs also record this check live
(``timings.progress.eta_check`` in each ``<figure>.json``).
"""

from __future__ import annotations

import argparse
import heapq
import json
from pathlib import Path

from simulations.campaigns.progress import WorkTracker
from simulations.figures.common import estimated_cost

ORDER = ("simulation", "theory", "theory_inset")


def replay_eta(records_by_sweep, workers, fraction=0.1):
    """Replay the sweeps on ``workers`` workers and drive a :class:`WorkTracker` with the replayed clock.

    Returns ``(total replayed seconds, {"at_s", "predicted_remaining_s", "actual_remaining_s",
    "relative_error"})``: the tracker's ETA when the finished estimate first reaches ``fraction`` of the total,
    against the replayed time that remained.
    """
    now = [0.0]
    tracker = WorkTracker("replay", estimated_cost, workers=workers, enabled=False, clock=lambda: now[0])
    points = [[dict(rec["point"]) for rec in sweep] for sweep in records_by_sweep]
    for sweep in points:
        tracker.expect(sweep)
    check, start = None, 0.0
    for sweep, recs in zip(points, records_by_sweep):
        now[0] = start
        tracker.start(sweep)
        free = [start] * workers
        heapq.heapify(free)
        done = []
        for p, rec in zip(sweep, recs):
            t = heapq.heappop(free) + rec["seconds"]
            heapq.heappush(free, t)
            done.append((t, id(p), p, rec["seconds"]))
        for t, _, p, sec in sorted(done, key=lambda x: (x[0], x[1])):
            now[0] = t
            tracker.advance(p, sec)
            if check is None and tracker.done >= fraction * tracker.total:
                check = {"at_s": t, "predicted_remaining_s": tracker.eta()}
        start = max(t for t, *_ in done) if done else start
    if check is not None:
        actual = start - check["at_s"]
        check.update(actual_remaining_s=actual,
                     relative_error=(check["predicted_remaining_s"] - actual) / actual if actual > 0 else None)
    return start, check


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", help="the --out folder of a reproduction")
    ap.add_argument("--workers", type=int, default=2, help="workers of the replayed pool (default 2)")
    ap.add_argument("--order", nargs="+", default=list(ORDER), choices=ORDER,
                    help="the order in which the sweeps are replayed (default: the figures' own)")
    args = ap.parse_args(argv)
    for fig in sorted((Path(args.out) / "cache").iterdir()):
        sweeps = []
        for name in args.order:
            folder = fig / name
            if folder.is_dir():
                recs = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
                sweeps.append(sorted(recs, key=lambda r: r["finished_at"]))
        total, check = replay_eta(sweeps, args.workers)
        if check:
            print(f"{fig.name}: replayed {total:.0f} s; at 10 % ({check['at_s']:.0f} s) ETA "
                  f"{check['predicted_remaining_s']:.0f} s vs {check['actual_remaining_s']:.0f} s remaining "
                  f"({100 * check['relative_error']:+.0f} %)")


if __name__ == "__main__":
    main()
