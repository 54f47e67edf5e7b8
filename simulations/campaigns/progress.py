"""One progress bar for a long run made of several sweeps, with an ETA weighted by each point's cost.

A figure's reproduction runs sweeps whose points cost very different times (a theory curve, a simulation
at ``α = 0.02`` or at ``α = 1``). A bar that counts points predicts the remaining time from the average
point, which is wrong whenever the cheap points come first. :class:`WorkTracker` counts *estimated seconds*
instead: the sweeps are announced first (:meth:`WorkTracker.expect`), each with the estimated cost of its
points still to compute, and the bar advances by a point's estimate when it finishes. The ETA is then
``elapsed × (remaining estimate / finished estimate)``: right whenever the estimates are right *relative
to each other*, whatever their absolute scale (the machine, the worker count).

The tracker also checks itself: when the finished estimate first reaches :data:`ETA_CHECK_FRACTION` of the
total it records the predicted remaining time, and :meth:`WorkTracker.summary` compares it with the time
that remained.
"""

from __future__ import annotations

import time

ETA_CHECK_FRACTION = 0.1


class WorkTracker:
    """A cost-weighted progress bar (tqdm) over the sweeps of one run.

    Args:
        desc: the bar's label.
        cost: ``cost(point) → float``, the estimated seconds of one point (any common scale).
        enabled: draw the bar (the bookkeeping runs either way).
    """

    def __init__(self, desc: str, cost, *, enabled: bool = True):
        from tqdm.auto import tqdm

        self.cost = cost
        self.total = 0.0
        self.done = 0.0
        self.t0 = time.perf_counter()
        self.check: dict | None = None
        self.bar = tqdm(total=1.0, desc=desc, disable=not enabled, dynamic_ncols=True, smoothing=0.0,
                        bar_format="{l_bar}{bar}| [{elapsed}<{remaining}]")

    def expect(self, points) -> None:
        """Add the estimated cost of ``points`` (those still to compute) to the total.

        Args:
            points: point dicts of a sweep to come.
        """
        self.total += sum(self.cost(p) for p in points)
        self.bar.total = max(self.total, 1e-9)
        self.bar.refresh()

    def advance(self, point) -> None:
        """One point finished: advance by its estimated cost (used as ``run_points(on_done=...)``).

        Args:
            point: the finished point's dict.
        """
        c = self.cost(point)
        self.done += c
        self.bar.update(c)
        if self.check is None and self.total > 0 and self.done >= ETA_CHECK_FRACTION * self.total:
            elapsed = time.perf_counter() - self.t0
            self.check = {"fraction": self.done / self.total, "elapsed_s": elapsed,
                          "predicted_remaining_s": elapsed * (self.total - self.done) / self.done}

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
        elapsed = time.perf_counter() - self.t0
        check = None
        if self.check is not None:
            actual = elapsed - self.check["elapsed_s"]
            check = dict(self.check, actual_remaining_s=actual,
                         relative_error=(self.check["predicted_remaining_s"] - actual) / actual if actual > 0 else None)
        return {"estimated_total": self.total, "elapsed_s": elapsed, "eta_check": check}
