"""The cost-weighted progress tracker of simulations/campaigns/progress.py: the ETA it predicts at 10 %
of the work is elapsed × remaining/finished *estimated cost*, not a count of points."""

import time

import pytest

from simulations.campaigns.progress import ETA_CHECK_FRACTION, WorkTracker


def test_eta_is_weighted_by_the_estimated_costs():
    cost = lambda p: p["c"]  # noqa: E731
    tracker = WorkTracker("test", cost, enabled=False)
    tracker.expect([{"c": 1.0}, {"c": 9.0}])
    assert tracker.total == 10.0
    time.sleep(0.05)
    tracker.advance({"c": 1.0})  # 10 % of the estimated work: the check is taken now
    check = tracker.check
    assert check is not None and check["fraction"] == pytest.approx(ETA_CHECK_FRACTION)
    # a point count would predict 1 × elapsed; the cost weights predict 9 × elapsed
    assert check["predicted_remaining_s"] == pytest.approx(9.0 * check["elapsed_s"], rel=1e-12)
    time.sleep(0.05)
    tracker.advance({"c": 9.0})
    summary = tracker.close()
    eta = summary["eta_check"]
    assert eta["actual_remaining_s"] == pytest.approx(summary["elapsed_s"] - check["elapsed_s"], rel=1e-9)
    assert eta["relative_error"] == pytest.approx(
        (eta["predicted_remaining_s"] - eta["actual_remaining_s"]) / eta["actual_remaining_s"])


def test_no_work_means_no_eta_check():
    tracker = WorkTracker("test", lambda p: 1.0, enabled=False)
    tracker.expect([])
    assert tracker.close()["eta_check"] is None
