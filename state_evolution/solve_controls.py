"""Controls of a long solve: a wall-clock time limit and a progress bar over map evaluations.

A state-evolution solve is a fixed-point iteration (docs/theory.md §2.6) whose cost is its number of map
evaluations; at extreme settings (``λ → 0``, large ``β``) it can take minutes. ``time_limit`` bounds the
iteration: no evaluation starts after the deadline, and the best iterate is returned with
``Status.MAX_ITERATIONS`` and a message saying the time limit was reached. It does not interrupt what is already
running: the compilation of a channel (tens of seconds the first time a shape is seen, ~90 s for a rank-4 LoRA
channel), the evaluation in flight, and the one evaluation that reports the returned point (a solve stopped
before its first evaluation reports its starting point, ``0`` evaluations in the message). ``progress`` shows one bar per solve, counting evaluations, with
the current relative residual.
"""

from __future__ import annotations

import dataclasses
import math
import time
from contextlib import contextmanager

from tqdm.auto import tqdm

from solvable_attention.status import Status, worst


def deadline_after(time_limit) -> float | None:
    """The :func:`time.monotonic` deadline of a solve that may take ``time_limit`` seconds.

    Args:
        time_limit: seconds (``> 0``, finite) or ``None`` (no limit).

    Returns:
        The deadline, or ``None``.

    Raises:
        ValueError: ``time_limit`` not a positive finite number.
    """
    if time_limit is None:
        return None
    if isinstance(time_limit, bool):
        raise ValueError(f"time_limit must be a positive number of seconds or None, got {time_limit!r}")
    try:
        t = float(time_limit)
    except (TypeError, ValueError):
        raise ValueError(f"time_limit must be a positive number of seconds or None, got {time_limit!r}") from None
    if not (t > 0 and math.isfinite(t)):
        raise ValueError(f"time_limit must be a positive number of seconds or None, got {time_limit!r}")
    return time.monotonic() + t


def remaining(deadline) -> float | None:
    """Seconds left before ``deadline`` (at least 1e-9, so that a later stage still reports; ``None``: no limit).

    Args:
        deadline: a :func:`deadline_after` value or ``None``.

    Returns:
        The seconds left, or ``None``.
    """
    return None if deadline is None else max(deadline - time.monotonic(), 1e-9)


def check_progress(progress) -> bool:
    """``progress`` as a flag.

    Args:
        progress: ``True`` or ``False``.

    Returns:
        The flag.

    Raises:
        ValueError: not a bool.
    """
    if not isinstance(progress, bool):
        raise ValueError(f"progress must be True or False, got {progress!r}")
    return progress


@contextmanager
def evaluation_progress(name: str, enabled: bool):
    """A progress bar over map evaluations: yields ``callback(evaluations, residual)`` (``None`` when disabled).

    Args:
        name: the bar's label.
        enabled: show it.

    Yields:
        The callback for :func:`~state_evolution.fixed_point.solve_fixed_point`'s ``progress``, or ``None``.
    """
    if not enabled:
        yield None
        return
    bar = tqdm(desc=name, unit="eval", leave=False)

    def update(n_eval, residual):
        bar.update(1)
        bar.set_postfix_str(f"residual {residual:.2e}", refresh=False)

    try:
        yield update
    finally:
        bar.close()


def skipped_by_time_limit(fp, found) -> bool:
    """A start to leave out of the branches: it stopped at the time limit before its first evaluation, after
    another start had produced a solution (its "solution" would be its starting point).

    Args:
        fp: the start's :class:`~state_evolution.fixed_point.FixedPointSolution`.
        found: the solutions of the earlier starts.

    Returns:
        Whether to skip it.
    """
    return bool(found) and fp.method == "time_limit" and fp.iterations == 0


def flag_unchecked_branches(result, skipped: int):
    """``result`` with its status lowered to ``max_iterations`` when ``skipped`` starts of the branch check did
    not run (time limit): the returned branch is then not certified the lowest-objective one.

    Args:
        result: a solution with ``status``, ``converged`` and ``status_message`` (dataclass).
        skipped: how many starts were left out.

    Returns:
        The (possibly) updated solution.
    """
    if not skipped:
        return result
    status = worst(result.status, Status.MAX_ITERATIONS)
    message = (f"{result.status_message}; the time limit was reached before {skipped} start(s) of the branch "
               "check ran: not certified as the lowest-objective branch")
    return dataclasses.replace(result, status=status, converged=status.successful, status_message=message)


__all__ = ["deadline_after", "remaining", "check_progress", "evaluation_progress", "skipped_by_time_limit",
           "flag_unchecked_branches"]
