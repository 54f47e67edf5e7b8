"""The cost-weighted progress tracker of simulations/campaigns/progress.py: its ETA follows the formula of
the module docstring (per-kind calibration with a prior, in-flight points on W workers), on a replayed clock."""

import pytest

from simulations.campaigns.progress import ETA_CHECK_FRACTION, PRIOR_WEIGHT, WorkTracker, point_kind


def _tracker(now, workers=2):
    return WorkTracker("test", lambda p: p["c"], workers=workers, enabled=False, clock=lambda: now[0])


def test_eta_follows_the_in_flight_points_and_the_calibration():
    now = [0.0]
    tracker = _tracker(now)
    points = [{"c": 10.0, "D": 1}, {"c": 10.0, "D": 1}, {"c": 20.0, "D": 1}, {"c": 20.0, "D": 1}]
    tracker.expect(points)
    tracker.start(points)  # p0 and p1 start at t = 0 on the two workers
    assert tracker.eta() is None
    now[0] = 20.0
    tracker.advance(points[0], 20.0)  # took twice its estimate; p2 starts now
    s = (PRIOR_WEIGHT + 20.0) / (PRIOR_WEIGHT + 10.0)
    in_flight = max(s * 10 - 20.0, 0.0) + s * 20  # p1 (running 20 s), p2 (just started)
    not_started = s * 20  # p3
    assert tracker.eta() == pytest.approx((in_flight + not_started) / 2, rel=1e-12)
    # 10 / 60 of the estimate is done: the check was taken at this moment, with this prediction
    assert tracker.check["fraction"] == pytest.approx(10 / 60) and 10 / 60 >= ETA_CHECK_FRACTION
    assert tracker.check["predicted_remaining_s"] == pytest.approx(tracker.eta())
    for t, p in ((25.0, points[1]), (60.0, points[2]), (70.0, points[3])):
        now[0] = t
        tracker.advance(p, 40.0)
    summary = tracker.close()
    eta = summary["eta_check"]
    assert eta["actual_remaining_s"] == pytest.approx(50.0)
    assert eta["relative_error"] == pytest.approx((eta["predicted_remaining_s"] - 50.0) / 50.0)
    assert tracker.eta() == 0.0


def test_kinds_are_calibrated_apart():
    """A slow theory point does not make the simulations' estimate slower."""
    now = [0.0]
    tracker = _tracker(now, workers=1)
    theory, sim = {"c": 10.0}, {"c": 10.0, "D": 150}
    assert (point_kind(theory), point_kind(sim)) == ("theory", "simulation")
    tracker.expect([theory, sim])
    tracker.start([theory])
    now[0] = 50.0
    tracker.advance(theory, 50.0)  # five times its estimate
    assert tracker.eta() == pytest.approx(10.0)  # the simulation keeps its prior calibration 1


def test_no_work_means_no_eta_check():
    tracker = WorkTracker("test", lambda p: 1.0, enabled=False)
    tracker.expect([])
    assert tracker.close()["eta_check"] is None
