"""The pre-training output channel of a setting: closed form for the identity, Monte Carlo otherwise."""

from __future__ import annotations

from .channel_identity import IdentityChannel
from .channel_monte_carlo import MonteCarloChannel
from .sampling import N_SAMPLES, N_TEST_SAMPLES


def make_channel(params, *, n_samples: int = N_SAMPLES, n_test_samples: int = N_TEST_SAMPLES, seed: int = 0,
                 closed_form: bool = True):
    """The output channel of a :class:`PretrainParams` setting.

    Identity activation: the closed form (:class:`IdentityChannel`) unless
    ``closed_form=False``; otherwise the Monte Carlo channel with ``n_samples``
    fixed samples drawn from ``seed`` (common random numbers). docs/theory.md §2.3 (closed form), §2.4
    (Monte Carlo).

    Args:
        params: the :class:`~solvable_attention.params.PretrainParams` setting.
        n_samples: fixed training-channel samples of the Monte Carlo channel.
        n_test_samples: samples of its test error.
        seed: seed of the samples.
        closed_form: use the closed form for the identity activation.

    Returns:
        An :class:`~state_evolution.channel_identity.IdentityChannel` or a
        :class:`~state_evolution.channel_monte_carlo.MonteCarloChannel`.
    """
    if params.activation == "identity" and closed_form:
        return IdentityChannel(params)
    return MonteCarloChannel.create(params, n_samples=n_samples, n_test_samples=n_test_samples, seed=seed)
