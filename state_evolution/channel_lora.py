"""The rank-one LoRA output channel (fine-tuning stage), by Monte Carlo with fixed samples.

Per fine-tuning sample (docs/theory.md §4), with ``T``-dimensional fields and the frozen
pre-trained logits as side information:

    ω  = √q' ξ0,   z* = (m'/√q') ξ0 + √(ρ_v − m'²/q') ξ1          (ξ0, ξ1 ∈ R^T, i.i.d. N(0,1))
    Ĥ  = √q G0,    H0 = (m/√q) G0 + √(ρ0 − m²/q) G1              (GOE pair of the pre-training fixed point)
    Y' = σ(H0 + γ(z* z*ᵀ − ρ_v I) + √Δ' Ξ)   or   σ(H0 + γ(z* z*ᵀ − ρ_v I)) + √Δ' Ξ
    ℓ(z) = ½ ‖Y' − σ(c Ĥ + z zᵀ − q' I)‖²_F,      prox  z = ω + V' g,   g + ∇_z ℓ(ω + V' g) = 0

Conjugates (``α'`` samples per coordinate of ``u``):

    q̂' = α' E‖g‖²,   V̂' = −α' E Tr ∂g/∂ω,   m̂' = α' E[g·ξ1]/√(ρ_v − m'²/q'),

``V̂'`` by the antithetic Stein estimator (docs/theory.md §4.3): with ``ω = (m'/ρ_v) z* + s η``,
``s² = q' − m'²/ρ_v``, and ``g̃`` the prox at the reflected centre ``ω̃ = 2(m'/ρ_v) z* − ω``,

    V̂' = −α' E[(g − g̃)·η]/(2s).

The LoRA loss is non-convex in ``z`` (``zzᵀ``) and the global prox jumps where two local minima
exchange order; ``E Tr ∂g/∂ω`` then has a singular part on those surfaces that the implicit-
differentiation formula ``−Tr[(I + V'∇²ℓ)⁻¹∇²ℓ]`` (kept as ``V_hat_hessian``, a diagnostic) misses.
Stein's lemma counts it (measured: softmax, Δ = 2, λ = 0.02, λ' = 0.05: ``V̂'`` 0.863 vs 0.953).

the ridge shift from the diagonal centring ``−(‖u‖²/D) I`` (its gradient ``(2u/D) Σ_ν ∂ℓ_ν/∂q'``):

    λ_eff = λ' + 2α' E[∂ℓ/∂q'],

and, for recalibration, the stationarity of the scalar ``c``: ``E[∂ℓ/∂c] = 0``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from solvable_attention.activations import apply_activation
from solvable_attention.attention import lora_field_logits
from solvable_attention.labels import labels_from_draw
from solvable_attention.runtime import float64

from .goe_coordinates import from_coordinates, n_free_entries
from .loss_derivatives import as_entries, entry_sum, entries, logit_derivatives, logit_loss, stack_entries
from .overlap_fields import student_teacher_fields
from .prox_newton import UNFINISHED_RESIDUAL, solve_prox_multistart, start_towards
from .small_linalg import solve
from .sampling import N_SAMPLES, N_TEST_SAMPLES, TEST_SEED_OFFSET, gaussian_samples, sample_mean_se


def lora_loss(z, q_prime, c, H_hat, Y, activation, beta):
    """``ℓ = ½‖Y' − σ(c Ĥ + z zᵀ − q' I)‖²_F`` for one sample (the autodiff oracle of :func:`lora_derivatives`).

    docs/theory.md §4.1.

    Args:
        z: ``(T,)`` LoRA field.
        q_prime: ``q'``.
        c: the recalibration scalar.
        H_hat: ``(T, T)`` frozen logits ``Ĥ``.
        Y: ``(T, T)`` label ``Y'``.
        activation: ``"softmax"`` or ``"identity"``.
        beta: ``β > 0``.

    Returns:
        The scalar loss.
    """
    r = Y - apply_activation(lora_field_logits(H_hat, z, q_prime, c), activation, beta)
    return 0.5 * jnp.sum(r * r)


def _lora_logit_entries(z, q_prime, c, H_hat):
    """``c Ĥ + z zᵀ − q' I`` as a nested list of ``(n,)`` entries (:mod:`state_evolution.loss_derivatives`)."""
    T = z.shape[-1]
    Hh, zs = as_entries(H_hat), [z[..., k] for k in range(T)]
    return [[c * Hh[a][b] + zs[a] * zs[b] - (q_prime if a == b else 0.0) for b in range(T)] for a in range(T)]


def lora_batch_loss(z, q_prime, c, H_hat, Y, activation, beta):
    """``ℓ = ½‖Y' − σ(c Ĥ + z zᵀ − q' I)‖²_F`` per sample of a batch, shape ``(n,)`` (docs/theory.md §4.1).

    Args:
        z: ``(n, T)`` LoRA fields ``z`` (the projection of the inputs on ``û``).
        q_prime: ``q' = ‖û‖²/D`` (the diagonal centring).
        c: the recalibration scalar.
        H_hat: ``(n, T, T)`` frozen pre-trained logits ``Ĥ``.
        Y: ``(n, T, T)`` fine-tuning labels ``Y'``.
        activation: ``"softmax"`` or ``"identity"``.
        beta: ``β > 0``.

    Returns:
        ``(n,)`` losses.
    """
    return logit_loss(_lora_logit_entries(z, q_prime, c, H_hat), as_entries(Y), activation, beta)


def lora_derivatives(z, q_prime, c, H_hat, Y, activation, beta):
    """Closed-form derivatives of the batched LoRA loss (chain rule from :func:`logit_derivatives`).

    With ``G = ∂ℓ/∂H``, ``R[a,c,d] = ∂²ℓ/∂H_ac∂H_ad`` at ``H = cĤ + zzᵀ − q'I`` and
    ``P_k = ∂H/∂z_k = e_k zᵀ + z e_kᵀ``:

        ∇_z ℓ = (G + Gᵀ) z,      ∇²_z ℓ = Σ_a P_k[a,:] R[a] P_l[a,:]ᵀ + G + Gᵀ,
        ∂ℓ/∂q' = −tr G,          ∂ℓ/∂c = ⟨G, Ĥ⟩,      ∂²ℓ/∂c² = Σ_a Ĥ[a,:] R[a] Ĥ[a,:]ᵀ.

    The first sum, expanded with ``P_k[a,c] = δ_ka z_c + z_a δ_kc`` (``R`` symmetric in ``c, d``), is
    ``δ_kl u_k + z_k w_kl + z_l w_lk + Σ_a z_a² R[a,k,l]`` with ``w_ac = Σ_d R[a,c,d] z_d`` and
    ``u_a = Σ_c z_c w_ac``; everything is evaluated entry by entry (structure of arrays).

    Args:
        z: ``(n, T)`` LoRA fields ``z`` (the projection of the inputs on ``û``).
        q_prime: ``q' = ‖û‖²/D`` (the diagonal centring).
        c: the recalibration scalar.
        H_hat: ``(n, T, T)`` frozen pre-trained logits ``Ĥ``.
        Y: ``(n, T, T)`` fine-tuning labels ``Y'``.
        activation: ``"softmax"`` or ``"identity"``.
        beta: ``β > 0``.

    Returns:
        ``(∇_z ℓ, ∇²_z ℓ, ∂ℓ/∂q', ∂ℓ/∂c, ∂²ℓ/∂c²)`` with shapes ``(n,T), (n,T,T), (n,), (n,), (n,)``.
    """
    T = z.shape[-1]
    zs = [z[..., k] for k in range(T)]
    Hh = as_entries(H_hat)
    G, R = logit_derivatives(_lora_logit_entries(z, q_prime, c, Hh), as_entries(Y), activation, beta)
    w = [[entry_sum(R(a, k, d) * zs[d] for d in range(T)) for k in range(T)] for a in range(T)]
    u = [entry_sum(zs[k] * w[a][k] for k in range(T)) for a in range(T)]
    hess = [[None] * T for _ in range(T)]
    for k in range(T):
        for l in range(k, T):
            v = zs[k] * w[k][l] + zs[l] * w[l][k] + G[k][l] + G[l][k] \
                + entry_sum(zs[a] * zs[a] * R(a, k, l) for a in range(T))
            hess[k][l] = hess[l][k] = v + u[k] if k == l else v
    grad = jnp.stack([entry_sum((G[k][d] + G[d][k]) * zs[d] for d in range(T)) for k in range(T)], axis=-1)
    dq = -entry_sum(G[a][a] for a in range(T))
    dc = entry_sum(G[a][b] * Hh[a][b] for a in range(T) for b in range(T))
    dcc = entry_sum(Hh[a][k] * R(a, k, d) * Hh[a][d] for a in range(T) for k in range(T) for d in range(T))
    return grad, stack_entries(hess), dq, dc, dcc


def teacher_logits(H0, z_star, gamma, rho_v):
    """``H0 + γ (z* z*ᵀ − ρ_v I)``: the fine-tuning teacher's logits (docs/theory.md §4.1).

    Args:
        H0: ``(n, T, T)`` pre-training teacher logits.
        z_star: ``(n, T)`` teacher fields ``z*`` (projection on ``v``).
        gamma: ``γ > 0``.
        rho_v: ``ρ_v = ‖v‖²/D``.

    Returns:
        ``(n, T, T)`` logits.
    """
    T = z_star.shape[-1]
    return H0 + gamma * (z_star[..., :, None] * z_star[..., None, :] - rho_v * jnp.eye(T, dtype=H0.dtype))


def fresh_side_fields(m, q, rho0, G0, G1):
    """Whitened ``(Ĥ, H0)`` of fresh samples: the GOE pair with covariance ``[[q, m], [m, ρ0]]`` per coordinate.

    Args:
        m: pre-training overlap ``m``.
        q: pre-training self-overlap ``q``.
        rho0: ``ρ0``.
        G0: ``(n, K)`` standard normals.
        G1: ``(n, K)`` standard normals.

    Returns:
        ``(Ĥ_w, H0_w)``, two ``(n, K)`` arrays.
    """
    H_hat_w, H0_w, _ = student_teacher_fields(m, q, rho0, G0, G1)
    return H_hat_w, H0_w


@partial(jax.jit, static_argnames=("activation", "noise", "max_newton", "v_hat"))
def _lora_statistics(mp, qp, Vp, c, side, consts, samples, activation, noise, max_newton, v_hat="stein"):
    """Per-sample terms whose (weighted) means give the conjugates; ``side = (Ĥ_w, H0_w)`` whitened."""
    rho_v, gamma, delta_p, beta = consts
    xi0, xi1, noise_draw = samples
    T = xi0.shape[-1]
    omega, z_star, c1 = student_teacher_fields(mp, qp, rho_v, xi0, xi1)
    H_hat, H0 = from_coordinates(side[0], T), from_coordinates(side[1], T)
    Y = labels_from_draw(teacher_logits(H0, z_star, gamma, rho_v), noise_draw, delta_p, activation, beta, noise)

    def loss(z, d):
        Y_, H_hat_, _ = d
        return lora_batch_loss(z, qp, c, H_hat_, Y_, activation, beta)

    def derivs(z, d):
        Y_, H_hat_, _ = d
        return lora_derivatives(z, qp, c, H_hat_, Y_, activation, beta)[:2]

    def prox(centre, data):  # two starts, z = ω and z = z*; the lower LoRA objective wins (non-convex in z)
        starts = (jnp.zeros_like(centre), start_towards(centre, Vp, data[2]))
        return solve_prox_multistart(centre, Vp, starts, loss, derivs, max_newton, data=data)

    data = (entries(Y), entries(H_hat), z_star)  # split once: the Newton loop reads contiguous entries
    if v_hat == "hessian":
        g, _, residual, iters = prox(omega, data)
    else:  # antithetic Stein: ω = (m'/ρ_v) z* + s η, reflected ω̃ = 2(m'/ρ_v) z* − ω (η → −η); one batch
        n = omega.shape[0]
        both = lambda a, b: jnp.concatenate([a, b], axis=0)  # noqa: E731
        g2, _, residual, iters = prox(both(omega, 2 * (mp / rho_v) * z_star - omega),
                                      jax.tree_util.tree_map(lambda a: both(a, a), data))
        g, g_r = g2[:n], g2[n:]
    z = omega + Vp * g
    _, hess, dq, dc, dcc = lora_derivatives(z, qp, c, H_hat, Y, activation, beta)
    jac = solve(jnp.eye(T, dtype=g.dtype) + Vp * hess, hess)  # −∂g/∂ω of the smooth branch (implicit form)
    hessian_term = jnp.trace(jac, axis1=-2, axis2=-1)
    if v_hat == "hessian":
        v_term = hessian_term
    else:
        s = jnp.sqrt(jnp.maximum(qp - mp ** 2 / rho_v, 0.0))
        eta = (omega - (mp / rho_v) * z_star) / jnp.maximum(s, 1e-300)
        stein = -jnp.sum((g - g_r) * eta, -1) / (2 * jnp.maximum(s, 1e-300))
        v_term = jnp.where(s > 1e-6, stein, hessian_term)
    terms = dict(q=jnp.sum(g * g, -1), V=v_term, V_hessian=hessian_term,
                 m=jnp.sum(g * xi1, -1) / jnp.maximum(c1, 1e-300), dq=dq, dc=dc, dcc=dcc, train=2 * loss(z, data),
                 jac2=jnp.sum(jac * jac, axis=(-1, -2)))
    return terms, g, residual, iters


@partial(jax.jit, static_argnames=("activation",))
def _lora_test_samples(mp, qp, c, pre, consts, samples, activation):
    """Per-sample ``‖σ(cĤ + zzᵀ − q'I) − σ(H0 + γ(z*z*ᵀ − ρ_v I))‖²`` and the same with ``u = 0, c = 1``."""
    m, q, rho0 = pre
    rho_v, gamma, _, beta = consts
    xi0, xi1, G0, G1 = samples
    T = xi0.shape[-1]
    z, z_star, _ = student_teacher_fields(mp, qp, rho_v, xi0, xi1)
    H_hat_w, H0_w = fresh_side_fields(m, q, rho0, G0, G1)
    H_hat, H0 = from_coordinates(H_hat_w, T), from_coordinates(H0_w, T)
    target = apply_activation(teacher_logits(H0, z_star, gamma, rho_v), activation, beta)
    d = apply_activation(lora_field_logits(H_hat, z, qp, c), activation, beta) - target
    d0 = apply_activation(H_hat, activation, beta) - target
    return jnp.sum(d * d, axis=(-1, -2)), jnp.sum(d0 * d0, axis=(-1, -2))


@dataclass(frozen=True)
class LoraEvaluation:
    """One evaluation of the LoRA channel: conjugates, ridge shift ``2α'E[∂ℓ/∂q']``, ``E[∂ℓ/∂c]``,
    ``E[∂²ℓ/∂c²]``, train loss and prox diagnostics.

    ``replicon = α' V'² E‖∂g/∂ω‖²_F`` with the smooth-branch Jacobian ``∂g/∂ω = −(I + V'∇²ℓ)⁻¹∇²ℓ``:
    the replicon (de Almeida–Thouless) parameter of the ridge GLM; the replica-symmetric fixed point
    is locally stable while it is below 1 (docs/theory.md §4.5). The jumps of the global prox are
    not in it (they only add to it).

    Attributes:
        m_hat: ``m̂' = α' E[g·ξ1]/√(ρ_v − m'²/q')``.
        q_hat: ``q̂' = α' E‖g‖²``.
        V_hat: ``V̂'`` by the antithetic Stein estimator (or the Hessian one, per the channel's ``v_hat``).
        ridge_shift: ``2α' E[∂ℓ/∂q']`` (``λ_eff = λ' + ridge_shift``).
        V_hat_hessian: ``−α' E Tr ∂g/∂ω`` by implicit differentiation (a diagnostic).
        dc: ``E[∂ℓ/∂c]``.
        dcc: ``E[∂²ℓ/∂c²]``.
        train_loss: ``(mean, s.e.)`` of the training residual.
        se: Monte Carlo standard errors of ``m_hat, q_hat, V_hat, V_hat_hessian, ridge_shift``.
        prox_residual: the worst per-sample prox residual.
        replicon: ``α' V'² E‖∂g/∂ω‖²_F``.
        unfinished: proxes whose residual ended above ``prox_newton.UNFINISHED_RESIDUAL``.
        n: proxes solved (both Stein branches count).
    """

    m_hat: float
    q_hat: float
    V_hat: float
    ridge_shift: float
    V_hat_hessian: float
    dc: float
    dcc: float
    train_loss: tuple
    se: dict
    prox_residual: float
    replicon: float = math.nan
    unfinished: int = 0
    n: int = 0


@dataclass(frozen=True)
class LoraChannel:
    """Fixed-sample LoRA channel for a pre-training state ``(m, q, ρ0)`` and fine-tuning setting.

    ``activation, beta, noise`` as pre-training; ``alpha_prime, delta_prime, gamma``; ``rho_v = 1``.
    ``samples = (ξ0, ξ1, G0, G1, noise)`` training draws, ``test_samples = (ξ0, ξ1, G0, G1)``.

    Hooks for variants whose fine-tuning samples are not fresh (reuse, active selection;
    docs/theory.md §4–5): ``side_fields = (Ĥ_w, H0_w)``, two ``(n_samples, K)`` arrays of whitened
    coordinates replacing the fresh GOE pair of the training side, and ``weights``, ``(n_samples,)``
    non-negative importance weights of the training samples (every training expectation and its
    s.e. become weighted; normalised here). The test errors always use fresh, unweighted samples.

    Attributes:
        m: pre-training overlap ``m``.
        q: pre-training self-overlap ``q``.
        rho0: ``ρ0``.
        alpha_prime: ``α'``, fine-tuning samples per ``D``.
        delta_prime: ``Δ'``, fine-tuning label noise.
        gamma: ``γ``, strength of the new direction.
        activation: ``"softmax"`` or ``"identity"``.
        beta: ``β``.
        noise: ``"logits"`` or ``"output"``.
        samples: training draws ``(ξ0, ξ1, G0, G1, noise)``.
        test_samples: test draws ``(ξ0, ξ1, G0, G1)``.
        rho_v: ``ρ_v = 1``.
        max_newton: Newton steps at most per prox.
        v_hat: ``"stein"`` or ``"hessian"``, the estimator of ``V̂'``.
        side_fields: ``(Ĥ_w, H0_w)``, two ``(n_samples, K)`` arrays, or ``None`` (fresh).
        weights: ``(n_samples,)`` importance weights, or ``None``.
    """

    m: float
    q: float
    rho0: float
    alpha_prime: float
    delta_prime: float
    gamma: float
    activation: str
    beta: float
    noise: str
    samples: tuple
    test_samples: tuple
    rho_v: float = 1.0
    max_newton: int = 60
    v_hat: str = "stein"
    side_fields: tuple | None = None
    weights: object = None

    @classmethod
    def create(cls, *, m, q, rho0, T, alpha_prime, delta_prime, gamma, activation, beta, noise,
               n_samples=N_SAMPLES, n_test_samples=N_TEST_SAMPLES, seed=1, max_newton=60,
               sampling="sobol", side_fields=None, weights=None, v_hat="stein") -> "LoraChannel":
        """Fixed samples from ``seed``: scrambled Sobol by default, ``"iid"`` on request (:mod:`state_evolution.sampling`).

        ``v_hat``: estimator of ``V̂'``, ``"stein"`` (antithetic Stein, the default: includes the jumps of
        the global prox) or ``"hessian"`` (the implicit-differentiation part only; a diagnostic).

        Args:
            m: pre-training overlap ``m``.
            q: pre-training self-overlap ``q``.
            rho0: ``ρ0``.
            T: tokens.
            alpha_prime: ``α' > 0``.
            delta_prime: ``Δ' ≥ 0``.
            gamma: ``γ > 0``.
            activation: ``"softmax"`` or ``"identity"``.
            beta: ``β > 0``.
            noise: ``"logits"`` or ``"output"``.
            n_samples: training samples.
            n_test_samples: test samples.
            seed: seed of the samples (the test set uses ``seed + 7919``).
            max_newton: Newton steps at most per prox.
            sampling: ``"sobol"`` or ``"iid"``.
            side_fields: see :meth:`conditioned`.
            weights: see :meth:`conditioned`.
            v_hat: ``"stein"`` or ``"hessian"``.

        Returns:
            The :class:`LoraChannel`.

        Raises:
            ValueError: an unknown ``v_hat`` or ``sampling``, or invalid ``side_fields``/``weights``.
        """
        if v_hat not in ("stein", "hessian"):
            raise ValueError(f"v_hat must be 'stein' or 'hessian', got {v_hat!r}")
        K = n_free_entries(T)
        train = gaussian_samples(int(n_samples), [(T,), (T,), (K,), (K,), (T, T)], seed, sampling)
        test = gaussian_samples(int(n_test_samples), [(T,), (T,), (K,), (K,)], seed + TEST_SEED_OFFSET, sampling)
        with float64():
            samples = tuple(jnp.asarray(x, jnp.float64) for x in train)
            test = tuple(jnp.asarray(x, jnp.float64) for x in test)
        channel = cls(m=float(m), q=float(q), rho0=float(rho0), alpha_prime=float(alpha_prime),
                      delta_prime=float(delta_prime), gamma=float(gamma), activation=activation, beta=float(beta),
                      noise=noise, samples=samples, test_samples=test, max_newton=max_newton, v_hat=v_hat)
        return channel.conditioned(side_fields, weights) if (side_fields is not None or weights is not None) \
            else channel

    def conditioned(self, side_fields=None, weights=None) -> "LoraChannel":
        """The same channel with training-side fields ``(Ĥ_w, H0_w)`` and/or importance ``weights`` (validated).

        Args:
            side_fields: two ``(n_samples, K)`` finite arrays ``(Ĥ_w, H0_w)``, or ``None``.
            weights: ``(n_samples,)`` finite non-negative weights with a positive sum, or ``None``.

        Returns:
            The new :class:`LoraChannel`.

        Raises:
            ValueError: ``side_fields`` of the wrong shape or not finite, or invalid ``weights``.
        """
        n, K = self.samples[2].shape
        with float64():
            if side_fields is not None:
                side_fields = tuple(jnp.asarray(a, jnp.float64) for a in side_fields)
                if len(side_fields) != 2 or any(a.shape != (n, K) for a in side_fields):
                    raise ValueError(f"side_fields must be two arrays of shape ({n}, {K}), got "
                                     f"{[getattr(a, 'shape', None) for a in side_fields]}")
                if not all(bool(jnp.all(jnp.isfinite(a))) for a in side_fields):
                    raise ValueError("side_fields must be finite")
            if weights is not None:
                weights = np.asarray(weights, float)
                if weights.shape != (n,) or not np.all(np.isfinite(weights)) or np.any(weights < 0) \
                        or weights.sum() <= 0:
                    raise ValueError(f"weights must be {n} finite non-negative numbers with a positive sum")
        return replace(self, side_fields=side_fields, weights=weights)

    def with_pretraining(self, m, q, rho0=None) -> "LoraChannel":
        """The same fixed samples at another pre-training state (warm sweeps over ``λ``; no new draws).

        Args:
            m: pre-training overlap ``m``.
            q: pre-training self-overlap ``q``.
            rho0: ``ρ0`` (default: unchanged).

        Returns:
            The new :class:`LoraChannel`.

        Raises:
            ValueError: the channel has explicit ``side_fields``.
        """
        if self.side_fields is not None:
            raise ValueError("a channel with explicit side_fields is tied to its pre-training state")
        return replace(self, m=float(m), q=float(q), rho0=self.rho0 if rho0 is None else float(rho0))

    @property
    def _pre(self):
        return (self.m, self.q, self.rho0)

    @property
    def _consts(self):
        return (self.rho_v, self.gamma, self.delta_prime, self.beta)

    def training_side_fields(self):
        """Whitened ``(Ĥ, H0)`` of the training samples: ``side_fields`` or the fresh GOE pair.

        Returns:
            ``(Ĥ_w, H0_w)``, two ``(n_samples, K)`` arrays.
        """
        if self.side_fields is not None:
            return self.side_fields
        with float64():
            return fresh_side_fields(self.m, self.q, self.rho0, self.samples[2], self.samples[3])

    def evaluate(self, mp, qp, Vp, c=1.0) -> LoraEvaluation:
        """The LoRA channel at ``(m', q', V', c)`` (a pure function of them; docs/theory.md §4.3).

        Args:
            mp: ``m'``, overlap of ``û`` with ``v``.
            qp: ``q' ≥ 0``, ``‖û‖²/D``.
            Vp: ``V' ≥ 0``, the response.
            c: the recalibration scalar.

        Returns:
            The :class:`LoraEvaluation` (conjugates, ridge shift, ``c`` derivatives, diagnostics).
        """
        xi0, xi1, _, _, noise_draw = self.samples
        with float64():
            t, g, res, _ = _lora_statistics(mp, qp, Vp, c, self.training_side_fields(), self._consts,
                                            (xi0, xi1, noise_draw), self.activation, self.noise, self.max_newton,
                                            self.v_hat)
            a = self.alpha_prime
            stats = {k: sample_mean_se(v, self.weights) for k, v in t.items()}
            se = {"m_hat": a * stats["m"][1], "q_hat": a * stats["q"][1], "V_hat": a * stats["V"][1],
                  "V_hat_hessian": a * stats["V_hessian"][1],
                  "ridge_shift": 2 * a * stats["dq"][1]}
            return LoraEvaluation(m_hat=a * stats["m"][0], q_hat=a * stats["q"][0], V_hat=a * stats["V"][0],
                                  ridge_shift=2 * a * stats["dq"][0], V_hat_hessian=a * stats["V_hessian"][0],
                                  dc=stats["dc"][0], dcc=stats["dcc"][0],
                                  train_loss=stats["train"], se=se, prox_residual=float(jnp.max(res)),
                                  replicon=a * Vp ** 2 * stats["jac2"][0],
                                  unfinished=int(jnp.sum(res > UNFINISHED_RESIDUAL)), n=int(res.shape[0]))

    def test_errors(self, mp, qp, c=1.0) -> dict:
        """``E'`` and ``E'_0`` (mean, s.e.) on fresh samples (same samples: common random numbers).

        ``E' = E‖σ(cĤ + zzᵀ − q'I) − σ(H0 + γ(z*z*ᵀ − ρ_v I))‖²_F``; ``E'_0`` the same with ``u = 0, c = 1``
        (docs/model.md §4, docs/theory.md §4.3).

        Args:
            mp: ``m'``.
            qp: ``q' ≥ 0``.
            c: the recalibration scalar.

        Returns:
            ``{"test_error": (mean, s.e.), "test_error_baseline": (mean, s.e.)}``.
        """
        with float64():
            e, e0 = _lora_test_samples(mp, qp, c, self._pre, self._consts, self.test_samples, self.activation)
            return {"test_error": sample_mean_se(e), "test_error_baseline": sample_mean_se(e0)}
