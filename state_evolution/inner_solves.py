"""How the inner solves of a channel evaluation (per-sample proxes) enter the status of the outer solve.

A Monte Carlo channel solves one small non-convex problem per sample (the prox, :mod:`.prox_newton`).
Samples whose Newton iteration ends above its tolerance are *unfinished*. A few of them move the sampled
averages by at most their weight, ``unfinished/n``; above :data:`MAX_UNFINISHED_FRACTION` of the samples,
or with a worst stationarity residual above :data:`MAX_PROX_RESIDUAL`, the evaluation cannot be trusted
and the outer solve reports ``Status.INNER_SOLVE_FAILED``.
"""

from __future__ import annotations

from solvable_attention.status import Status

# At most this fraction of the samples may end unfinished: 1e-3 of 2^14 samples is 16 samples, whose weight
# in every average (1e-3) is below the outputs' relative Monte Carlo error (≳ 3e-3 at 2^14 samples).
MAX_UNFINISHED_FRACTION = 1e-3
# The largest per-sample stationarity residual |g + ∇ℓ| accepted at the solution (the Newton tolerance is
# far below; a residual of order 1 means a prox stopped at its step cap far from any stationary point).
MAX_PROX_RESIDUAL = 1e-3


def inner_status(unfinished: int, n: int, worst_residual: float) -> tuple[Status, str]:
    """The status that the inner solves of one channel evaluation impose on the outer solve.

    Args:
        unfinished: samples whose prox ended above its tolerance.
        n: samples of the evaluation (``≥ 1``).
        worst_residual: the largest per-sample stationarity residual.

    Returns:
        ``(Status.CONVERGED, message)`` when within :data:`MAX_UNFINISHED_FRACTION` and
        :data:`MAX_PROX_RESIDUAL`, else ``(Status.INNER_SOLVE_FAILED, message)``.
    """
    message = f"{unfinished} of {n} per-sample proxes unfinished, worst residual {worst_residual:.3g}"
    if unfinished > MAX_UNFINISHED_FRACTION * n or not worst_residual <= MAX_PROX_RESIDUAL:
        return Status.INNER_SOLVE_FAILED, message
    return Status.CONVERGED, message
