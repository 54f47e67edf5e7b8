"""Output (channel) side of the pre-training state evolution: the types every channel returns.

Per sample the ``T×T`` logits are ``K = T(T+1)/2`` whitened Gaussian fields
(:mod:`state_evolution.goe_coordinates`). With ``ω = √q ξ0`` (student),
``h0 = (m/√q) ξ0 + √(ρ0 − m²/q) ξ1`` (teacher), the label ``Y`` drawn from the
channel, and the per-sample loss ``ℓ(Y, h) = ½‖Y − σ(H(h))‖²_F``, the proximal map

    h*(ω, Y) = argmin_h ‖h − ω‖²/(2V) + ℓ(Y, h),     g = (h* − ω)/V

gives the conjugates (``2α`` = samples per free parameter of ``Ŝ``, ``N = D²/2``):

    q̂ = 2α E‖g‖²,   V̂ = −2α E Tr ∂g/∂ω,   m̂ = 2α E[g · ξ1]/√(ρ0 − m²/q).

Derivation: docs/theory.md §2.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Conjugates:
    """``(m̂, q̂, V̂)`` and their Monte Carlo standard errors (0 for closed forms); docs/theory.md §2.1.

    Attributes:
        m_hat: ``m̂ = 2α E[g · ξ1]/√(ρ0 − m²/q)``, conjugate of the overlap ``m``.
        q_hat: ``q̂ = 2α E‖g‖²``, conjugate of ``q``.
        V_hat: ``V̂ = −2α E Tr ∂g/∂ω``, conjugate of the response ``V``.
        m_hat_se: Monte Carlo standard error of ``m̂``.
        q_hat_se: Monte Carlo standard error of ``q̂``.
        V_hat_se: Monte Carlo standard error of ``V̂``.
    """

    m_hat: float
    q_hat: float
    V_hat: float
    m_hat_se: float = 0.0
    q_hat_se: float = 0.0
    V_hat_se: float = 0.0


@dataclass(frozen=True)
class ChannelEvaluation:
    """One evaluation of the channel at ``(m, q, V)`` (docs/theory.md §2.1, §2.3–§2.4).

    Attributes:
        conjugates: the :class:`Conjugates` ``(m̂, q̂, V̂)``.
        train_loss: ``(mean, s.e.)`` of ``‖Y − σ(H(h*))‖²_F`` (training residual at the minimiser).
        prox_residual: largest ``|g + ∇ℓ|`` over the samples (0 for closed forms).
        prox_iterations: Newton iterations of the sampled prox (0 for closed forms).
        unfinished: samples whose prox ended above ``prox_newton.UNFINISHED_RESIDUAL`` (0 for closed forms).
        n: samples of the evaluation (0 for closed forms).
    """

    conjugates: Conjugates
    train_loss: tuple
    prox_residual: float = 0.0
    prox_iterations: int = 0
    unfinished: int = 0
    n: int = 0
