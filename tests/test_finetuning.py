"""Fine-tuning (LoRA) state evolution (state_evolution/finetuning.py): docs/theory.md §6 checks 2, 4, 5,
λ' = ∞ exactness, recalibration, bad inputs and honest non-convergence. Monte Carlo channels use
2^12 training samples here for speed; tolerances are stated in Monte Carlo standard errors."""

import dataclasses
import math

import numpy as np
import pytest
from theory_helpers import FAST

from state_evolution import solve_finetuning, solve_pretraining
from state_evolution.finetuning import effective_noises


def _with_overlaps(pre, m, q):
    return dataclasses.replace(pre, m=m, q=q, mse_S=pre.rho0 - 2 * m + q)


def test_identity_depends_on_pretraining_only_through_mse(identity_pre):
    """docs/theory.md §6.2: two pre-training states with different (m, q) and the same mse_S give the same
    LoRA fixed point. Same Monte Carlo samples for both; the fields differ sample by sample, so the
    agreement is up to Monte Carlo error (tolerance 3 %, ≈ 4 s.e. of E' at 2^12 samples)."""
    pre = identity_pre
    m2 = pre.m * 0.8
    q2 = pre.mse_S - pre.rho0 + 2 * m2  # same mse_S
    other = _with_overlaps(pre, m2, q2)
    assert other.mse_S == pytest.approx(pre.mse_S, rel=1e-12)
    a = solve_finetuning(pre, 3.0, 1.0, **FAST)
    b = solve_finetuning(other, 3.0, 1.0, **FAST)
    assert a.converged and b.converged
    for k in ("m", "q", "alignment", "test_error", "test_error_baseline"):
        assert getattr(b, k) == pytest.approx(getattr(a, k), rel=0.03), k
    assert effective_noises(pre, 0.5)[0] == pytest.approx(effective_noises(other, 0.5)[0])


def test_identity_pretraining_is_an_effective_noise(identity_pre):
    """docs/theory.md §6.5 + docs/theory.md §4: perfect pre-training (Ŝ = S0) with Δ' + mse_S gives the same LoRA overlaps as
    imperfect pre-training with Δ'; the test errors differ by exactly w(T²+T)·mse_S (the frozen error)."""
    pre = identity_pre
    perfect = _with_overlaps(pre, pre.rho0, pre.rho0)
    a = solve_finetuning(pre, 3.0, 1.0, delta_prime=0.5, **FAST)
    b = solve_finetuning(perfect, 3.0, 1.0, delta_prime=0.5 + pre.mse_S, **FAST)
    assert effective_noises(perfect, 0.5 + pre.mse_S)[0] == pytest.approx(effective_noises(pre, 0.5)[0])
    for k in ("m", "q", "alignment"):
        assert getattr(b, k) == pytest.approx(getattr(a, k), rel=0.03), k
    frozen = (1 / 3) ** 2 * 12 * pre.mse_S
    assert a.test_error - b.test_error == pytest.approx(frozen, rel=0.05)


@pytest.mark.parametrize("activation", ["identity", "softmax"])
def test_infinite_lam_prime_is_the_baseline_gaussian_integral(activation):
    """docs/theory.md §6.4: λ' = ∞ gives û = 0 and E' = E'_0, a plain Gaussian integral (numpy oracle)."""
    pre = solve_pretraining(0.1, 0.5, 0.1, activation=activation, n_samples=2 ** 12, n_test_samples=2 ** 14)
    f = solve_finetuning(pre, 3.0, math.inf, **FAST)
    assert f.q == 0.0 and f.test_error == f.test_error_baseline
    rng = np.random.default_rng(1)
    n = 200000
    g = lambda: (lambda G: (G + np.swapaxes(G, 1, 2)) / math.sqrt(2))(rng.standard_normal((n, 3, 3)))  # noqa
    G0, G1 = g(), g()
    H_hat = math.sqrt(pre.q) * G0
    H0 = pre.m / math.sqrt(pre.q) * G0 + math.sqrt(pre.rho0 - pre.m ** 2 / pre.q) * G1
    zs = rng.standard_normal((n, 3))
    target = H0 + (zs[:, :, None] * zs[:, None, :] - np.eye(3))

    def act(H):
        if activation == "identity":
            return H / 3
        P = np.exp(H - H.max(-1, keepdims=True))
        return P / P.sum(-1, keepdims=True)

    per = ((act(H_hat) - act(target)) ** 2).sum((1, 2))
    assert abs(f.test_error - per.mean()) < 4 * math.hypot(per.std() / math.sqrt(n), f.test_error_se)


def test_recalibration_does_not_hurt_and_bad_inputs_are_rejected(identity_pre):
    a = solve_finetuning(identity_pre, 3.0, 1.0, **FAST)
    b = solve_finetuning(identity_pre, 3.0, 1.0, recalibrate=True, **FAST)
    assert b.converged and b.test_error <= a.test_error + 3 * a.test_error_se
    with pytest.raises(ValueError, match="recalibrate"):
        solve_finetuning(identity_pre, 3.0, math.inf, recalibrate=True)
    with pytest.raises(ValueError, match="alpha_prime"):
        solve_finetuning(identity_pre, 0.0, 1.0)
    with pytest.raises(ValueError, match="lam_prime"):
        solve_finetuning(identity_pre, 3.0, -1.0)
    with pytest.raises(ValueError, match="init"):
        solve_finetuning(identity_pre, 3.0, 1.0, init=(1.0, float("nan"), 1.0))


def test_non_convergence_is_reported(identity_pre):
    from state_evolution import ConvergenceWarning

    with pytest.warns(ConvergenceWarning):
        f = solve_finetuning(identity_pre, 3.0, 1.0, max_iter=2, fallback=False, **FAST)
    assert not f.converged and f.iterations == 2 and f.residual > 1e-6
