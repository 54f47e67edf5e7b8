"""Controls of a long solve: a wall-clock time limit and a progress bar over map evaluations.

A state-evolution solve is a fixed-point iteration (docs/theory.md §2.6) whose cost is its number of map
evaluations; at extreme settings (``λ → 0``, large ``β``) it can take minutes. ``time_limit`` bounds it: no
evaluation starts after the deadline, and the best iterate is returned with ``Status.MAX_ITERATIONS`` and a
message saying the time limit was reached. ``progress`` shows one bar per solve, counting evaluations, with
the current relative residual.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager

from tqdm.auto import tqdm


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


__all__ = ["deadline_after", "remaining", "evaluation_progress"]
