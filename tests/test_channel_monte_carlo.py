"""The Monte Carlo pre-training channel of state_evolution/channel_monte_carlo.py against the identity
channel's closed form (state_evolution/channel_identity.py, docs/theory.md §2.3–2.4)."""

import pytest

from solvable_attention.params import PretrainParams
from state_evolution.channel_identity import IdentityChannel
from state_evolution.channel_monte_carlo import MonteCarloChannel


@pytest.mark.parametrize("noise", ["logits", "output"])
def test_identity_closed_form_equals_monte_carlo_channel(noise):
    """The generic Monte Carlo channel (Newton prox) on the identity activation reproduces the
    closed form within 4 Monte Carlo standard errors (2^14 samples)."""
    p = PretrainParams(alpha=0.1, delta=0.5, lam=0.05, activation="identity", noise=noise)
    exact, mc = IdentityChannel(p), MonteCarloChannel.create(p, n_samples=2 ** 14, n_test_samples=2 ** 14)
    for m, q, V in [(1.0, 0.9, 0.5), (0.0, 0.0, 0.0), (1.5, 1.6, 3.0)]:
        a, b = exact.conjugates(m, q, V), mc.conjugates(m, q, V)
        assert abs(a.q_hat - b.q_hat) < 4 * b.q_hat_se
        assert abs(a.m_hat - b.m_hat) < 4 * b.m_hat_se
        assert b.V_hat == pytest.approx(a.V_hat, rel=1e-10)  # the Hessian is constant: exact
        (t1, _), (t2, se2) = exact.train_loss(m, q, V), mc.train_loss(m, q, V)
        assert abs(t1 - t2) < 4 * se2
        (e1, _), (e2, se) = exact.test_error(m, q), mc.test_error(m, q)
        assert abs(e1 - e2) < 4 * se


def test_unfinished_proxes_are_counted_and_fail_the_stage():
    """With one Newton step per prox (max_newton=1) at β = 20 most per-sample proxes cannot finish; the count is
    checked against an independent count of the samples whose stationarity residual |g + ∇ℓ| (recomputed here
    from the returned g by loss_derivatives) exceeds UNFINISHED_RESIDUAL. With the default step cap at β = 1
    every prox finishes. The stage status folds the count in (state_evolution.inner_solves)."""
    import dataclasses

    import jax.numpy as jnp
    import numpy as np

    from solvable_attention.runtime import float64
    from solvable_attention.status import Status
    from state_evolution.channel_monte_carlo import _channel_statistics
    from state_evolution.inner_solves import inner_status
    from state_evolution.loss_derivatives import entries, loss_derivatives
    from state_evolution.overlap_fields import student_teacher_fields
    from state_evolution.channel_monte_carlo import channel_labels
    from state_evolution.prox_newton import UNFINISHED_RESIDUAL

    m, q, V = 0.5, 0.6, 0.8
    ok = MonteCarloChannel.create(PretrainParams(alpha=0.1, delta=0.5, lam=0.05), n_samples=1024).evaluate(m, q, V)
    assert ok.unfinished == 0 and ok.n == 1024
    p = PretrainParams(alpha=0.1, delta=0.5, lam=0.05, beta=20.0)
    ch = dataclasses.replace(MonteCarloChannel.create(p, n_samples=1024), max_newton=1)
    ev = ch.evaluate(m, q, V)
    with float64():
        *_, g, res, _ = _channel_statistics(m, q, V, p.rho0, p.delta, p.beta, ch.xi0, ch.xi1, ch.noise_draw, p.T,
                                            p.activation, p.noise, 1)
        omega, h0, _ = student_teacher_fields(m, q, p.rho0, ch.xi0, ch.xi1)
        Y = channel_labels(h0, ch.noise_draw, p.delta, p.T, p.activation, p.beta, p.noise)
        grad, _ = loss_derivatives(omega + V * g, entries(Y), p.T, p.activation, p.beta)
        independent = int(np.sum(np.max(np.abs(np.asarray(g + grad)), axis=-1) > UNFINISHED_RESIDUAL))
    assert ev.unfinished == independent > 10
    assert inner_status(ev.unfinished, ev.n, ev.prox_residual)[0] is Status.INNER_SOLVE_FAILED
