"""The choice of the estimator's branch among several fixed points, on hand-made one-start solutions (the
objectives, standard errors and statuses are set here, so every expected outcome follows from the rule)."""

import warnings
from dataclasses import dataclass

import pytest

from solvable_attention.status import Status
from state_evolution.branch_selection import (RESOLUTION_SE, BranchSelectionWarning, merge_starts, objective_difference_se,
                                              select_branch, warn_if_unresolved)


@dataclass(frozen=True)
class _Record:
    objective_se: float


@dataclass(frozen=True)
class _Solution:
    """A one-start solution with the fields :func:`select_branch` reads and :func:`merge_starts` replaces."""
    name: str
    objective: float
    se: float = 0.001
    status: Status = Status.CONVERGED
    residual: float = 1e-6
    converged: bool = True
    iterations: int = 3
    seconds: float = 0.0
    status_message: str = ""
    branches: tuple = ()
    selection_resolved: bool = True

    def __post_init__(self):
        if not self.status_message:
            object.__setattr__(self, "status_message", f"message of {self.name}")
        if not self.branches:
            object.__setattr__(self, "branches", (_Record(self.se),))


def _same(a, b):
    return a.name == b.name


def test_lowest_objective_fixed_point_is_chosen_and_duplicates_dropped():
    a, b, a2 = _Solution("a", 1.0), _Solution("b", 0.9), _Solution("a", 1.0)
    chosen, distinct, status, message, _ = select_branch([a, b, a2], _same)
    assert chosen is b and [d.name for d in distinct] == ["a", "b"]
    assert status is Status.CONVERGED
    assert "first start reached a branch of objective 1" in message and "2 distinct fixed points" in message
    assert "not resolved" not in message  # 0.1 apart, s.e. of the difference 0.0014


def test_the_lower_objective_solution_stands_for_a_branch_found_twice():
    """Two starts on one branch (e.g. both û = 0): the lower objective represents it, even when found second."""
    first, second = _Solution("null", 0.3473), _Solution("null", 0.3471)
    chosen, distinct, _, _, _ = select_branch([first, second], _same)
    assert chosen is second and distinct == [second]


def test_objectives_within_the_monte_carlo_error_are_reported_unresolved():
    """Differences of 1 and 3 standard errors of the difference: only the first is unresolved (RESOLUTION_SE = 2)."""
    se = 0.001
    diff_se = objective_difference_se(_Solution("a", 0.0, se), _Solution("b", 0.0, se))
    assert diff_se == pytest.approx(se * 2 ** 0.5)
    assert RESOLUTION_SE == 2.0
    low = _Solution("low", 0.5, se)
    _, _, status, message, rivals = select_branch([low, _Solution("near", 0.5 + 1.0 * diff_se, se)], _same)
    assert "selection not resolved" in message and status is Status.CONVERGED
    assert [r.name for r in rivals] == ["near"]
    _, _, _, message, rivals = select_branch([low, _Solution("far", 0.5 + 3.0 * diff_se, se)], _same)
    assert "not resolved" not in message and rivals == ()


def test_a_lower_start_that_did_not_converge_makes_the_answer_not_global():
    fixed = _Solution("fixed", 1.0)
    capped_low = _Solution("capped", 0.5, status=Status.MAX_ITERATIONS)
    capped_close = _Solution("capped", 0.999, status=Status.MAX_ITERATIONS)
    chosen, _, status, _, _ = select_branch([fixed, capped_low], _same)
    assert chosen is fixed and status is Status.NOT_GLOBAL
    _, _, status, _, _ = select_branch([fixed, capped_close], _same)  # within 2 s.e.: no evidence of a lower branch
    assert status is Status.CONVERGED


def test_without_any_fixed_point_the_smallest_residual_is_returned():
    a = _Solution("a", 0.1, status=Status.MAX_ITERATIONS, residual=1e-2)
    b = _Solution("b", 0.2, status=Status.LEFT_DOMAIN, residual=1e-3)
    chosen, _, status, _, _ = select_branch([a, b], _same)
    assert chosen is b and status is Status.LEFT_DOMAIN


def test_no_solution_is_refused():
    with pytest.raises(ValueError, match="at least one"):
        select_branch([], _same)


def test_merge_starts_records_an_unresolved_selection_and_the_solvers_warn():
    """The finding is a field (``selection_resolved``), not only words in the message, and ``warn_if_unresolved``
    turns it into a :class:`BranchSelectionWarning`; a resolved selection neither flags nor warns."""
    diff_se = 0.001 * 2 ** 0.5
    near = merge_starts([_Solution("low", 0.5), _Solution("near", 0.5 + diff_se)], _same, 1.0)
    far = merge_starts([_Solution("low", 0.5), _Solution("far", 0.5 + 3 * diff_se)], _same, 1.0)
    assert near.selection_resolved is False and far.selection_resolved is True
    assert near.converged and near.iterations == 6 and len(near.branches) == 2
    with pytest.warns(BranchSelectionWarning, match="selection not resolved") as record:
        warn_if_unresolved("LoRA", near)
    text = str(record[0].message)  # the finding alone, not the returned branch's own solve notes
    assert text.startswith("LoRA: selection not resolved") and "shrink the s.e." in text
    assert near.status_message.split(";")[0] not in text
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_if_unresolved("LoRA", far)
