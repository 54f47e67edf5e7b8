"""The LoRA channel of state_evolution/channel_lora.py (docs/theory.md §4): its closed-form derivatives
against automatic differentiation, the reuse/selection hooks, the replicon against a finite-difference
Jacobian of the prox, and the two estimators of V̂'."""

import math

import numpy as np
import pytest


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
    """docs/theory.md §4.3: V̂' is the distributional divergence of the global prox. In the Δ = 2, small-λ,
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
