"""The rank-one LoRA output channel (fine-tuning stage), by Monte Carlo with fixed samples.

Per fine-tuning sample (docs/theory.md §4), with ``T``-dimensional fields and the frozen
pre-trained logits as side information:

    ω  = √q' ξ0,   z* = (m'/√q') ξ0 + √(ρ_v − m'²/q') ξ1          (ξ0, ξ1 ∈ R^T, i.i.d. N(0,1))
    Ĥ  = √q G0,    H0 = (m/√q) G0 + √(ρ0 − m²/q) G1              (GOE pair of the pre-training fixed point)
    Y' = σ(H0 + γ(z* z*ᵀ − ρ_v I) + √Δ' Ξ)   or   σ(H0 + γ(z* z*ᵀ − ρ_v I)) + √Δ' Ξ
    ℓ(z) = ½ ‖Y' − σ(c Ĥ + z zᵀ − q' I)‖²_F,      prox  z = ω + V' g,   g + ∇_z ℓ(ω + V' g) = 0

Conjugates (``α'`` samples per coordinate of ``u``):

    q̂' = α' E‖g‖²,   V̂' = α' E Tr[(I + V'∇²ℓ)⁻¹ ∇²ℓ],   m̂' = α' E[g·ξ1]/√(ρ_v − m'²/q'),

the ridge shift from the diagonal centring ``−(‖u‖²/D) I`` (its gradient ``(2u/D) Σ_ν ∂ℓ_ν/∂q'``):

    λ_eff = λ' + 2α' E[∂ℓ/∂q'],

and, for recalibration, the stationarity of the scalar ``c``: ``E[∂ℓ/∂c] = 0``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from solvable_attention.activations import apply_activation
from solvable_attention.runtime import float64

from .goe_coordinates import from_coordinates, goe_from_square, n_free_entries
from .overlap_fields import student_teacher_fields
from .prox_newton import solve_prox_multistart, start_towards
from .small_linalg import solve
from .sampling import gaussian_samples, sample_mean_se


def lora_loss(z, q_prime, c, H_hat, Y, activation, beta):
    """``ℓ = ½‖Y' − σ(c Ĥ + z zᵀ − q' I)‖²_F`` for one sample."""
    T = z.shape[-1]
    H = c * H_hat + jnp.outer(z, z) - q_prime * jnp.eye(T, dtype=z.dtype)
    r = Y - apply_activation(H, activation, beta)
    return 0.5 * jnp.sum(r * r)


def teacher_logits(H0, z_star, gamma, rho_v):
    """``H0 + γ (z* z*ᵀ − ρ_v I)``."""
    T = z_star.shape[-1]
    return H0 + gamma * (z_star[..., :, None] * z_star[..., None, :] - rho_v * jnp.eye(T, dtype=H0.dtype))


@partial(jax.jit, static_argnames=("activation", "noise", "max_newton"))
def _lora_statistics(mp, qp, Vp, c, pre, consts, samples, activation, noise, max_newton):
    m, q, rho0 = pre
    rho_v, gamma, delta_p, beta = consts
    xi0, xi1, G0, G1, noise_draw = samples
    T = xi0.shape[-1]
    omega, z_star, c1 = student_teacher_fields(mp, qp, rho_v, xi0, xi1)
    H_hat_w, H0_w, _ = student_teacher_fields(m, q, rho0, G0, G1)
    H_hat, H0 = from_coordinates(H_hat_w, T), from_coordinates(H0_w, T)
    target = teacher_logits(H0, z_star, gamma, rho_v)
    if noise == "logits":
        Y = apply_activation(target + jnp.sqrt(delta_p) * goe_from_square(noise_draw), activation, beta)
    else:
        Y = apply_activation(target, activation, beta) + jnp.sqrt(delta_p) * noise_draw

    one = lambda z, Hh, y: lora_loss(z, qp, c, Hh, y, activation, beta)  # noqa: E731
    loss = lambda z: jax.vmap(one)(z, H_hat, Y)  # noqa: E731
    derivs = lambda z: (jax.vmap(jax.grad(one))(z, H_hat, Y), jax.vmap(jax.hessian(one))(z, H_hat, Y))  # noqa: E731
    # two starts, z = ω and z = z* (the teacher's field); the lower LoRA objective wins (non-convex in z)
    starts = (jnp.zeros_like(omega), start_towards(omega, Vp, z_star))
    g, hess, residual, iters = solve_prox_multistart(omega, Vp, starts, loss, derivs, max_newton)
    z = omega + Vp * g
    dq = jax.vmap(jax.grad(lora_loss, argnums=1), in_axes=(0, None, None, 0, 0, None, None))(
        z, qp, c, H_hat, Y, activation, beta)
    dc_fn = jax.grad(lora_loss, argnums=2)
    dc = jax.vmap(dc_fn, in_axes=(0, None, None, 0, 0, None, None))(z, qp, c, H_hat, Y, activation, beta)
    dcc = jax.vmap(jax.grad(dc_fn, argnums=2), in_axes=(0, None, None, 0, 0, None, None))(
        z, qp, c, H_hat, Y, activation, beta)
    terms = dict(q=jnp.sum(g * g, -1), V=jnp.trace(solve(jnp.eye(T, dtype=g.dtype) + Vp * hess, hess), axis1=-2, axis2=-1),
                 m=jnp.sum(g * xi1, -1) / jnp.maximum(c1, 1e-300), dq=dq, dc=dc, dcc=dcc,
                 train=2 * jax.vmap(one)(z, H_hat, Y))
    return terms, g, residual, iters


@partial(jax.jit, static_argnames=("activation",))
def _lora_test_samples(mp, qp, c, pre, consts, samples, activation):
    """Per-sample ``‖σ(cĤ + zzᵀ − q'I) − σ(H0 + γ(z*z*ᵀ − ρ_v I))‖²`` and the same with ``u = 0, c = 1``."""
    m, q, rho0 = pre
    rho_v, gamma, _, beta = consts
    xi0, xi1, G0, G1 = samples
    T = xi0.shape[-1]
    z, z_star, _ = student_teacher_fields(mp, qp, rho_v, xi0, xi1)
    H_hat_w, H0_w, _ = student_teacher_fields(m, q, rho0, G0, G1)
    H_hat, H0 = from_coordinates(H_hat_w, T), from_coordinates(H0_w, T)
    target = apply_activation(teacher_logits(H0, z_star, gamma, rho_v), activation, beta)
    model = c * H_hat + z[..., :, None] * z[..., None, :] - qp * jnp.eye(T, dtype=z.dtype)
    d = apply_activation(model, activation, beta) - target
    d0 = apply_activation(H_hat, activation, beta) - target
    return jnp.sum(d * d, axis=(-1, -2)), jnp.sum(d0 * d0, axis=(-1, -2))


@dataclass(frozen=True)
class LoraEvaluation:
    """One evaluation of the LoRA channel: conjugates, ridge shift ``2α'E[∂ℓ/∂q']``, ``E[∂ℓ/∂c]``,
    ``E[∂²ℓ/∂c²]``, train loss and prox diagnostics."""

    m_hat: float
    q_hat: float
    V_hat: float
    ridge_shift: float
    dc: float
    dcc: float
    train_loss: tuple
    se: dict
    prox_residual: float


@dataclass(frozen=True)
class LoraChannel:
    """Fixed-sample LoRA channel for a pre-training state ``(m, q, ρ0)`` and fine-tuning setting.

    ``activation, beta, noise`` as pre-training; ``alpha_prime, delta_prime, gamma``; ``rho_v = 1``.
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

    @classmethod
    def create(cls, *, m, q, rho0, T, alpha_prime, delta_prime, gamma, activation, beta, noise,
               n_samples=2 ** 14, n_test_samples=2 ** 17, seed=1, max_newton=60,
               sampling="sobol") -> "LoraChannel":
        """Fixed samples from ``seed``: scrambled Sobol by default, ``"iid"`` on request (:mod:`state_evolution.sampling`)."""
        K = n_free_entries(T)
        train = gaussian_samples(int(n_samples), [(T,), (T,), (K,), (K,), (T, T)], seed, sampling)
        test = gaussian_samples(int(n_test_samples), [(T,), (T,), (K,), (K,)], seed + 7919, sampling)
        with float64():
            samples = tuple(jnp.asarray(x, jnp.float64) for x in train)
            test = tuple(jnp.asarray(x, jnp.float64) for x in test)
        return cls(m=float(m), q=float(q), rho0=float(rho0), alpha_prime=float(alpha_prime),
                   delta_prime=float(delta_prime), gamma=float(gamma), activation=activation, beta=float(beta),
                   noise=noise, samples=samples, test_samples=test, max_newton=max_newton)

    @property
    def _pre(self):
        return (self.m, self.q, self.rho0)

    @property
    def _consts(self):
        return (self.rho_v, self.gamma, self.delta_prime, self.beta)

    def evaluate(self, mp, qp, Vp, c=1.0) -> LoraEvaluation:
        """The LoRA channel at ``(m', q', V', c)`` (a pure function of them)."""
        with float64():
            t, g, res, _ = _lora_statistics(mp, qp, Vp, c, self._pre, self._consts, self.samples,
                                            self.activation, self.noise, self.max_newton)
            a = self.alpha_prime
            stats = {k: sample_mean_se(v) for k, v in t.items()}
            se = {"m_hat": a * stats["m"][1], "q_hat": a * stats["q"][1], "V_hat": a * stats["V"][1],
                  "ridge_shift": 2 * a * stats["dq"][1]}
            return LoraEvaluation(m_hat=a * stats["m"][0], q_hat=a * stats["q"][0], V_hat=a * stats["V"][0],
                                  ridge_shift=2 * a * stats["dq"][0], dc=stats["dc"][0], dcc=stats["dcc"][0],
                                  train_loss=stats["train"], se=se, prox_residual=float(res))

    def test_errors(self, mp, qp, c=1.0) -> dict:
        """``E'`` and ``E'_0`` (mean, s.e.) on fresh samples (same samples: common random numbers)."""
        with float64():
            e, e0 = _lora_test_samples(mp, qp, c, self._pre, self._consts, self.test_samples, self.activation)
            return {"test_error": sample_mean_se(e), "test_error_baseline": sample_mean_se(e0)}
