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
