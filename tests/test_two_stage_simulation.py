"""The two-stage simulation of simulations/simulator/two_stage.py (``simulate``): determinism, consistency
of the reported overlaps, the infinite LoRA ridge, recalibration and reuse, and bad input."""

import math
import pytest

from simulations import simulate


def test_simulate_is_deterministic_and_consistent():
    kw = dict(D=20, alpha=0.2, alpha_prime=3.0, delta=0.5, lam=0.05, activation="identity", n_test=2000)
    a, b = simulate(**kw, seed=3), simulate(**kw, seed=3)
    da, db = a.to_dict(), b.to_dict()
    da.pop("timings"), db.pop("timings")
    assert da == db
    c = simulate(**kw, seed=4)
    assert c.pretrain.m != a.pretrain.m
    p = a.pretrain
    assert p.mse_S == pytest.approx(p.rho0 - 2 * p.m + p.q, rel=1e-10)
    assert a.finetune.converged and a.pretrain.converged
    # E' and E'_0 use the same test inputs; fine-tuning on S1's data should help here
    assert a.finetune.test_error < a.finetune.test_error_baseline


def test_infinite_lam_prime_gives_baseline_exactly():
    r = simulate(16, 0.2, 3.0, 0.5, 0.05, lam_prime=float("inf"), activation="softmax", n_test=1000)
    assert r.finetune.q == 0.0 and r.finetune.m == 0.0
    assert r.finetune.test_error == r.finetune.test_error_baseline
    assert math.isnan(r.finetune.train_loss)  # nothing is fitted


def test_recalibration_and_reuse_run():
    r = simulate(16, 0.2, 3.0, 0.5, 0.05, activation="softmax", n_test=1000, recalibrate=True, reuse=True)
    assert r.finetune.c != 1.0 and r.finetune.converged
    assert math.isfinite(r.finetune.train_loss) and r.finetune.train_loss >= 0


@pytest.mark.parametrize("kw,name", [(dict(method="adam"), "method"), (dict(n_test=0), "n_test"),
                                     (dict(D=1), "D"), (dict(activation="tanh"), "activation")])
def test_simulate_rejects_bad_input(kw, name):
    args = dict(D=10, alpha=0.1, alpha_prime=3, delta=0.5, lam=0.1) | kw
    with pytest.raises(ValueError, match=name):
        simulate(**args)
