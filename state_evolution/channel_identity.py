"""The identity ("rescaled identity") output channel in closed form.

With ``σ(H) = (β/T) H`` the per-sample loss in whitened coordinates is
``ℓ = w Σ_k (y_k − h_k)²`` with ``w = (β/T)²`` and ``y = h0 + ε``, where the noise
per coordinate has variance ``Δ_w = Δ`` (``noise="logits"``) or ``(T/β)² Δ/2``
(``noise="output"``; the antisymmetric part of the output noise does not couple to
``S``). The prox is linear, ``h* = (ω + 2wV y)/(1 + 2wV)``, hence with ``K = T(T+1)/2``

    V̂ = m̂ = 2α K · 2w/(1 + 2wV),
    q̂ = 2α K · 4w² (mse_S + Δ_w)/(1 + 2wV)²,      mse_S = ρ0 − 2m + q,
    E = w (T² + T) mse_S,
    train loss = 2wK (mse_S + Δ_w)/(1 + 2wV)²  [+ T(T−1)Δ/2 for output noise].

Derivation: docs/theory.md §2.3.
"""

from __future__ import annotations

from dataclasses import dataclass

from solvable_attention.params import PretrainParams

from .channel_types import ChannelEvaluation, Conjugates
from .goe_coordinates import n_free_entries


def identity_weight(T: int, beta: float) -> float:
    """``w = (β/T)²``: the identity channel's loss weight per whitened coordinate (docs/theory.md §2.3).

    Args:
        T: sequence length ``T ≥ 1``.
        beta: ``β > 0`` of ``σ(H) = (β/T) H``.

    Returns:
        ``w = (β/T)²``.
    """
    return (beta / T) ** 2


def identity_noise_per_coordinate(params: PretrainParams) -> float:
    """``Δ_w``, the label-noise variance per whitened coordinate of the identity channel (docs/theory.md §2.3).

    Args:
        params: the setting; ``delta``, ``noise``, ``T`` and ``beta`` are used.

    Returns:
        ``Δ_w = Δ`` for ``noise="logits"``, ``(T/β)² Δ/2`` for ``noise="output"`` (the antisymmetric
        part of the output noise does not couple to ``S``).
    """
    p = params
    return p.delta if p.noise == "logits" else (p.T / p.beta) ** 2 * p.delta / 2


@dataclass(frozen=True)
class IdentityChannel:
    """Closed-form identity channel for a :class:`PretrainParams` setting (docs/theory.md §2.3).

    Attributes:
        params: the setting (``activation="identity"``; ``alpha, delta, T, beta, kappa0, noise`` are used).
    """

    params: PretrainParams

    @property
    def weight(self) -> float:
        """``w = (β/T)²``, the loss weight per whitened coordinate."""
        return identity_weight(self.params.T, self.params.beta)

    @property
    def noise_per_coordinate(self) -> float:
        """``Δ_w``: label-noise variance per whitened coordinate."""
        return identity_noise_per_coordinate(self.params)

    def conjugates(self, m, q, V) -> Conjugates:
        """``V̂ = m̂ = 2αK · 2w/(1 + 2wV)``, ``q̂ = 2αK · 4w² (mse_S + Δ_w)/(1 + 2wV)²`` (docs/theory.md §2.3).

        Args:
            m: student–teacher overlap ``m``.
            q: student self-overlap ``q ≥ 0``.
            V: response ``V ≥ 0``.

        Returns:
            The :class:`Conjugates` (standard errors 0).
        """
        p = self.params
        K, w = n_free_entries(p.T), self.weight
        mse = p.rho0 - 2 * m + q
        a = 1.0 + 2 * w * V
        V_hat = 2 * p.alpha * K * 2 * w / a
        q_hat = 2 * p.alpha * K * 4 * w * w * (mse + self.noise_per_coordinate) / a ** 2
        return Conjugates(m_hat=V_hat, q_hat=q_hat, V_hat=V_hat)

    def evaluate(self, m, q, V) -> ChannelEvaluation:
        """Conjugates and train loss at ``(m, q, V)`` (closed form, docs/theory.md §2.3).

        Args:
            m: student–teacher overlap ``m``.
            q: student self-overlap ``q ≥ 0``.
            V: response ``V ≥ 0``.

        Returns:
            The :class:`ChannelEvaluation` (``prox_residual = prox_iterations = 0``).
        """
        return ChannelEvaluation(conjugates=self.conjugates(m, q, V), train_loss=self.train_loss(m, q, V))

    def test_error(self, m, q) -> tuple[float, float]:
        """``E = w (T² + T) mse_S``, ``mse_S = ρ0 − 2m + q`` (docs/theory.md §2.3, §2.5).

        Args:
            m: student–teacher overlap.
            q: student self-overlap.

        Returns:
            ``(E, 0.0)`` (exact: no standard error).
        """
        p = self.params
        return self.weight * (p.T ** 2 + p.T) * (p.rho0 - 2 * m + q), 0.0

    def train_loss(self, m, q, V) -> tuple[float, float]:
        """``2wK (mse_S + Δ_w)/(1 + 2wV)²`` (``+ T(T−1)Δ/2`` with output noise), docs/theory.md §2.3.

        Args:
            m: student–teacher overlap ``m``.
            q: student self-overlap ``q ≥ 0``.
            V: response ``V ≥ 0``.

        Returns:
            ``(train loss, 0.0)``.
        """
        p = self.params
        K, w = n_free_entries(p.T), self.weight
        mse = p.rho0 - 2 * m + q
        val = 2 * w * K * (mse + self.noise_per_coordinate) / (1 + 2 * w * V) ** 2
        if p.noise == "output":
            val += p.T * (p.T - 1) * p.delta / 2
        return val, 0.0
