"""Active fine-tuning and the reuse variant: the selector API (solvable_attention.active), the
conditioned laws of the state evolution (state_evolution.selection) against independent oracles
(chi-square tails, a direct finite-D Monte Carlo of the selection), random selection = unchanged
state evolution, and the simulator's selection variants. Tolerances are stated in Monte Carlo
standard errors or in the finite-D corrections they cover."""

import math
from dataclasses import dataclass
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from solvable_attention.active import STRATEGIES, Entropy, LogitNorm, Lowest, Residual, Strategy, select
from solvable_attention.attention import attention_logits
from solvable_attention.params import PretrainParams
from solvable_attention.random_matrices import wishart_teacher

FAST = dict(n_samples=2 ** 12, n_test_samples=2 ** 14)


def _pool(n=60, T=3, D=20, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, T, D))
    A = rng.standard_normal((D, D))
    S = A @ A.T / D
    Y = rng.dirichlet(np.ones(T), size=(n, T))
    return X, S, Y


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_selection_is_valid_distinct_and_deterministic(name):
    X, S, Y = _pool()
    key = jax.random.PRNGKey(3)
    idx = select(X, 17, name, S_hat=S, pool_Y=Y, key=key)
    assert idx.shape == (17,) and idx.dtype.kind == "i"
    assert np.all((idx >= 0) & (idx < 60)) and len(set(idx.tolist())) == 17
    assert np.array_equal(idx, select(X, 17, name, S_hat=S, pool_Y=Y, key=jax.random.PRNGKey(3)))
    if name == "random":  # another key, another subset (P[same 17 of 60] is astronomically small)
        assert set(idx.tolist()) != set(select(X, 17, name, S_hat=S, key=jax.random.PRNGKey(4)).tolist())


def test_scores_match_numpy_and_top_scores_are_selected():
    X, S, Y = _pool()
    H = np.einsum("nad,de,nbe->nab", X, S, X)
    H = (H - np.trace(S) * np.eye(3)) / math.sqrt(20)  # H(S; X), written out independently
    P = np.exp(H - H.max(-1, keepdims=True))
    P /= P.sum(-1, keepdims=True)
    oracle = {"entropy": -(P * np.log(P)).sum((1, 2)), "logit_norm": np.sqrt((H ** 2).sum((1, 2))),
              "residual": ((Y - P) ** 2).sum((1, 2))}
    oracle["low_logit_norm"], oracle["low_residual"] = -oracle["logit_norm"], -oracle["residual"]
    for name, s in oracle.items():
        strategy = STRATEGIES[name]()
        assert np.allclose(np.asarray(strategy.score(jnp.asarray(H), Y)), s, rtol=1e-10), name
        idx = select(X, 10, name, S_hat=S, pool_Y=Y)
        rest = np.setdiff1d(np.arange(60), idx)
        assert s[idx].min() >= s[rest].max(), name
        assert np.all(np.diff(s[idx]) <= 0), name  # highest first
    ident = Residual(activation="identity").score(H, Y)
    assert np.allclose(np.asarray(ident), ((Y - H / 3) ** 2).sum((1, 2)))


def test_bad_inputs_raise_clear_errors():
    X, S, Y = _pool()
    with pytest.raises(ValueError, match="k must be"):
        select(X, 61, "entropy", S_hat=S)
    for k in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="k must be"):
            select(X, k, "entropy", S_hat=S)
    with pytest.raises(ValueError, match="strategy must be"):
        select(X, 5, "most_confusing", S_hat=S)
    with pytest.raises(ValueError, match="pool_Y"):
        select(X, 5, "residual", S_hat=S)
    with pytest.raises(ValueError, match="pool_Y"):
        select(X, 5, "low_residual", S_hat=S, pool_Y=Y[:, :2])
    with pytest.raises(ValueError, match="key"):
        select(X, 5, "random", S_hat=S)
    with pytest.raises(ValueError, match="pool_X"):
        select(X[0], 1, "entropy", S_hat=S)
    with pytest.raises(ValueError, match="activation"):
        Residual(activation="relu")


@dataclass(frozen=True)
class _FirstEntry(Strategy):
    """A user-defined strategy (the extension point): the first logit."""

    def score(self, H_hat, Y=None, key=None):
        return jnp.asarray(H_hat)[:, 0, 0]


def test_user_strategies_and_lowest():
    X, S, _ = _pool()
    H = np.asarray(attention_logits(jnp.asarray(S), jnp.asarray(X)))
    assert np.array_equal(np.sort(select(X, 5, _FirstEntry(), S_hat=S)), np.sort(np.argsort(-H[:, 0, 0])[:5]))
    assert np.array_equal(select(X, 5, Lowest(_FirstEntry()), S_hat=S), np.argsort(H[:, 0, 0])[:5])
    assert Lowest(Residual()).needs_labels and not Lowest(LogitNorm()).needs_labels


# ---- theory: conditioned laws ---------------------------------------------------------------

def _fake_pre(m, q, rho0, activation="softmax"):
    params = PretrainParams(alpha=0.1, delta=0.5, lam=0.1, activation=activation)
    return SimpleNamespace(params=params, m=m, q=q, rho0=rho0, V=1.0)


def test_logit_norm_selection_matches_the_chi_square_tail():
    """Fresh candidates: ‖Ĥ‖²_F = 2q χ²_K, so keeping the top φ by ‖Ĥ‖ conditions on χ²_K > c_φ with
    E[χ²_K | χ²_K > c] = K P(χ²_{K+2} > c)/φ (exact); H0 = (m/q)Ĥ + N gives E‖h0‖² on the selection.
    Tolerance: 4 Monte Carlo s.e. of the selected-sample means."""
    from state_evolution.selection import selected_fields

    m, q, rho0, phi, K, n = 0.6, 0.5, 2.0, 0.25, 6, 2 ** 14
    for strategy, tail in (("logit_norm", True), ("low_logit_norm", False)):
        f = selected_fields(_fake_pre(m, q, rho0), n, strategy, phi, reuse=False, seed=5)
        assert f.n == n
        c = stats.chi2.isf(phi, K) if tail else stats.chi2.ppf(phi, K)
        mass = stats.chi2.sf(c, K + 2) if tail else stats.chi2.cdf(c, K + 2)
        cond = K * mass / phi  # E[χ²_K | selected]
        x = (f.H_hat_w ** 2).sum(1) / q
        assert abs(x.mean() - cond) < 4 * x.std() / math.sqrt(n), strategy
        y = (f.H0_w ** 2).sum(1)
        expected = (m / q) ** 2 * q * cond + K * (rho0 - m * m / q)
        assert abs(y.mean() - expected) < 4 * y.std() / math.sqrt(n), strategy


def test_conditioned_law_matches_a_direct_monte_carlo_of_the_selection():
    """Direct Monte Carlo: explicit D = 300 matrices Ŝ, S0, a pool of 4000 inputs selected by
    ``select`` (entropy, top quarter), against the theory's conditioned fields at the same (m, q, ρ0).
    Tolerance 4 %: finite-D corrections of the Gaussian equivalence are O(1/√D) ≈ 6 % per entry at worst
    but average out over the T² entries (measured gaps < 1.5 %); Monte Carlo error ≈ 1 %."""
    from state_evolution.selection import selected_fields

    D, n_pool, k = 300, 4000, 1000
    keys = jax.random.split(jax.random.PRNGKey(11), 3)
    S0 = wishart_teacher(keys[0], D, 1.0, jnp.float64)
    N = wishart_teacher(keys[1], D, 1.0, jnp.float64)
    S_hat = 0.5 * S0 + 0.3 * N  # a PSD "pre-trained" matrix correlated with the teacher, independent of X
    m, q, rho0 = (float(jnp.trace(A @ B)) / D for A, B in ((S_hat, S0), (S_hat, S_hat), (S0, S0)))
    X = jax.random.normal(keys[2], (n_pool, 3, D), jnp.float64)
    idx = select(X, k, "entropy", S_hat=S_hat)
    H_hat, H0 = attention_logits(S_hat, X[idx]), attention_logits(S0, X[idx])
    direct = {"entropy": float(Entropy().score(H_hat).mean()), "gap": float(((H0 - H_hat) ** 2).sum((1, 2)).mean()),
              "norm": float((H_hat ** 2).sum((1, 2)).mean())}
    f = selected_fields(_fake_pre(m, q, rho0), 2 ** 14, "entropy", k / n_pool, reuse=False, seed=2)
    from state_evolution.goe_coordinates import from_coordinates
    Hh, H0t = np.asarray(from_coordinates(f.H_hat_w, 3)), np.asarray(from_coordinates(f.H0_w, 3))
    theory = {"entropy": float(Entropy().score(Hh).mean()), "gap": float(((H0t - Hh) ** 2).sum((1, 2)).mean()),
              "norm": float((Hh ** 2).sum((1, 2)).mean())}
    unselected = float((np.asarray(attention_logits(S_hat, X)) ** 2).sum((1, 2)).mean())
    assert theory["norm"] < 0.8 * unselected  # the selection does change the law (high entropy = small logits)
    for key in direct:
        assert theory[key] == pytest.approx(direct[key], rel=0.04), key


def test_random_selection_leaves_the_state_evolution_unchanged(identity_pre):
    """Exactly (same samples) through the API; and within Monte Carlo error when a random subset is
    pushed through the conditioning machinery (side fields of a random half of the candidates)."""
    from state_evolution import solve_finetuning
    from state_evolution.selection import solve_active_finetuning

    @dataclass(frozen=True)
    class _Coin(Strategy):  # random, but not declared field-independent: takes the conditioned route
        def score(self, H_hat, Y=None, key=None):
            return jax.random.uniform(key, (H_hat.shape[0],))

    plain = solve_finetuning(identity_pre, 2.0, 1.0, **FAST)
    rand = solve_active_finetuning(identity_pre, 2.0, 1.0, strategy="random", pool_ratio=8.0, **FAST)
    assert rand.to_dict() == {**plain.to_dict(), "seconds": rand.seconds}
    coins = [solve_active_finetuning(identity_pre, 2.0, 1.0, strategy=_Coin(), pool_ratio=4.0, seed=s, **FAST)
             for s in (1, 2, 3)]
    assert all(c.converged for c in coins)
    # 2^12 i.i.d. side fields per solve: measured seed-to-seed spread 1.1 % (m'), 1.9 % (q'), 1.0 % (E');
    # tolerance 4 s.e. of the 3-seed mean
    for k, rel in (("m", 0.025), ("q", 0.045), ("test_error", 0.025)):
        mean = float(np.mean([getattr(c, k) for c in coins]))
        assert mean == pytest.approx(getattr(plain, k), rel=rel), k


def test_selection_api_errors_in_the_theory(identity_pre):
    from state_evolution.selection import solve_active_finetuning

    with pytest.raises(ValueError, match="pool_ratio"):
        solve_active_finetuning(identity_pre, 2.0, 1.0, strategy="entropy", pool_ratio=1.0)
    with pytest.raises(ValueError, match="reuse=True"):
        solve_active_finetuning(identity_pre, 2.0, 1.0, strategy="residual", pool_ratio=4.0)
    with pytest.raises(ValueError, match="strategy must be"):
        solve_active_finetuning(identity_pre, 2.0, 1.0, strategy="nope", pool_ratio=4.0)


def test_reuse_fields_follow_the_training_law(identity_pre):
    """Reuse candidates are training samples. Identity channel, closed forms written out here: with
    a = 2wV (w = (β/T)²) the prox is linear, ĥ = (ω + a y)/(1 + a), y = h0 + noise (variance Δ per
    whitened coordinate), so on training samples E‖H0 − Ĥ‖²_F = 2K (mse_S + a²Δ)/(1 + a)² (vs 2K mse_S on
    fresh samples), and the mean ‖Y − σ(Ĥ)‖²_F is the fixed point's train loss (validated against
    simulation in docs/validation_pretraining.md). Tolerance: 4 Monte Carlo s.e."""
    from state_evolution.goe_coordinates import from_coordinates
    from state_evolution.selection import reuse_candidates

    pre, K = identity_pre, 6
    f = reuse_candidates(pre, 2 ** 13, seed=3)
    a = 2 * (1 / 3) ** 2 * pre.V
    gap = 2 * ((f.H0_w - f.H_hat_w) ** 2).sum(1)
    expected = 2 * K * (pre.mse_S + a * a * 0.5) / (1 + a) ** 2
    assert abs(gap.mean() - expected) < 4 * gap.std() / math.sqrt(gap.size)
    assert expected < 0.9 * 2 * K * pre.mse_S  # training samples are fitted better than fresh ones
    r = ((f.Y - np.asarray(from_coordinates(jnp.asarray(f.H_hat_w), 3)) / 3) ** 2).sum((1, 2))
    assert abs(r.mean() - pre.train_loss) < 4 * r.std() / math.sqrt(r.size)


def test_identity_reuse_is_fresh_finetuning_with_the_training_noise(identity_pre):
    """docs/theory.md §5.2: for the identity activation LoRA sees pre-training only through H0 − Ĥ, which on
    reused (training) samples is Gaussian with variance mse_train = (mse_S + a²Δ)/(1 + a)² per coordinate.
    So reuse = perfect pre-training with Δ' + mse_train. Different Monte Carlo samples on the two sides:
    tolerance 3 % (≈ 4 s.e. at 2^12 samples, as in test_finetuning.py)."""
    import dataclasses

    from state_evolution import solve_finetuning
    from state_evolution.selection import solve_active_finetuning

    pre = identity_pre
    a = 2 * (1 / 3) ** 2 * pre.V
    mse_train = (pre.mse_S + a * a * 0.5) / (1 + a) ** 2
    perfect = dataclasses.replace(pre, m=pre.rho0, q=pre.rho0, mse_S=0.0)
    reuse = solve_active_finetuning(pre, 2.0, 1.0, reuse=True, **FAST)
    ref = solve_finetuning(perfect, 2.0, 1.0, delta_prime=0.5 + mse_train, **FAST)
    fresh = solve_finetuning(pre, 2.0, 1.0, **FAST)
    assert reuse.converged and ref.converged
    for k in ("m", "q", "alignment"):
        assert getattr(reuse, k) == pytest.approx(getattr(ref, k), rel=0.03), k
    assert reuse.alignment > fresh.alignment  # less effective noise on training samples


# ---- simulator --------------------------------------------------------------------------------

def test_simulator_selection_variants():
    """Random selection from a pool of exactly n' candidates is the plain variant (same inputs, same
    numbers); a real selection changes the fine-tuning set; bad pools are rejected."""
    from simulations import simulate_variants

    kw = dict(activation="identity", T=2, n_test=500)
    variants = [dict(), dict(select=dict(strategy="random", pool_ratio=1.0)),
                dict(select=dict(strategy="low_logit_norm", pool_ratio=3.0)),
                dict(reuse=True), dict(reuse=True, select=dict(strategy="random", pool_ratio=1.0)),
                dict(reuse=True, select=dict(strategy="residual", pool_ratio=3.0))]
    r = simulate_variants(30, 0.1, 1.0, 0.5, 0.1, variants=variants, seed=2, **kw)
    assert r[1].finetune.to_dict() == r[0].finetune.to_dict()
    assert r[4].finetune.to_dict() == r[3].finetune.to_dict()
    assert r[2].finetune.m != r[0].finetune.m and r[5].finetune.m != r[3].finetune.m
    with pytest.raises(ValueError, match="pool_ratio"):
        simulate_variants(30, 0.1, 1.0, 0.5, 0.1, variants=[dict(select=dict(strategy="entropy", pool_ratio=0.5))], **kw)
    with pytest.raises(ValueError, match="strategy must be"):
        simulate_variants(30, 0.1, 1.0, 0.5, 0.1, variants=[dict(select=dict(strategy="nope"))], **kw)
    with pytest.raises(ValueError, match="pool"):  # α_pool·D = 120 > αD² = 90 pre-training samples
        simulate_variants(30, 0.1, 1.0, 0.5, 0.1, variants=[dict(reuse=True, select=dict(pool_ratio=4.0))], **kw)
    with pytest.raises(ValueError, match="pool_Y"):  # fresh candidates have no pre-training labels
        simulate_variants(30, 0.1, 1.0, 0.5, 0.1, variants=[dict(select=dict(strategy="residual", pool_ratio=2.0))],
                          **kw)
