"""The estimator's branch among the fixed points reached from several starts (docs/theory.md §4.6).

The LoRA state evolution (rank one or rank ``r``) is solved from several starts; each start ends at a fixed point
of the equations (converged, or only replica-symmetry unstable) or stops short of one (iteration cap, out of the
domain). ERM minimises the training objective, so the estimator's branch is the fixed point of lowest predicted
objective. :func:`select_branch` picks it and says, in the status and its message:

* ``NOT_GLOBAL`` when a start that did *not* reach a fixed point had a lower objective beyond twice the Monte Carlo
  standard error of the difference (a branch may exist below the returned one);
* that the selection is **not resolved** when another fixed point's objective is above the chosen one's by less
  than :data:`RESOLUTION_SE` standard errors of the difference: at this sample count the equations do not say
  which of the two the estimator reaches (the message names both, with their objectives);
* every distinct fixed point's objective, and whether the first start's branch was replaced.

The standard error of a difference of two objectives is taken as ``√(se_a² + se_b²)``: the objectives are
averages over the same Monte Carlo samples, so this bound is conservative (their errors are positively
correlated), and a selection called resolved is resolved.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import NamedTuple

from solvable_attention.status import Status, worst

# Two fixed points whose objectives differ by less than this many standard errors of the difference: the
# selection between them is reported as not resolved (a 2σ margin: a one-sided 2 % chance that a resolved
# selection picked the wrong branch because of the Monte Carlo error).
RESOLUTION_SE = 2.0
# The first and last words of that finding in a status message (the warning quotes it alone).
_UNRESOLVED, _UNRESOLVED_END = "selection not resolved", "more n_samples shrink the s.e."


class BranchSelectionWarning(UserWarning):
    """A LoRA solve's branch selection is not resolved at its sample count (another fixed point's objective lies
    within :data:`RESOLUTION_SE` standard errors of the returned one's): the returned values hold for the returned
    branch, but which branch the estimator reaches is not determined."""


class Selection(NamedTuple):
    """The outcome of :func:`select_branch`.

    Attributes:
        chosen: the lowest-objective fixed point (or, when no start reached one, the smallest residual).
        distinct: one solution per distinct branch, in first-found order.
        status: the chosen one's status, worsened to ``NOT_GLOBAL`` where a stopped start lies lower.
        message: the chosen one's message with the notes of the selection appended.
        rivals: the other fixed points whose objective is within :data:`RESOLUTION_SE` standard errors of the
            chosen one's (empty: the selection is resolved).
    """

    chosen: object
    distinct: list
    status: Status
    message: str
    rivals: tuple


def reached_fixed_point(sol) -> bool:
    """Whether a one-start solution ended at a fixed point (whatever its stability), not at the iteration cap or
    outside the domain.

    Args:
        sol: a one-start solution with a ``status``.

    Returns:
        ``True`` unless its status is ``MAX_ITERATIONS`` or ``LEFT_DOMAIN``.
    """
    return sol.status not in (Status.MAX_ITERATIONS, Status.LEFT_DOMAIN)


def objective_difference_se(a, b) -> float:
    """Standard error of the difference of two solutions' predicted objectives (conservative: module docstring).

    Args:
        a: a one-start solution whose ``branches[0].objective_se`` is its objective's Monte Carlo s.e.
        b: another.

    Returns:
        ``√(se_a² + se_b²)`` (a missing s.e. counts as 0).
    """
    se = lambda s: s.branches[0].objective_se if s.branches else 0.0  # noqa: E731
    return math.hypot(se(a), se(b))


def _better_representative(sol, current) -> bool:
    """Whether ``sol`` should stand for its branch instead of ``current`` (the same fixed point): a fixed point
    over a stopped start, then the lower objective."""
    if reached_fixed_point(sol) != reached_fixed_point(current):
        return reached_fixed_point(sol)
    return sol.objective < current.objective


def _test_error(sol) -> str:
    value = getattr(sol, "test_error", None)
    return f"{value:.4g}" if isinstance(value, float) else "?"


def select_branch(found, same_branch):
    """The estimator's branch among the one-start solutions ``found``, with its status and notes.

    Args:
        found: the one-start solutions, the first start first; each has ``objective``, ``residual``, ``status``,
            ``status_message`` and ``branches[0]`` (its own :class:`Branch` record with ``objective_se``).
        same_branch: ``(a, b) ↦ bool``, whether two solutions are the same fixed point.

    Returns:
        A :class:`Selection` ``(chosen, distinct, status, message, rivals)``: the lowest-objective fixed point (or,
        when no start reached a fixed point, the solution of smallest residual), the distinct solutions
        (first-found order of the branches; of two solutions on one branch the one reaching a fixed point, then
        the lower objective), the status (the chosen one's, worsened to ``NOT_GLOBAL`` as in the module
        docstring), the chosen one's message with the notes of the selection appended, and the fixed points
        too close in objective for the selection to be resolved.

    Raises:
        ValueError: ``found`` is empty.
    """
    if not found:
        raise ValueError("select_branch needs at least one solution")
    distinct = []  # one solution per branch: of two that are the same fixed point, the lower-objective one
    for sol in found:
        twin = next((i for i, d in enumerate(distinct) if same_branch(sol, d)), None)
        if twin is None:
            distinct.append(sol)
        elif _better_representative(sol, distinct[twin]):
            distinct[twin] = sol
    fixed = [d for d in distinct if reached_fixed_point(d)]
    chosen = min(fixed, key=lambda d: d.objective) if fixed else min(distinct, key=lambda d: d.residual)
    status, notes = chosen.status, [chosen.status_message]
    if chosen is not found[0] and not same_branch(chosen, found[0]):
        alignment = getattr(found[0], "alignment", None)
        said = f" (alignment {alignment:.3g})" if isinstance(alignment, float) else ""
        returned = (f"the lowest-objective branch of those at a fixed point ({chosen.objective:.6g})" if fixed else
                    f"the start of smallest residual ({chosen.residual:.3g}; none reached a fixed point)")
        notes.append(f"the first start reached a branch of objective {found[0].objective:.6g}{said}; returned "
                     f"{returned}")
    lower = [d for d in distinct if d not in fixed
             and d.objective < chosen.objective - 2 * objective_difference_se(d, chosen)]
    if lower:
        status = worst(status, Status.NOT_GLOBAL)
        notes.append(f"a start that did not converge reached a lower objective ({lower[0].objective:.6g})")
    close = []
    if fixed and chosen in fixed:
        close = [d for d in fixed if d is not chosen
                 and d.objective - chosen.objective <= RESOLUTION_SE * objective_difference_se(d, chosen)]
        if close:
            d = close[0]
            notes.append(f"{_UNRESOLVED}: another fixed point's objective {d.objective:.6g} exceeds the "
                         f"returned {chosen.objective:.6g} by less than {RESOLUTION_SE:g} standard errors of the "
                         f"difference (s.e. {objective_difference_se(d, chosen):.2g}), so which branch the estimator "
                         f"reaches is not determined at this sample count; E' there {_test_error(d)} against "
                         f"{_test_error(chosen)} here (see branches); {_UNRESOLVED_END}")
    if len(distinct) > 1:
        notes.append(f"{len(distinct)} distinct fixed points found: objectives "
                     + ", ".join(f"{d.objective:.6g}" for d in distinct))
    return Selection(chosen, distinct, status, "; ".join(notes), tuple(close))


def merge_starts(found, same_branch, seconds):
    """The solve's answer from its one-start solutions: the :func:`select_branch` choice, carrying every distinct
    branch's record, the selection's status and message, and the evaluations and seconds of all the starts.

    Args:
        found: the one-start solutions (frozen dataclasses with ``branches``, ``status``, ``converged``,
            ``status_message``, ``iterations``, ``seconds``), the first start first.
        same_branch: ``(a, b) ↦ bool``, whether two solutions are the same fixed point.
        seconds: wall-clock seconds of the whole solve.

    Returns:
        The chosen solution with ``branches`` (one record per distinct branch), ``status``, ``converged``,
        ``status_message``, ``selection_resolved`` (``False`` when :func:`select_branch` found rivals),
        ``iterations`` (summed over the starts) and ``seconds`` replaced.

    Raises:
        ValueError: ``found`` is empty.
    """
    sel = select_branch(found, same_branch)
    return dataclasses.replace(sel.chosen, branches=tuple(d.branches[0] for d in sel.distinct), status=sel.status,
                               converged=sel.status.successful, status_message=sel.message,
                               selection_resolved=not sel.rivals, iterations=sum(s.iterations for s in found),
                               seconds=seconds)


def warn_if_unresolved(name: str, solution) -> None:
    """Emit a :class:`BranchSelectionWarning` when ``solution.selection_resolved`` is ``False``.

    Args:
        name: the solve's name, for the message.
        solution: a merged solution (:func:`merge_starts`).
    """
    if not getattr(solution, "selection_resolved", True):
        warnings.warn(f"{name}: {_selection_note(solution.status_message)} (the whole finding: .status_message)",
                      BranchSelectionWarning, stacklevel=3)


def _selection_note(message: str) -> str:
    """The "selection not resolved …" note of a merged status message (:func:`select_branch`), without the notes
    of the returned branch's own solve; the whole message when the note is not in it."""
    start = message.find(_UNRESOLVED)
    end = message.find(_UNRESOLVED_END, start)
    return message[start:end + len(_UNRESOLVED_END)] if start >= 0 and end >= 0 else message
