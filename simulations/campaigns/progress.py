"""One progress bar for a long run made of several sweeps, with an ETA weighted by each point's cost.

A figure's reproduction runs sweeps whose points cost very different times (a theory curve, a simulation
at ``α = 0.02`` or at ``α = 1``). A bar that counts points predicts the remaining time from the average
point, which is wrong whenever the cheap points come first. :class:`WorkTracker` counts *estimated cost*
instead: the sweeps are announced first (:meth:`WorkTracker.expect`), each with the estimated cost of its
points still to compute, and the bar advances by a point's estimate when it finishes.

The estimates are in seconds of a reference machine; the ETA calibrates them, per kind of point (theory,
simulation: their errors differ), by the finished points' measured seconds, and follows the points in
flight on the ``W`` workers (a pool takes the points in order, each worker the next one when it is free)::

    s_k = (P + Σ_done,k seconds) / (P + Σ_done,k cost)       (seconds per estimated second, kind k; prior 1)
    ETA = [ Σ_k s_k · (cost of kind k not started) + Σ_in flight max(s_k · cost_i − running time_i, 0) ] / W

with a prior weight ``P`` (:data:`PRIOR_WEIGHT`). It is right whenever the estimates are right *relative to
each other* within a kind, whatever the machine. Following the in-flight points matters when the points are few and large:
``elapsed × remaining/finished`` charges the time spent on unfinished points to the finished ones and
overestimates the ETA up to ``W``-fold early on.

The tracker also checks itself: when the finished estimate first reaches :data:`ETA_CHECK_FRACTION` of the
total it records the predicted remaining time, and :meth:`WorkTracker.summary` compares it with the time
that remained.
"""

from __future__ import annotations

import time
from collections import deque

ETA_CHECK_FRACTION = 0.1
# Prior weight (in estimated seconds) of the reference machine's calibration s_k = 1: one or two points of a kind
# do not swing the ETA by their own luck (theory curves of equal estimate measured 54–264 s).
PRIOR_WEIGHT = 100.0


def point_kind(point: dict) -> str:
    """``"simulation"`` for a point with a dimension ``D``, else ``"theory"`` (the two calibrations of the ETA).

    Args:
        point: a sweep point's dict.

    Returns:
        The kind.
    """
    return "simulation" if "D" in point else "theory"


class WorkTracker:
    """A cost-weighted progress bar (tqdm) over the sweeps of one run.

    Args:
        desc: the bar's label.
        cost: ``cost(point) → float``, the estimated seconds of one point (any common scale).
        workers: the workers computing the points at once (``W``).
        enabled: draw the bar (the bookkeeping runs either way).
        clock: the time source (``time.perf_counter``; a replay passes its own).
    """

    def __init__(self, desc: str, cost, *, workers: int = 1, enabled: bool = True, clock=time.perf_counter):
        from tqdm.auto import tqdm

        self.cost, self.clock = cost, clock
        self.workers = max(1, int(workers))
        self.total = self.done = self.done_seconds = 0.0
        self.kind_total: dict = {}
        self.kind_done: dict = {}  # kind → [cost, seconds]
        self.t0 = clock()
        self.queue: deque = deque()
        self.running: dict = {}  # id(point) → (cost, start time)
        self.check: dict | None = None
        self.bar = tqdm(total=1.0, desc=desc, disable=not enabled, dynamic_ncols=True,
                        bar_format="{l_bar}{bar}| [{elapsed}{postfix}]")

    def expect(self, points) -> None:
        """Add the estimated cost of ``points`` (those still to compute) to the total.

        Args:
            points: point dicts of a sweep to come.
        """
        for p in points:
            c = self.cost(p)
            self.total += c
            self.kind_total[point_kind(p)] = self.kind_total.get(point_kind(p), 0.0) + c
        self.bar.total = max(self.total, 1e-9)
        self.bar.refresh()

    def start(self, points) -> None:
        """A sweep starts computing ``points`` (in the order the workers take them; ``run_points(on_start=...)``).

        Args:
            points: the sweep's pending point dicts, in submission order.
        """
        self.queue = deque(points)
        self.running = {}
        now = self.clock()
        while self.queue and len(self.running) < self.workers:
            p = self.queue.popleft()
            self.running[id(p)] = (self.cost(p), now, point_kind(p))

    def eta(self) -> float | None:
        """The predicted remaining seconds (module docstring), or ``None`` before any point finished.

        Returns:
            The ETA in seconds.
        """
        if self.done <= 0:
            return None
        now = self.clock()
        scale = {k: (PRIOR_WEIGHT + d[1]) / (PRIOR_WEIGHT + d[0]) for k, d in self.kind_done.items()}
        s = lambda k: scale.get(k, 1.0)  # noqa: E731
        in_flight = sum(max(s(k) * c - (now - t), 0.0) for c, t, k in self.running.values())
        work = in_flight
        for k, tot in self.kind_total.items():
            running = sum(c for c, _, kk in self.running.values() if kk == k)
            work += s(k) * max(tot - self.kind_done.get(k, [0.0, 0.0])[0] - running, 0.0)
        return work / self.workers

    def advance(self, point, seconds: float) -> None:
        """One point finished: advance by its estimated cost (``run_points(on_done=...)``).

        Args:
            point: the finished point's dict (the same object as given to :meth:`start`, if it was).
            seconds: the seconds it took (its record's ``seconds``).
        """
        c = self.cost(point)
        self.done += c
        self.done_seconds += float(seconds)
        d = self.kind_done.setdefault(point_kind(point), [0.0, 0.0])
        d[0] += c
        d[1] += float(seconds)
        if self.running.pop(id(point), None) is not None and self.queue:
            p = self.queue.popleft()
            self.running[id(p)] = (self.cost(p), self.clock(), point_kind(p))
        eta = self.eta()
        self.bar.set_postfix_str(f"ETA {_clock(eta)}", refresh=False)
        self.bar.update(c)
        if self.check is None and self.total > 0 and self.done >= ETA_CHECK_FRACTION * self.total:
            self.check = {"fraction": self.done / self.total, "elapsed_s": self.clock() - self.t0,
                          "predicted_remaining_s": eta}

    def close(self) -> dict:
        """Close the bar and return :meth:`summary`.

        Returns:
            The summary dict.
        """
        self.bar.close()
        return self.summary()

    def summary(self) -> dict:
        """The ETA check: what was predicted at :data:`ETA_CHECK_FRACTION` of the work, and what remained.

        Returns:
            ``{"estimated_total", "elapsed_s", "eta_check"}``; ``eta_check`` is ``None`` when the run had no
            work to do, else ``{"fraction", "elapsed_s", "predicted_remaining_s", "actual_remaining_s",
            "relative_error"}``.
        """
        elapsed = self.clock() - self.t0
        check = None
        if self.check is not None:
            actual = elapsed - self.check["elapsed_s"]
            check = dict(self.check, actual_remaining_s=actual,
                         relative_error=(self.check["predicted_remaining_s"] - actual) / actual if actual > 0 else None)
        return {"estimated_total": self.total, "elapsed_s": elapsed, "eta_check": check}


def _clock(seconds) -> str:
    if seconds is None:
        return "?"
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"
