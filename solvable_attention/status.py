"""The status of every solve, theory or simulation: one vocabulary, in the style of optimistix's ``RESULTS``.

Every result object of the package carries ``status`` (a :class:`Status`), ``status_message`` (what was
measured: residuals, counts, the competing branch), ``converged`` (``status.successful``), ``iterations``,
``residual`` and ``method``. A number whose status is not successful is still returned (sweeps keep it,
figures draw it differently), never silently: ``converged`` is ``False`` and the message says why.
:func:`raise_if_failed` (``throw=True`` of the solvers) turns a failure into a :class:`SolveError`.

Severity orders the members: combining two statuses (two stages, a solve and its inner solves) keeps the
more severe one (:func:`worst`).
"""

from __future__ import annotations

import enum


class Status(enum.Enum):
    """Outcome of a solve. Attributes of each member: ``value`` (its name), ``successful`` (the number can be
    trusted to the stated tolerance), ``severity`` (for :func:`worst`) and ``description``.

    Attributes:
        CONVERGED: the residual reached the target tolerance.
        CONVERGED_AT_NOISE_FLOOR: a sampled (Monte Carlo) map stalled at its noise floor with its best
            residual below the acceptance bound (the bound is in the message).
        UNSTABLE_FIXED_POINT: a replica-symmetric fixed point whose replicon (de Almeida–Thouless
            parameter) is ≥ 1: locally unstable, the replica-symmetric answer is an approximation.
        NOT_GLOBAL: another branch (fixed point or local minimum) reached a lower objective.
        MAX_ITERATIONS: the iteration cap was reached above tolerance.
        INNER_SOLVE_FAILED: an inner solve (per-sample prox, quantile search, …) failed beyond the stated
            threshold.
        LEFT_DOMAIN: the iterates left the domain of the equations and no valid point was found.
        INVALID_INPUT: the input was refused.
    """

    CONVERGED = ("converged", True, 0, "converged to the target tolerance")
    CONVERGED_AT_NOISE_FLOOR = ("converged_at_noise_floor", True, 1,
                                "stalled at the Monte Carlo noise floor, residual below the acceptance bound")
    UNSTABLE_FIXED_POINT = ("unstable_fixed_point", False, 2,
                            "replica-symmetric fixed point with replicon >= 1 (locally unstable)")
    NOT_GLOBAL = ("not_global", False, 3, "another branch reaches a lower objective")
    MAX_ITERATIONS = ("max_iterations", False, 4, "iteration cap reached above tolerance")
    INNER_SOLVE_FAILED = ("inner_solve_failed", False, 5, "an inner solve failed beyond its threshold")
    LEFT_DOMAIN = ("left_domain", False, 6, "the iterates left the domain of the equations")
    INVALID_INPUT = ("invalid_input", False, 7, "the input was refused")

    def __new__(cls, name, successful, severity, description):
        obj = object.__new__(cls)
        obj._value_ = name
        obj.successful = successful
        obj.severity = severity
        obj.description = description
        return obj

    def __str__(self) -> str:
        return self.value


class SolveError(RuntimeError):
    """A solve that did not succeed, raised on request (``throw=True``); ``status`` and ``result`` attached."""

    def __init__(self, status: Status, message: str, result=None):
        super().__init__(f"{status.value}: {message}")
        self.status, self.message, self.result = status, message, result


def worst(*statuses: Status) -> Status:
    """The most severe of ``statuses`` (``Status.CONVERGED`` when none are given).

    Args:
        *statuses: :class:`Status` members.

    Returns:
        The member of highest ``severity``.
    """
    return max(statuses, key=lambda s: s.severity, default=Status.CONVERGED)


def raise_if_failed(result, what: str = "solve"):
    """Raise :class:`SolveError` when ``result.status`` is not successful; otherwise return ``result``.

    Args:
        result: any result object with ``status`` and ``status_message``.
        what: the name of the solve, for the message.

    Returns:
        ``result`` itself when its status is successful.

    Raises:
        SolveError: ``result.status.successful`` is false.
    """
    if not result.status.successful:
        raise SolveError(result.status, f"{what}: {result.status_message}", result)
    return result
