"""Time limits and progress of long solves (state_evolution/solve_controls.py, fixed_point.solve_fixed_point)."""

import time

import numpy as np
import pytest

from solvable_attention.status import Status


def test_deadline_stops_a_slow_iteration():
    """A contraction x ↦ x/2 + 1 (fixed point 2) whose evaluation takes 50 ms, with a 0.12 s limit: at most 4
    evaluations start (the check precedes each), the result is the best iterate, not converged, and the status
    says the time limit was reached. Without the limit the same map converges (so the stop is the limit's)."""
    from state_evolution.fixed_point import solve_fixed_point
    from state_evolution.solve_controls import deadline_after

    def F(x):
        time.sleep(0.05)
        return 0.5 * x + 1.0

    sol = solve_fixed_point(F, np.zeros(1), tol=1e-12, max_iter=200, anderson=0, deadline=deadline_after(0.12))
    assert not sol.converged
    assert sol.status is Status.MAX_ITERATIONS and "time limit" in sol.status_message
    assert 1 <= sol.iterations <= 4
    free = solve_fixed_point(lambda x: 0.5 * x + 1.0, np.zeros(1), tol=1e-12, max_iter=200, anderson=0)
    assert free.converged and free.value[0] == pytest.approx(2.0, abs=1e-10)


def test_progress_callback_sees_every_evaluation():
    from state_evolution.fixed_point import solve_fixed_point

    seen = []
    sol = solve_fixed_point(lambda x: 0.5 * x + 1.0, np.zeros(1), tol=1e-10, max_iter=200, anderson=0,
                            progress=lambda n, res: seen.append((n, res)))
    assert [n for n, _ in seen] == list(range(1, sol.iterations + 1))
    assert seen[-1][1] <= 1e-10


@pytest.mark.parametrize("bad", [0, -1.0, float("inf"), float("nan"), "soon", True])
def test_bad_time_limit_is_refused_before_any_solve(bad):
    from state_evolution import solve_state_evolution

    t = time.perf_counter()
    with pytest.raises(ValueError, match="time_limit"):
        solve_state_evolution(0.1, 3.0, 0.5, 0.05, activation="identity", time_limit=bad)
    assert time.perf_counter() - t < 1.0  # refused up front, not after the pre-training solve


def test_time_limit_bounds_a_two_stage_solve(capsys):
    """A limit far below one map evaluation: both stages stop at once and say so (pre-training with the
    identity channel in closed form, fine-tuning sampled), and ``progress`` draws a bar on stderr."""
    from state_evolution import solve_state_evolution

    s = solve_state_evolution(0.1, 3.0, 0.5, 0.05, activation="identity", time_limit=1e-6, warn=False,
                              n_samples=2 ** 10, n_test_samples=2 ** 10, progress=True)
    assert not s.converged
    assert s.pretrain.status is Status.MAX_ITERATIONS and "time limit" in s.pretrain.status_message
    assert s.finetune.status is Status.MAX_ITERATIONS and "time limit" in s.finetune.status_message


def test_progress_bar_reports_a_solve(capsys):
    from state_evolution import solve_pretraining

    sol = solve_pretraining(0.1, 0.5, 0.05, activation="identity", progress=True)
    assert sol.converged
    assert "pre-training state evolution" in capsys.readouterr().err


def test_branch_check_cut_by_the_time_limit_is_not_certified():
    """A start that the time limit stopped before its first evaluation is left out of the branches, and the
    result loses its success: it is not certified as the lowest-objective branch (docs/theory.md §4.6)."""
    import dataclasses

    from state_evolution.fixed_point import FixedPointSolution
    from state_evolution.solve_controls import flag_unchecked_branches, skipped_by_time_limit

    def fp(method, iterations):
        return FixedPointSolution(np.zeros(3), False, iterations, np.inf, method, (), None, None,
                                  Status.MAX_ITERATIONS, "")

    assert skipped_by_time_limit(fp("time_limit", 0), found=["a solution"])
    assert not skipped_by_time_limit(fp("time_limit", 0), found=[])  # the first start is always kept
    assert not skipped_by_time_limit(fp("time_limit", 3), found=["a solution"])  # it ran: a branch
    assert not skipped_by_time_limit(fp("damped", 0), found=["a solution"])

    @dataclasses.dataclass(frozen=True)
    class Result:
        status: Status
        converged: bool
        status_message: str

    ok = Result(Status.CONVERGED, True, "residual 1e-6")
    assert flag_unchecked_branches(ok, 0) is ok
    cut = flag_unchecked_branches(ok, 2)
    assert cut.status is Status.MAX_ITERATIONS and not cut.converged and "2 start(s)" in cut.status_message


@pytest.mark.parametrize("bad", ["yes", 2, None])
def test_progress_must_be_a_flag(bad):
    from state_evolution import solve_pretraining

    with pytest.raises(ValueError, match="progress"):
        solve_pretraining(0.1, 0.5, 0.05, activation="identity", progress=bad)
