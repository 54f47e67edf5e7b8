"""The status of one stage's fixed point: the solver's, the inner solves' and the stability's, combined.

docs/theory.md §4.5 (replicon), :mod:`state_evolution.inner_solves` (per-sample proxes),
:class:`solvable_attention.status.Status` (the vocabulary; the most severe member wins).
"""

from __future__ import annotations

from solvable_attention.status import Status, worst

from .inner_solves import inner_status

# The replica-symmetric fixed point is locally stable while the replicon (de Almeida–Thouless parameter)
# is below 1 (docs/theory.md §4.5).
REPLICON_STABILITY_BOUND = 1.0


def stage_status(solution, evaluation, replicon: float | None = None) -> tuple[Status, str]:
    """Combine the statuses behind one stage's result.

    Args:
        solution: the :class:`~state_evolution.fixed_point.FixedPointSolution` of the stage.
        evaluation: the channel evaluation behind the solution (``prox_residual`` and, when the channel
            reports them, ``unfinished`` and ``n``).
        replicon: the replicon of the fixed point (``None``: not computed).

    Returns:
        ``(status, message)``: the most severe of the solver's status, the inner solves' status and, when
        ``replicon ≥ REPLICON_STABILITY_BOUND``, ``Status.UNSTABLE_FIXED_POINT``; the message joins the
        parts that are not plain convergence (the solver's message first).
    """
    parts = [(solution.status, solution.status_message)]
    n = getattr(evaluation, "n", 0) or 1
    parts.append(inner_status(getattr(evaluation, "unfinished", 0), n, float(getattr(evaluation, "prox_residual", 0.0))))
    if replicon is not None and replicon >= REPLICON_STABILITY_BOUND:
        parts.append((Status.UNSTABLE_FIXED_POINT,
                      f"replicon {replicon:.3g} >= {REPLICON_STABILITY_BOUND:g}: the replica-symmetric fixed "
                      "point is locally unstable (its values are an approximation)"))
    status = worst(*(s for s, _ in parts))
    message = "; ".join([parts[0][1]] + [m for s, m in parts[1:] if s is not Status.CONVERGED])
    return status, message
