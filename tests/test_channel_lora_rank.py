"""The rank-r LoRA channel and solver (state_evolution/channel_lora_rank.py, finetuning_rank.py;
docs/theory.md §7.1): derivatives against automatic differentiation, exact reduction to the rank-one
channel and solver at r = r* = 1, the gauge, the prior, and bad input."""

import math
import warnings

import numpy as np
import pytest


def _random_psd(rng, r, scale=1.0):
    A = rng.standard_normal((r, r))
    return scale * (A @ A.T / r + 0.3 * np.eye(r))


@pytest.mark.parametrize("activation", ["identity", "softmax"])
def test_rank_derivatives_match_automatic_differentiation(activation):
    """rank_lora_derivatives (closed-form chain rule with the metric K) against jax.grad/jax.hessian of the
    plain loss rank_lora_loss (the slow oracle), at r = 2 and a random PSD metric: float64 round-off."""
    import jax
    import jax.numpy as jnp

    from state_evolution.channel_lora_rank import rank_lora_derivatives, rank_lora_loss

    rng = np.random.default_rng(0)
    n, T, r, tq, beta = 32, 3, 2, 0.7, 1.3
    K = jnp.asarray(_random_psd(rng, r))
    h = jnp.asarray(rng.standard_normal((n, T * r)))
    A = rng.standard_normal((n, T, T))
    H_hat = jnp.asarray(A + A.transpose(0, 2, 1))
    Y = jax.nn.softmax(jnp.asarray(rng.standard_normal((n, T, T))), -1)
    grad, hess, dq = rank_lora_derivatives(h, K, tq, H_hat, Y, activation, beta, T)
    one = lambda x, t, H, y: rank_lora_loss(x[None], K, t, H[None], y[None], activation, beta, T)[0]  # noqa: E731
    ax = (0, None, 0, 0)
    np.testing.assert_allclose(grad, jax.vmap(jax.grad(one), ax)(h, tq, H_hat, Y), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(hess, jax.vmap(jax.hessian(one), ax)(h, tq, H_hat, Y), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dq, jax.vmap(jax.grad(one, 1), ax)(h, tq, H_hat, Y), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("activation", ["identity", "softmax"])
def test_rank_one_derivatives_are_the_rank_one_channel(activation):
    """At r = 1, K = 1 the rank-r derivatives are channel_lora.lora_derivatives (an independent hand-written
    chain rule): equal to round-off."""
    import jax.numpy as jnp

    from state_evolution.channel_lora import lora_derivatives
    from state_evolution.channel_lora_rank import rank_lora_derivatives

    rng = np.random.default_rng(1)
    n, T = 16, 3
    z = jnp.asarray(rng.standard_normal((n, T)))
    A = rng.standard_normal((n, T, T))
    H_hat, Y = jnp.asarray(A + A.transpose(0, 2, 1)), jnp.asarray(rng.random((n, T, T)))
    got = rank_lora_derivatives(z, jnp.ones((1, 1)), 0.4, H_hat, Y, activation, 1.0, T)
    want = lora_derivatives(z, 0.4, 1.0, H_hat, Y, activation, 1.0)
    for a, b in zip(got, (want[0], want[1], want[2])):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("activation", ["identity", "softmax"])
def test_rank_channel_reduces_to_rank_one_channel(activation, identity_pre):
    """RankLoraChannel at r = r* = 1 draws the same samples as LoraChannel and evaluates the same equations
    through a different prox parametrisation (whitened, V = 1): every conjugate, the ridge shift, the train
    loss, the replicon and the test errors agree to 1e-8 relative (Newton tolerance 1e-11; the two solvers'
    iterates differ only by round-off)."""
    from solvable_attention.params import FinetuneParams
    from state_evolution import solve_pretraining
    from state_evolution.channel_lora_rank import RankLoraChannel
    from state_evolution.finetuning import make_lora_channel

    pre = identity_pre if activation == "identity" else solve_pretraining(0.1, 0.5, 0.05, n_samples=2 ** 10,
                                                                            warn=False)
    fine = FinetuneParams(alpha_prime=3.0, lam_prime=1.0, delta_prime=0.5, gamma=1.0)
    one = make_lora_channel(pre, fine, n_samples=2 ** 10, n_test_samples=2 ** 10)
    p = pre.params
    rank = RankLoraChannel.create(m=pre.m, q=pre.q, rho0=pre.rho0, T=p.T, rank=1, shift_rank=1, alpha_prime=3.0,
                                  delta_prime=0.5, gamma=1.0, activation=activation, beta=p.beta, noise=p.noise,
                                  n_samples=2 ** 10, n_test_samples=2 ** 10)
    mp, qp, Vp = 0.6, 0.8, 0.4
    a = one.evaluate(mp, qp, Vp)
    b = rank.evaluate(np.array([[mp]]), np.array([[qp]]), np.array([[Vp]]))
    pairs = [(a.m_hat, b.M_hat), (a.q_hat, b.Q_hat), (a.V_hat, b.V_hat), (a.V_hat_hessian, b.V_hat_hessian),
             (a.ridge_shift, b.ridge_shift), (a.train_loss[0], b.train_loss[0]), (a.replicon, b.replicon)]
    for x, y in pairs:
        np.testing.assert_allclose(float(np.squeeze(y)), x, rtol=1e-8, atol=1e-12)
    e1, e2 = one.test_errors(mp, qp), rank.test_errors(np.array([[mp]]), np.array([[qp]]))
    for k in e1:
        np.testing.assert_allclose(e2[k], e1[k], rtol=1e-10)


def test_rank_solver_reduces_to_rank_one_solver(identity_pre):
    """solve_finetuning_rank at r = r* = 1 follows the same iteration as solve_finetuning (same start, same
    map up to round-off, same solver): m', q', V', E' and the replicon agree to 1e-7 relative."""
    from state_evolution.finetuning import solve_finetuning
    from state_evolution.finetuning_rank import solve_finetuning_rank

    kw = dict(n_samples=2 ** 11, n_test_samples=2 ** 12, branches=False, warn=False)
    a = solve_finetuning(identity_pre, 3.0, 1.0, **kw)
    b = solve_finetuning_rank(identity_pre, 3.0, 1.0, rank=1, shift_rank=1, **kw)
    assert a.converged and b.converged
    for x, y in ((a.m, b.M[0, 0]), (a.q, b.Q[0, 0]), (a.V, b.V[0, 0]), (a.test_error, b.test_error),
                 (a.replicon, b.replicon), (a.objective, b.objective)):
        assert y == pytest.approx(x, rel=1e-7)
    assert b.update_alignment == pytest.approx(a.alignment ** 2, rel=1e-7)


def test_rank_solver_finds_the_rank_one_branches(identity_pre):
    """With both starts at r = r* = 1 the rank-r solver finds the rank-one solver's two fixed points (identity,
    α' = 3, λ' = 1: an informative one and the uninformative m' = 0 one, which the rank-r solver iterates within
    its invariant subspace). Oracle: solve_finetuning's branches (a separate code path). Tolerance: the two
    solvers accept a fixed point at relative residual ≤ 5e-4 (the LoRA noise-floor rule), and the rank-one
    solver's uninformative m' is 0 only up to the sampling asymmetry (alignment 0.03 at 2¹¹ samples, which moves
    q' by its square, ~1e-3), so q' and the objectives agree to 1e-2 relative; the rank-r uninformative m' is
    0 exactly (projected)."""
    from state_evolution.finetuning import solve_finetuning
    from state_evolution.finetuning_rank import solve_finetuning_rank

    kw = dict(n_samples=2 ** 11, n_test_samples=2 ** 12, warn=False)
    a = solve_finetuning(identity_pre, 3.0, 1.0, **kw)
    b = solve_finetuning_rank(identity_pre, 3.0, 1.0, rank=1, shift_rank=1, **kw)
    a_low = min(a.branches, key=lambda br: abs(br.m))
    b_low = next(br for br in b.branches if br.start == "uninformative")
    # the rank-one solver found the uninformative branch too: its m' is 0 up to the asymmetry of 2¹¹ fixed samples
    assert a_low.alignment < 0.05
    assert b_low.M_singular_values == (0.0,)
    assert b_low.Q_eigenvalues[0] == pytest.approx(a_low.q, rel=1e-2)
    assert b_low.objective == pytest.approx(a_low.objective, rel=1e-2)
    assert b.objective == pytest.approx(a.objective, rel=1e-2)
    assert b.objective < b_low.objective  # the informative branch is the estimator's here


def test_coarse_stage_reaches_the_same_fixed_point(identity_pre):
    """The coarse-to-fine start (each start first solved on a 2⁹-sample channel) ends at the full channel's
    own fixed point: the invariants of both branches equal those of the plain solve (``coarse_samples=None``).
    Tolerance 2e-3 relative: both solves accept a relative residual ≤ 5e-4 of the same map (the LoRA
    noise-floor rule), and the map contracts there; the coarse evaluations are counted in ``iterations``.
    Bad ``coarse_samples`` are refused by name."""
    from state_evolution.finetuning_rank import solve_finetuning_rank

    kw = dict(rank=2, shift_rank=1, n_samples=2 ** 11, n_test_samples=2 ** 12, warn=False)
    plain = solve_finetuning_rank(identity_pre, 3.0, 1.0, coarse_samples=None, **kw)
    staged = solve_finetuning_rank(identity_pre, 3.0, 1.0, coarse_samples=2 ** 9, **kw)
    assert staged.status == plain.status and len(staged.branches) == len(plain.branches) == 2
    for a, b in zip(sorted(plain.branches, key=lambda br: br.start), sorted(staged.branches, key=lambda br: br.start)):
        assert a.start == b.start
        np.testing.assert_allclose(b.M_singular_values, a.M_singular_values, rtol=2e-3, atol=1e-6)
        np.testing.assert_allclose(b.Q_eigenvalues, a.Q_eigenvalues, rtol=2e-3)
        assert b.test_error == pytest.approx(a.test_error, rel=2e-3)
    assert staged.test_error == pytest.approx(plain.test_error, rel=2e-3)
    for bad in (0, 2.5, True, "many"):
        with pytest.raises(ValueError, match="coarse_samples"):
            solve_finetuning_rank(identity_pre, 3.0, 1.0, coarse_samples=bad, **kw)


def test_prior_reduces_to_rank_one_prior():
    """rank_prior at r = r* = 1 is the scalar ridge prior (m̂/d, (m̂² + q̂)/d², 1/d), d = λ' + shift + V̂'."""
    from types import SimpleNamespace

    from state_evolution.finetuning_rank import rank_prior

    ev = SimpleNamespace(M_hat=np.array([[0.7]]), Q_hat=np.array([[0.3]]), V_hat=np.array([[1.1]]),
                         ridge_shift=-0.2)
    M, Q, V = rank_prior(ev, 1.0)
    d = 1.0 - 0.2 + 1.1
    assert (M[0, 0], Q[0, 0], V[0, 0]) == pytest.approx((0.7 / d, (0.49 + 0.3) / d ** 2, 1 / d), rel=1e-14)


def test_prior_refuses_unbounded_direction():
    """A ridge curvature λ_eff I + V̂' with a non-positive eigenvalue (the LoRA objective unbounded along it)
    is an InvalidIterate, not a number."""
    from types import SimpleNamespace

    from state_evolution.finetuning_rank import rank_prior
    from state_evolution.fixed_point import InvalidIterate

    ev = SimpleNamespace(M_hat=np.zeros((2, 1)), Q_hat=np.eye(2), V_hat=np.diag([1.0, -1.5]), ridge_shift=0.0)
    with pytest.raises(InvalidIterate):
        rank_prior(ev, 1.0)


def test_gauge_alignment_undoes_a_rotation():
    """align_gauge maps (OᵀMO*, OᵀQO, OᵀVO) back onto (M, Q, V) for rotations of the size the solver meets
    (an image is a small rotation of its input: angles ≲ 0.3 rad here) to 1e-8; for large random rotations it
    keeps the invariants and never moves the image away from the reference."""
    from scipy.linalg import expm
    from scipy.stats import ortho_group

    from state_evolution.finetuning_rank import align_gauge, rotation_invariants

    rng = np.random.default_rng(2)
    r, rs = 3, 2
    M = rng.standard_normal((r, rs))
    Q, V = M @ M.T + _random_psd(rng, r), _random_psd(rng, r, 0.5)

    def small_rotation(k, seed):
        A = np.random.default_rng(seed).standard_normal((k, k))
        return expm(0.15 * (A - A.T))

    O, Os = small_rotation(r, 3), small_rotation(rs, 4)
    M1, Q1, V1 = O.T @ M @ Os, O.T @ Q @ O, O.T @ V @ O
    for a, b in zip(align_gauge(M1, Q1, V1, M, Q, V), (M, Q, V)):
        np.testing.assert_allclose(a, b, atol=1e-8)
    O, Os = ortho_group.rvs(r, random_state=3), ortho_group.rvs(rs, random_state=4)
    M1, Q1, V1 = O.T @ M @ Os, O.T @ Q @ O, O.T @ V @ O
    M2, Q2, V2 = align_gauge(M1, Q1, V1, M, Q, V)
    inv1, inv2 = rotation_invariants(M1, Q1), rotation_invariants(M2, Q2)
    np.testing.assert_allclose(inv1["Q_eigenvalues"], inv2["Q_eigenvalues"], rtol=1e-12)
    np.testing.assert_allclose(inv1["M_singular_values"], inv2["M_singular_values"], rtol=1e-12)
    dist = lambda a: sum(np.sum((x - y) ** 2) for x, y in zip(a, (M, Q, V)))  # noqa: E731
    assert dist((M2, Q2, V2)) <= dist((M1, Q1, V1))


def test_update_alignment_is_the_matrix_cosine():
    """rotation_invariants' update alignment ‖M'‖²/(‖Q'‖_F √r*) equals the cosine ⟨UUᵀ, VVᵀ⟩/(‖UUᵀ‖‖VVᵀ‖)
    computed from explicit matrices with VᵀV/D = I exactly (orthonormalised columns times √D)."""
    from state_evolution.finetuning_rank import rotation_invariants

    rng = np.random.default_rng(5)
    D, r, rs = 400, 3, 2
    V = np.linalg.qr(rng.standard_normal((D, rs)))[0] * math.sqrt(D)
    U = rng.standard_normal((D, r)) + V @ rng.standard_normal((rs, r))
    want = np.sum((U @ U.T) * (V @ V.T)) / (np.linalg.norm(U @ U.T) * np.linalg.norm(V @ V.T))
    got = rotation_invariants(U.T @ V / D, U.T @ U / D)["update_alignment"]
    assert got == pytest.approx(want, rel=1e-12)


def test_rank_solver_refuses_bad_input(identity_pre):
    """Bad rank, shift_rank, lam_prime = inf and a wrong-shaped init are ValueErrors naming the parameter."""
    from state_evolution.finetuning_rank import solve_finetuning_rank

    with pytest.raises(ValueError, match="rank"):
        solve_finetuning_rank(identity_pre, 3.0, 1.0, rank=0)
    with pytest.raises(ValueError, match="shift_rank"):
        solve_finetuning_rank(identity_pre, 3.0, 1.0, shift_rank=1.5)
    with pytest.raises(ValueError, match="lam_prime"):
        solve_finetuning_rank(identity_pre, 3.0, math.inf, rank=2)
    with pytest.raises(ValueError, match="init"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            solve_finetuning_rank(identity_pre, 3.0, 1.0, rank=2, init=(np.zeros((1, 1)), np.eye(1), np.eye(1)),
                                  n_samples=2 ** 8)


def test_solve_state_evolution_rank_keyword_and_cli(tmp_path, capsys):
    """solve_state_evolution(rank=2, shift_rank=2) runs the rank-r solver (identity activation, 2¹⁰ samples: a
    smoke test of the wiring, the values are checked against simulations in docs/validation_rank.md); the CLI's
    --rank/--shift-rank give the same E' (same seeds, same solver); bad ranks are refused by name."""
    import json

    from simulations.cli import main
    from state_evolution import RankFinetuningSolution, solve_state_evolution

    kw = dict(lam_prime=1.0, activation="identity", n_samples=2 ** 10, n_test_samples=2 ** 12, warn=False)
    s = solve_state_evolution(0.1, 3.0, 0.5, 0.05, rank=2, shift_rank=2, **kw)
    f = s.finetune
    assert isinstance(f, RankFinetuningSolution) and (f.rank, f.shift_rank) == (2, 2)
    assert f.test_error < f.test_error_baseline and 0 < f.update_alignment <= 1
    assert len(f.Q_eigenvalues) == 2 and len(f.M_singular_values) == 2 and f.status is not None
    with pytest.raises(ValueError, match="rank"):
        solve_state_evolution(0.1, 3.0, 0.5, 0.05, rank=0, **kw)
    with pytest.raises(ValueError, match="lam_prime"):
        solve_state_evolution(0.1, 3.0, 0.5, 0.05, rank=2, lam_prime=math.inf, activation="identity")
    out = tmp_path / "rank.json"
    main(["solve", "--alpha", "0.1", "--alpha-prime", "3", "--delta", "0.5", "--lam", "0.05", "--activation",
          "identity", "--n-samples", str(2 ** 10), "--no-progress", "--rank", "2", "--shift-rank", "2",
          "--json", str(out)])
    rec = json.loads(out.read_text())["points"][0]
    assert rec["finetune"]["rank"] == 2 and rec["finetune"]["test_error"] == pytest.approx(f.test_error, rel=1e-3)
