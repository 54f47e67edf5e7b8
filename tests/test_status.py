"""The status vocabulary (solvable_attention/status.py)."""

from types import SimpleNamespace

import pytest

from solvable_attention.status import SolveError, Status, raise_if_failed, worst


def test_only_convergence_is_successful_and_severity_orders_the_members():
    assert {s for s in Status if s.successful} == {Status.CONVERGED, Status.CONVERGED_AT_NOISE_FLOOR}
    assert worst() is Status.CONVERGED
    assert worst(Status.CONVERGED, Status.UNSTABLE_FIXED_POINT, Status.CONVERGED_AT_NOISE_FLOOR) \
        is Status.UNSTABLE_FIXED_POINT
    assert worst(Status.NOT_GLOBAL, Status.LEFT_DOMAIN) is Status.LEFT_DOMAIN
    assert Status("max_iterations") is Status.MAX_ITERATIONS and str(Status.CONVERGED) == "converged"


def test_raise_if_failed_raises_only_on_failure():
    ok = SimpleNamespace(status=Status.CONVERGED_AT_NOISE_FLOOR, status_message="fine")
    assert raise_if_failed(ok) is ok
    bad = SimpleNamespace(status=Status.UNSTABLE_FIXED_POINT, status_message="replicon 1.8")
    with pytest.raises(SolveError, match="unstable_fixed_point: x: replicon 1.8") as info:
        raise_if_failed(bad, "x")
    assert info.value.status is Status.UNSTABLE_FIXED_POINT and info.value.result is bad
