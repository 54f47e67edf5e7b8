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

from dataclasses import dataclass, replace
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from solvable_attention.activations import apply_activation
from solvable_attention.labels import labels_from_draw
from solvable_attention.random_matrices import goe_from_square
from solvable_attention.runtime import float64
from solvable_attention.params import PretrainParams

from .channel_types import ChannelEvaluation, Conjugates
from .goe_coordinates import from_coordinates, n_free_entries, to_coordinates
from .loss_derivatives import entries, loss_derivatives, loss_value
from .overlap_fields import student_teacher_fields
from .prox_newton import UNFINISHED_RESIDUAL, solve_prox_multistart, start_towards
from .small_linalg import solve
from .sampling import N_SAMPLES, N_TEST_SAMPLES, TEST_SEED_OFFSET, gaussian_samples, sample_mean_se

def per_sample_loss(h, Y, T, activation, beta):
    """``ℓ(Y, h) = ½ ‖Y − σ(H(h))‖²_F`` for whitened logits ``h`` (one sample; used as autodiff oracle).

    Args:
        h: ``(K,)`` whitened logits, ``K = T(T+1)/2``.
        Y: ``(T, T)`` label.
        T: tokens.
        activation: ``"softmax"`` or ``"identity"``.
        beta: ``β > 0``.

    Returns:
        The scalar loss.
    """
    r = Y - apply_activation(from_coordinates(h, T), activation, beta)
    return 0.5 * jnp.sum(r * r)


def channel_labels(h0, noise_draw, delta, T, activation, beta, noise):
    """``Y = σ(H(h0) + √Δ Ξ)`` (``Ξ = (G + Gᵀ)/√2``) or ``σ(H(h0)) + √Δ G`` from ``G = noise_draw``:
    :func:`solvable_attention.labels.labels_from_draw` of the whitened teacher field ``h0``.

    The labels of the pre-training channel (docs/theory.md §2.4; docs/model.md §2).

    Args:
        h0: ``(..., K)`` whitened teacher logits.
        noise_draw: ``(..., T, T)`` standard normals ``G``.
        delta: ``Δ ≥ 0``.
        T: tokens.
        activation: ``"softmax"`` or ``"identity"``.
        beta: ``β > 0``.
        noise: ``"logits"`` or ``"output"``.

    Returns:
        ``(..., T, T)`` labels ``Y``.
    """
    return labels_from_draw(from_coordinates(h0, T), noise_draw, delta, activation, beta, noise)


@partial(jax.jit, static_argnames=("T", "activation", "noise", "max_newton"))
def _channel_statistics(m, q, V, rho0, delta, beta, xi0, xi1, noise_draw, T, activation, noise, max_newton):
    """Per-sample terms whose means are ``q̂/2α, V̂/2α, m̂/2α`` and the train loss; plus ``g*``.

    The prox is solved from two starts, ``h = ω`` and ``h = h_Y`` (the label's own logits,
    ``H0 + √Δ Ξ``, where the loss vanishes; ``h0`` for output noise), keeping the lower objective.
    """
    omega, h0, c1 = student_teacher_fields(m, q, rho0, xi0, xi1)
    Y = channel_labels(h0, noise_draw, delta, T, activation, beta, noise)
    loss = lambda h, Y_: loss_value(h, Y_, T, activation, beta)  # noqa: E731
    derivs = lambda h, Y_: loss_derivatives(h, Y_, T, activation, beta)  # noqa: E731
    if noise == "logits":
        h_Y = h0 + jnp.sqrt(delta) * to_coordinates(goe_from_square(noise_draw))
    else:
        h_Y = h0
    starts = (jnp.zeros_like(omega), start_towards(omega, V, h_Y))
    g, hess, residual, iters = solve_prox_multistart(omega, V, starts, loss, derivs, max_newton, data=entries(Y))
    K = xi0.shape[-1]
    q_term = jnp.sum(g * g, axis=-1)
    V_term = jnp.trace(solve(jnp.eye(K, dtype=g.dtype) + V * hess, hess), axis1=-2, axis2=-1)
    m_term = jnp.sum(g * xi1, axis=-1) / jnp.maximum(c1, 1e-300)
    r = Y - apply_activation(from_coordinates(omega + V * g, T), activation, beta)
    train = jnp.sum(r * r, axis=(-1, -2))
    return q_term, V_term, m_term, train, g, residual, iters


@partial(jax.jit, static_argnames=("T", "activation"))
def _test_error_samples(m, q, rho0, beta, xi0, xi1, T, activation):
    """``‖σ(H(ω)) − σ(H(h0))‖²_F`` per sample (the pair ``(Ĥ, H0)`` on fresh inputs)."""
    omega, h0, _ = student_teacher_fields(m, q, rho0, xi0, xi1)
    d = apply_activation(from_coordinates(omega, T), activation, beta) - \
        apply_activation(from_coordinates(h0, T), activation, beta)
    return jnp.sum(d * d, axis=(-1, -2))


@dataclass(frozen=True)
class MonteCarloChannel:
    """Monte Carlo output channel with fixed samples (common random numbers; docs/theory.md §2.4).

    Use :meth:`create`.

    Attributes:
        params: the setting.
        xi0: ``(n, K)`` standard normals ``ξ0`` (the student field ``ω = √q ξ0``).
        xi1: ``(n, K)`` standard normals ``ξ1`` (the teacher's independent part).
        noise_draw: ``(n, T, T)`` standard normals of the label noise.
        test_xi0: ``(n_test, K)`` an independent, larger set for the test error (no prox needed there).
        test_xi1: ``(n_test, K)`` likewise.
        max_newton: Newton steps at most per prox.
    """

    params: PretrainParams
    xi0: jax.Array
    xi1: jax.Array
    noise_draw: jax.Array
    test_xi0: jax.Array
    test_xi1: jax.Array
    max_newton: int = 50

    @classmethod
    def create(cls, params: PretrainParams, *, n_samples: int = N_SAMPLES, n_test_samples: int = N_TEST_SAMPLES,
               seed: int = 0, max_newton: int = 50, sampling: str = "sobol") -> "MonteCarloChannel":
        """Draw the fixed samples (float64) from ``seed``: scrambled Sobol points mapped to normals by
        default (randomised QMC, :mod:`state_evolution.sampling`), or i.i.d. normals (``sampling="iid"``).

        Args:
            params: the setting.
            n_samples: training-channel samples ``n ≥ 2``.
            n_test_samples: test-error samples ``≥ 2``.
            seed: seed of the samples (the test set uses ``seed + 7919``).
            max_newton: Newton steps at most per prox.
            sampling: ``"sobol"`` or ``"iid"``.

        Returns:
            The :class:`MonteCarloChannel`.

        Raises:
            ValueError: ``n_samples`` or ``n_test_samples`` below 2, or an unknown ``sampling``.
        """
        if int(n_samples) < 2 or int(n_test_samples) < 2:
            raise ValueError(f"n_samples and n_test_samples must be integers >= 2, got "
                             f"{n_samples!r}, {n_test_samples!r}")
        K, T = n_free_entries(params.T), params.T
        xi0, xi1, noise = gaussian_samples(int(n_samples), [(K,), (K,), (T, T)], seed, sampling)
        t0, t1 = gaussian_samples(int(n_test_samples), [(K,), (K,)], seed + TEST_SEED_OFFSET, sampling)
        with float64():
            a = lambda x: jnp.asarray(x, jnp.float64)  # noqa: E731
            return cls(params=params, xi0=a(xi0), xi1=a(xi1), noise_draw=a(noise), test_xi0=a(t0),
                       test_xi1=a(t1), max_newton=max_newton)

    @property
    def n_samples(self) -> int:
        """The number ``n`` of training-channel samples."""
        return int(self.xi0.shape[0])

    def subset(self, n: int) -> "MonteCarloChannel":
        """The same channel on its first ``n`` training samples (a balanced subset for Sobol points
        when ``n`` is a power of two); the test samples are kept.

        Args:
            n: the number of samples kept.

        Returns:
            The smaller :class:`MonteCarloChannel`.
        """
        return replace(self, xi0=self.xi0[:n], xi1=self.xi1[:n], noise_draw=self.noise_draw[:n])

    def evaluate(self, m, q, V) -> ChannelEvaluation:
        """Conjugates, train loss and prox diagnostics at ``(m, q, V)`` (a pure function of them).

        ``q̂ = 2α E‖g‖²``, ``V̂ = 2α E Tr[(I + V∇²ℓ)⁻¹ ∇²ℓ]``, ``m̂ = 2α E[g·ξ1]/√(ρ0 − m²/q)`` over the
        fixed samples, with ``g`` the global prox of each sample (docs/theory.md §2.1, §2.4).

        Args:
            m: student–teacher overlap ``m``.
            q: student self-overlap ``q ≥ 0``.
            V: response ``V ≥ 0``.

        Returns:
            The :class:`ChannelEvaluation` (conjugates with Monte Carlo standard errors).
        """
        p = self.params
        with float64():
            q_t, V_t, m_t, train, g, res, iters = _channel_statistics(
                m, q, V, p.rho0, p.delta, p.beta, self.xi0, self.xi1, self.noise_draw, p.T,
                p.activation, p.noise, self.max_newton)
            s = 2 * p.alpha
            (qh, qh_se), (Vh, Vh_se), (mh, mh_se) = sample_mean_se(q_t), sample_mean_se(V_t), sample_mean_se(m_t)
            conj = Conjugates(m_hat=s * mh, q_hat=s * qh, V_hat=s * Vh, m_hat_se=s * mh_se,
                              q_hat_se=s * qh_se, V_hat_se=s * Vh_se)
            return ChannelEvaluation(conjugates=conj, train_loss=sample_mean_se(train),
                                     prox_residual=float(jnp.max(res)), prox_iterations=int(iters),
                                     unfinished=int(jnp.sum(res > UNFINISHED_RESIDUAL)), n=int(res.shape[0]))

    def conjugates(self, m, q, V) -> Conjugates:
        """The conjugates of :meth:`evaluate`.

        Args:
            m: student–teacher overlap ``m``.
            q: student self-overlap ``q ≥ 0``.
            V: response ``V ≥ 0``.

        Returns:
            The :class:`Conjugates`.
        """
        return self.evaluate(m, q, V).conjugates

    def train_loss(self, m, q, V) -> tuple[float, float]:
        """The training residual ``‖Y − σ(H(h*))‖²_F`` of :meth:`evaluate`.

        Args:
            m: student–teacher overlap ``m``.
            q: student self-overlap ``q ≥ 0``.
            V: response ``V ≥ 0``.

        Returns:
            ``(mean, s.e.)``.
        """
        return self.evaluate(m, q, V).train_loss

    def test_error(self, m, q) -> tuple[float, float]:
        """``E = E‖σ(H_Ŝ) − σ(H0)‖²_F`` over the GOE pair with covariance ``[[q, m], [m, ρ0]]``: (mean, s.e.).

        docs/theory.md §2.5.

        Args:
            m: student–teacher overlap.
            q: student self-overlap.

        Returns:
            ``(mean, s.e.)`` over the test samples.
        """
        p = self.params
        with float64():
            return sample_mean_se(_test_error_samples(m, q, p.rho0, p.beta, self.test_xi0, self.test_xi1, p.T,
                                                p.activation))
