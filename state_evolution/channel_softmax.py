"""The softmax output channel (and any activation) by Monte Carlo with fixed samples.

For each of ``n`` fixed standard-normal draws ``(ξ0, ξ1) ∈ R^K × R^K`` and a
``T×T`` noise draw (common random numbers: the map ``(m, q, V) ↦ (m̂, q̂, V̂)``
is deterministic), with ``K = T(T+1)/2`` whitened coordinates:

    ω = √q ξ0,   h0 = (m/√q) ξ0 + √(ρ0 − m²/q) ξ1,
    Y = σ(H(h0) + √Δ Ξ)  (logits noise, Ξ GOE)   or   σ(H(h0)) + √Δ Ξ  (output noise),
    g* solves  g + ∇ℓ(Y, ω + V g) = 0   (the prox h* = ω + V g* of ‖h − ω‖²/(2V) + ℓ;
                                         :mod:`state_evolution.prox_newton`),

found by a modified Newton method on ``g`` (Hessian ``J = I + V ∇²ℓ`` shifted to be
positive definite, step chosen among {1, ½, …} to decrease ``V‖g‖²/2 + ℓ(ω + Vg)``);
this parametrisation stays well conditioned as ``V → 0``. By implicit
differentiation ``∂g/∂ω = −(I + V∇²ℓ)⁻¹ ∇²ℓ``, so

    q̂ = 2α E‖g‖²,   V̂ = 2α E Tr[(I + V∇²ℓ)⁻¹ ∇²ℓ],   m̂ = 2α E[g·ξ1]/√(ρ0 − m²/q)  (Stein).

Everything runs under ``jax.jit`` + ``jax.vmap`` over the samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from solvable_attention.activations import apply_activation
from solvable_attention.runtime import float64
from solvable_attention.params import PretrainParams

from .channels import ChannelEvaluation, Conjugates
from .goe_coordinates import from_coordinates, n_free_entries
from .loss_derivatives import loss_derivatives, loss_value
from .prox_newton import solve_prox
from .sampling import gaussian_samples

def per_sample_loss(h, Y, T, activation, beta):
    """``ℓ(Y, h) = ½ ‖Y − σ(H(h))‖²_F`` for whitened logits ``h`` (one sample; used as autodiff oracle)."""
    r = Y - apply_activation(from_coordinates(h, T), activation, beta)
    return 0.5 * jnp.sum(r * r)


def _fields(m, q, rho0, xi0, xi1):
    """``ω = √q ξ0`` and ``h0 = (m/√q) ξ0 + √(ρ0 − m²/q) ξ1`` (safe at ``q = 0``); also ``√(ρ0 − m²/q)``."""
    q_safe = jnp.maximum(q, 1e-300)
    c0 = jnp.where(q > 0, m / jnp.sqrt(q_safe), 0.0)
    c1 = jnp.sqrt(jnp.maximum(rho0 - c0 ** 2, 0.0))
    return jnp.sqrt(q) * xi0, c0 * xi0 + c1 * xi1, c1


def channel_labels(h0, noise_draw, delta, T, activation, beta, noise):
    """``Y = σ(H(h0) + √Δ Ξ)`` (``Ξ = (G + Gᵀ)/√2``) or ``σ(H(h0)) + √Δ G`` from ``G = noise_draw``."""
    H0 = from_coordinates(h0, T)
    if noise == "logits":
        Xi = (noise_draw + jnp.swapaxes(noise_draw, -1, -2)) / jnp.sqrt(2.0)
        return apply_activation(H0 + jnp.sqrt(delta) * Xi, activation, beta)
    return apply_activation(H0, activation, beta) + jnp.sqrt(delta) * noise_draw


@partial(jax.jit, static_argnames=("T", "activation", "noise", "max_newton"))
def _channel_statistics(m, q, V, rho0, delta, beta, xi0, xi1, noise_draw, g_init, T, activation, noise,
                        max_newton):
    """Per-sample terms whose means are ``q̂/2α, V̂/2α, m̂/2α`` and the train loss; plus ``g*``."""
    omega, h0, c1 = _fields(m, q, rho0, xi0, xi1)
    Y = channel_labels(h0, noise_draw, delta, T, activation, beta, noise)
    loss = lambda h: loss_value(h, Y, T, activation, beta)  # noqa: E731
    derivs = lambda h: loss_derivatives(h, Y, T, activation, beta)  # noqa: E731
    g, hess, residual, iters = solve_prox(omega, V, g_init, loss, derivs, max_newton)
    K = xi0.shape[-1]
    A = jnp.linalg.inv(jnp.eye(K, dtype=g.dtype) + V * hess)
    q_term = jnp.sum(g * g, axis=-1)
    V_term = jnp.einsum("nij,nji->n", A, hess)
    m_term = jnp.sum(g * xi1, axis=-1) / jnp.maximum(c1, 1e-300)
    r = Y - apply_activation(from_coordinates(omega + V * g, T), activation, beta)
    train = jnp.sum(r * r, axis=(-1, -2))
    return q_term, V_term, m_term, train, g, residual, iters


@partial(jax.jit, static_argnames=("T", "activation"))
def _test_error_samples(m, q, rho0, beta, xi0, xi1, T, activation):
    """``‖σ(H(ω)) − σ(H(h0))‖²_F`` per sample (the pair ``(Ĥ, H0)`` on fresh inputs)."""
    omega, h0, _ = _fields(m, q, rho0, xi0, xi1)
    d = apply_activation(from_coordinates(omega, T), activation, beta) - \
        apply_activation(from_coordinates(h0, T), activation, beta)
    return jnp.sum(d * d, axis=(-1, -2))


def _mean_se(x) -> tuple[float, float]:
    x = np.asarray(x)
    return float(x.mean()), float(x.std(ddof=1) / np.sqrt(x.size))


@dataclass(frozen=True)
class MonteCarloChannel:
    """Monte Carlo output channel with fixed samples (common random numbers).

    Use :meth:`create`. ``xi0, xi1``: ``(n, K)`` standard normals; ``noise_draw``: ``(n, T, T)``;
    ``test_xi0, test_xi1``: a larger independent set for the test error (no prox needed there).
    """

    params: PretrainParams
    xi0: jax.Array
    xi1: jax.Array
    noise_draw: jax.Array
    test_xi0: jax.Array
    test_xi1: jax.Array
    max_newton: int = 50

    @classmethod
    def create(cls, params: PretrainParams, *, n_samples: int = 2 ** 14, n_test_samples: int = 2 ** 17,
               seed: int = 0, max_newton: int = 50, sampling: str = "iid") -> "MonteCarloChannel":
        """Draw the fixed samples (float64) from ``seed``: i.i.d. normals by default, or scrambled Sobol
        (``sampling="sobol"``, experimental: a hang of the identity channel with Sobol inputs is under
        investigation; :mod:`state_evolution.sampling`)."""
        if int(n_samples) < 2 or int(n_test_samples) < 2:
            raise ValueError(f"n_samples and n_test_samples must be integers >= 2, got "
                             f"{n_samples!r}, {n_test_samples!r}")
        K, T = n_free_entries(params.T), params.T
        xi0, xi1, noise = gaussian_samples(int(n_samples), [(K,), (K,), (T, T)], seed, sampling)
        t0, t1 = gaussian_samples(int(n_test_samples), [(K,), (K,)], seed + 7919, sampling)
        with float64():
            a = lambda x: jnp.asarray(x, jnp.float64)  # noqa: E731
            return cls(params=params, xi0=a(xi0), xi1=a(xi1), noise_draw=a(noise), test_xi0=a(t0),
                       test_xi1=a(t1), max_newton=max_newton)

    def evaluate(self, m, q, V, warm=None) -> ChannelEvaluation:
        """Conjugates, train loss and prox diagnostics at ``(m, q, V)``; ``warm``: a previous ``g*``."""
        p = self.params
        with float64():
            g_init = jnp.zeros_like(self.xi0) if warm is None else warm
            q_t, V_t, m_t, train, g, res, iters = _channel_statistics(
                m, q, V, p.rho0, p.delta, p.beta, self.xi0, self.xi1, self.noise_draw, g_init, p.T,
                p.activation, p.noise, self.max_newton)
            s = 2 * p.alpha
            (qh, qh_se), (Vh, Vh_se), (mh, mh_se) = _mean_se(q_t), _mean_se(V_t), _mean_se(m_t)
            conj = Conjugates(m_hat=s * mh, q_hat=s * qh, V_hat=s * Vh, m_hat_se=s * mh_se,
                              q_hat_se=s * qh_se, V_hat_se=s * Vh_se)
            return ChannelEvaluation(conjugates=conj, train_loss=_mean_se(train), prox_residual=float(res),
                                     prox_iterations=int(iters), warm=g)

    def conjugates(self, m, q, V) -> Conjugates:
        return self.evaluate(m, q, V).conjugates

    def train_loss(self, m, q, V) -> tuple[float, float]:
        return self.evaluate(m, q, V).train_loss

    def test_error(self, m, q) -> tuple[float, float]:
        """``E = E‖σ(H_Ŝ) − σ(H0)‖²_F`` over the GOE pair with covariance ``[[q, m], [m, ρ0]]``: (mean, s.e.)."""
        p = self.params
        with float64():
            return _mean_se(_test_error_samples(m, q, p.rho0, p.beta, self.test_xi0, self.test_xi1, p.T,
                                                p.activation))
