"""Fine-tuning (LoRA) state evolution: THEORY.md §6 checks 2, 4, 5, λ' = ∞ exactness, recalibration,
bad inputs, and a small-D simulation check. Monte Carlo channels use 2^12–2^13 samples here for
speed; tolerances are stated in Monte Carlo standard errors."""

import dataclasses
import math

import numpy as np
import pytest

from state_evolution import solve_finetuning, solve_pretraining
from state_evolution.finetuning import effective_noises

FAST = dict(n_samples=2 ** 12, n_test_samples=2 ** 15)


@pytest.fixture(scope="module")
def identity_pre():
    return solve_pretraining(0.1, 0.5, 0.1, activation="identity")


def _with_overlaps(pre, m, q):
    return dataclasses.replace(pre, m=m, q=q, mse_S=pre.rho0 - 2 * m + q)


def test_identity_depends_on_pretraining_only_through_mse(identity_pre):
    """THEORY.md §6.2: two pre-training states with different (m, q) and the same mse_S give the same
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
    """THEORY.md §6.5 + §4: perfect pre-training (Ŝ = S0) with Δ' + mse_S gives the same LoRA overlaps as
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
    """THEORY.md §6.4: λ' = ∞ gives û = 0 and E' = E'_0, a plain Gaussian integral (numpy oracle)."""
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


@pytest.mark.parametrize("activation", ["identity", "softmax"])
def test_lora_derivatives_match_automatic_differentiation(activation):
    """The closed-form chain rule of channel_lora.lora_derivatives against jax.grad/jax.hessian of the
    plain per-sample loss (the slow oracle); float64 round-off tolerance."""
    import jax
    import jax.numpy as jnp

    from state_evolution.channel_lora import lora_derivatives, lora_loss

    k = jax.random.split(jax.random.PRNGKey(3), 3)
    n, T, qp, c, beta = 64, 3, 0.37, 0.8, 1.3
    z = jax.random.normal(k[0], (n, T))
    A = jax.random.normal(k[1], (n, T, T))
    H_hat = A + jnp.swapaxes(A, 1, 2)
    Y = jax.nn.softmax(jax.random.normal(k[2], (n, T, T)), -1)
    got = lora_derivatives(z, qp, c, H_hat, Y, activation, beta)
    one = lambda z, q, c, H, y: lora_loss(z, q, c, H, y, activation, beta)  # noqa: E731
    ax = (0, None, None, 0, 0)
    want = (jax.vmap(jax.grad(one), ax)(z, qp, c, H_hat, Y), jax.vmap(jax.hessian(one), ax)(z, qp, c, H_hat, Y),
            jax.vmap(jax.grad(one, 1), ax)(z, qp, c, H_hat, Y), jax.vmap(jax.grad(one, 2), ax)(z, qp, c, H_hat, Y),
            jax.vmap(jax.grad(jax.grad(one, 2), 2), ax)(z, qp, c, H_hat, Y))
    for name, a, b in zip(("grad", "hess", "dq", "dc", "dcc"), got, want):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-10, atol=1e-12, err_msg=name)


def test_channel_hooks_uniform_weights_and_fresh_side_fields_change_nothing(identity_pre):
    """The reuse/selection hooks of LoraChannel: explicit fresh side fields and uniform weights give the
    same evaluation as the default channel (exactly, same samples); bad hooks are rejected."""
    from solvable_attention.params import FinetuneParams
    from state_evolution.finetuning import make_lora_channel

    ch = make_lora_channel(identity_pre, FinetuneParams(alpha_prime=3.0, lam_prime=1.0, delta_prime=0.5),
                           n_samples=2 ** 10, n_test_samples=2 ** 10)
    n = ch.samples[0].shape[0]
    hooked = ch.conditioned(side_fields=ch.training_side_fields(), weights=np.full(n, 2.5))
    a, b = ch.evaluate(0.4, 0.3, 0.5), hooked.evaluate(0.4, 0.3, 0.5)
    for k in ("m_hat", "q_hat", "V_hat", "ridge_shift"):
        assert getattr(b, k) == pytest.approx(getattr(a, k), rel=1e-12), k
    # 0/1 weights: the weighted mean and s.e. are the plain ones over the kept samples
    from state_evolution.sampling import sample_mean_se

    x = np.random.default_rng(0).standard_normal(n)
    keep = np.arange(n) % 3 == 0
    mean, se = sample_mean_se(x, keep.astype(float))
    assert mean == pytest.approx(x[keep].mean(), rel=1e-12)
    assert se == pytest.approx(x[keep].std(ddof=0) / np.sqrt(keep.sum()), rel=1e-12)
    sub = ch.conditioned(weights=keep.astype(float)).evaluate(0.4, 0.3, 0.5)
    assert sub.q_hat != pytest.approx(a.q_hat, rel=1e-6)
    with pytest.raises(ValueError, match="weights"):
        ch.conditioned(weights=-np.ones(n))
    with pytest.raises(ValueError, match="side_fields"):
        ch.conditioned(side_fields=(np.zeros((n, 2)), np.zeros((n, 2))))
    with pytest.raises(ValueError, match="side_fields"):
        hooked.with_pretraining(0.1, 0.2)


def _finite_difference_jacobian(ch, mp, qp, Vp, eps):
    """Plain oracle of ``∂g/∂ω`` per sample, ``(n, T, T)`` with ``[:, j, k] = ∂g_j/∂ω_k``: central
    differences of the global prox ``g`` in each coordinate of ``ω`` with common random numbers (same
    label, side fields and starts). Unlike the implicit-differentiation (Hessian) form it sees the
    jumps of the global prox (at the finite ``eps``)."""
    import jax.numpy as jnp

    from solvable_attention.activations import apply_activation
    from solvable_attention.runtime import float64
    from solvable_attention.attention import lora_field_logits
    from state_evolution.channel_lora import lora_derivatives, teacher_logits
    from solvable_attention.labels import labels_from_draw
    from state_evolution.goe_coordinates import from_coordinates
    from state_evolution.overlap_fields import student_teacher_fields
    from state_evolution.prox_newton import solve_prox_multistart, start_towards

    with float64():
        xi0, xi1, _, _, noise_draw = ch.samples
        T = xi0.shape[-1]
        omega, z_star, _ = student_teacher_fields(mp, qp, ch.rho_v, xi0, xi1)
        side = ch.training_side_fields()
        H_hat, H0 = from_coordinates(side[0], T), from_coordinates(side[1], T)
        target = teacher_logits(H0, z_star, ch.gamma, ch.rho_v)
        Y = labels_from_draw(target, noise_draw, ch.delta_prime, ch.activation, ch.beta, ch.noise)

        def loss(z, d):  # d = (Y, Ĥ) of the batch being solved (the prox stacks the starts into one batch)
            r = d[0] - apply_activation(lora_field_logits(d[1], z, qp, 1.0), ch.activation, ch.beta)
            return 0.5 * jnp.sum(r * r, axis=(-1, -2))

        def derivs(z, d):
            return lora_derivatives(z, qp, 1.0, d[1], d[0], ch.activation, ch.beta)[:2]

        def g_at(centre):
            starts = (jnp.zeros_like(centre), start_towards(centre, Vp, z_star))
            return np.asarray(solve_prox_multistart(centre, Vp, starts, loss, derivs, ch.max_newton,
                                                    data=(Y, H_hat), compact=False)[0])

        cols = []
        for k in range(T):
            e = eps * jnp.eye(T, dtype=omega.dtype)[k]
            cols.append((g_at(omega + e) - g_at(omega - e)) / (2 * eps))
    return np.stack(cols, axis=-1)


def _finite_difference_V_hat(ch, mp, qp, Vp, eps):
    """Per-sample terms of ``V̂' = −α' E Tr ∂g/∂ω`` from the finite-difference Jacobian."""
    return -ch.alpha_prime * np.trace(_finite_difference_jacobian(ch, mp, qp, Vp, eps), axis1=-2, axis2=-1)


@pytest.mark.parametrize("activation", ["identity", "softmax"])
def test_replicon_matches_finite_difference_jacobian(activation):
    """``LoraEvaluation.replicon = α' V'² E‖∂g/∂ω‖²_F`` (the AT parameter, docs/theory.md §4.5) against the
    finite-difference Jacobian of the prox on the same samples, in a smooth regime (near the λ' = 1 fixed
    point of softmax Δ = 0.5, λ = 0.01): a sample whose ±ε pair straddles a jump would blow the oracle up,
    with probability O(ε) per sample. Tolerance 1e-4 relative: central differences O(ε²) and the Newton
    tolerance / ε."""
    from state_evolution.channel_lora import LoraChannel

    ch = LoraChannel.create(m=1.14, q=1.06, rho0=2.0, T=3, alpha_prime=3.0, delta_prime=0.5, gamma=1.0,
                            activation=activation, beta=1.0, noise="logits", n_samples=2 ** 9,
                            n_test_samples=2 ** 8, seed=5)
    mp, qp, Vp = 0.54, 0.34, 0.55
    ev = ch.evaluate(mp, qp, Vp)
    J = _finite_difference_jacobian(ch, mp, qp, Vp, eps=1e-5)
    want = ch.alpha_prime * Vp ** 2 * np.mean(np.sum(J * J, axis=(-1, -2)))
    assert ev.replicon == pytest.approx(want, rel=1e-4)
    # and the trace of the same Jacobian is the Hessian-form V̂' (no jump in this regime)
    assert ev.V_hat_hessian == pytest.approx(-ch.alpha_prime * np.mean(np.trace(J, axis1=-2, axis2=-1)), rel=1e-4)


@pytest.mark.slow
def test_V_hat_stein_form_matches_finite_differences_where_the_prox_jumps():
    """THEORY/docs §4.3: V̂' is the distributional divergence of the global prox. In the Δ = 2, small-λ,
    λ' = 0.05 regime the prox often switches branch; the antithetic Stein estimator must agree with a
    finite-difference oracle (per-sample paired differences, 4 s.e.; central-difference bias O(ε²) ≪ s.e.),
    while the Hessian (implicit-differentiation) form must not (it misses the jumps: measured −0.09,
    ~8 s.e. at 2^15 samples) — so this test can fail either way."""
    from state_evolution.channel_lora import LoraChannel

    # the pre-training fixed point of softmax α = 0.1, Δ = 2, λ = 0.02 (m, q, ρ0), and the LoRA iterate there
    ch = LoraChannel.create(m=0.930, q=1.035, rho0=2.0, T=3, alpha_prime=3.0, delta_prime=2.0, gamma=1.0,
                            activation="softmax", beta=1.0, noise="logits", n_samples=2 ** 15,
                            n_test_samples=2 ** 10, seed=3)
    mp, qp, Vp = 0.774, 1.005, 0.985
    ev = ch.evaluate(mp, qp, Vp)
    fd = _finite_difference_V_hat(ch, mp, qp, Vp, eps=0.02)
    n = fd.size
    fd_mean, fd_se = fd.mean(), fd.std() / np.sqrt(n)
    se = math.hypot(ev.se["V_hat"], fd_se)
    assert abs(ev.V_hat - fd_mean) < 4 * se, (ev.V_hat, fd_mean, se)
    se_h = math.hypot(ev.se["V_hat_hessian"], fd_se)
    assert ev.V_hat_hessian - fd_mean > 4 * se_h, (ev.V_hat_hessian, fd_mean, se_h)


def test_V_hat_stein_and_hessian_forms_agree_where_the_prox_is_smooth(identity_pre):
    """Identity activation, moderate ridge: the prox has no branch switches to speak of, so the two
    estimators of V̂' (antithetic Stein, default; implicit differentiation, diagnostic) agree within
    4 combined Monte Carlo s.e.; ``v_hat`` is validated."""
    from solvable_attention.params import FinetuneParams
    from state_evolution.channel_lora import LoraChannel
    from state_evolution.finetuning import make_lora_channel

    ch = make_lora_channel(identity_pre, FinetuneParams(alpha_prime=3.0, lam_prime=1.0, delta_prime=0.5),
                           n_samples=2 ** 13, n_test_samples=2 ** 10)
    ev = ch.evaluate(0.6, 0.45, 0.5)
    assert abs(ev.V_hat - ev.V_hat_hessian) < 4 * math.hypot(ev.se["V_hat"], ev.se["V_hat_hessian"])
    with pytest.raises(ValueError, match="v_hat"):
        LoraChannel.create(m=0.5, q=0.5, rho0=1.0, T=3, alpha_prime=3.0, delta_prime=0.5, gamma=1.0,
                           activation="identity", beta=1.0, noise="logits", v_hat="autodiff")


def test_sweep_state_evolution_warm_starts_agree_with_single_solves_and_report_each_lambda():
    """``sweep_state_evolution`` (identity, 3 λ × 2 λ', small channels): one ``on_point`` call per λ with
    its λ' solutions, λ-major order, and each converged point equal to a cold single solve on the same
    fixed samples within the LoRA acceptance tolerance (5e-4 relative residual ⇒ a few 1e-3 in m', q')."""
    from state_evolution import sweep_state_evolution
    from state_evolution.finetuning import make_lora_channel, solve_finetuning
    from solvable_attention.params import FinetuneParams

    lams, lps = [0.05, 0.1, 0.2], [1.0, math.inf]
    seen = []
    sols = sweep_state_evolution(0.1, 3.0, 0.5, lams, lps, activation="identity", progress=False, seed=4,
                                 on_point=lambda s: seen.append([(x.pretrain.params.lam, x.finetune.params.lam_prime)
                                                                 for x in s]), **FAST)
    assert seen == [[(lam, lp) for lp in lps] for lam in lams]
    assert [(s.pretrain.params.lam, s.finetune.params.lam_prime) for s in sols] == [p for row in seen for p in row]
    assert all(s.converged for s in sols)
    last = sols[-2]  # λ = 0.2, λ' = 1: warm-started from the secant of the two previous λ
    ch = make_lora_channel(last.pretrain, FinetuneParams(alpha_prime=3.0, lam_prime=1.0, delta_prime=0.5), seed=5, **FAST)
    cold = solve_finetuning(last.pretrain, 3.0, 1.0, channel=ch)
    assert cold.m == pytest.approx(last.finetune.m, rel=5e-3) and cold.q == pytest.approx(last.finetune.q, rel=1e-2)
