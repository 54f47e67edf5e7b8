"""Parameter validation of solvable_attention/params.py (docs/model.md §5): each bad value is rejected
with a ValueError naming the parameter; the defaults."""

import pytest

from solvable_attention.params import FinetuneParams, PretrainParams, check_dimension, make_params


BAD_PRETRAIN = [
    (dict(alpha=0.0), "alpha"), (dict(alpha=-1.0), "alpha"), (dict(alpha=float("nan")), "alpha"),
    (dict(alpha=float("inf")), "alpha"), (dict(delta=-0.1), "delta"), (dict(lam=-1e-3), "lam"),
    (dict(lam=float("inf")), "lam"), (dict(T=0), "T"), (dict(T=1, activation="softmax"), "T"),
    (dict(T=2.5), "T"), (dict(beta=0.0), "beta"), (dict(kappa0=0.0), "kappa0"), (dict(kappa=-1.0), "kappa"),
    (dict(activation="relu"), "activation"), (dict(noise="input"), "noise"), (dict(delta="a"), "delta"),
]


@pytest.mark.parametrize("change,name", BAD_PRETRAIN)
def test_bad_pretrain_parameters_name_the_parameter(change, name):
    kw = dict(alpha=0.1, delta=0.5, lam=0.1) | change
    with pytest.raises(ValueError, match=rf"^{name} "):
        PretrainParams(**kw)


@pytest.mark.parametrize("change,name", [
    (dict(alpha_prime=0.0), "alpha_prime"), (dict(lam_prime=-1.0), "lam_prime"),
    (dict(lam_prime=float("nan")), "lam_prime"), (dict(delta_prime=-1.0), "delta_prime"),
    (dict(gamma=0.0), "gamma"), (dict(gamma=float("inf")), "gamma"),
])
def test_bad_finetune_parameters_name_the_parameter(change, name):
    with pytest.raises(ValueError, match=rf"^{name} "):
        FinetuneParams(**(dict(alpha_prime=3.0) | change))


def test_valid_parameters_and_defaults():
    pre, fine = make_params(0.1, 3, 0.5, 0.01, lam_prime=float("inf"), T=1, activation="identity")
    assert pre.T == 1 and fine.delta_prime == 0.5 and not fine.adapts
    assert pre.rho0 == 2.0
    with pytest.raises(ValueError, match="^D "):
        check_dimension(1)
