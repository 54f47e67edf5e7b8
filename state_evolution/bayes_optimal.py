"""Bayes-optimal baseline of the pre-training task (docs/theory.md §3).

One-parameter fixed point in ``q = E Tr(S0 ⟨S⟩)/D``:

    output:  q̂ = 2α (K − 1)/(ρ0 − q)            noiseless softmax (one direction, the constant
                                                  shift of H, is invisible: α(T² + T − 2) = 2α(K−1))
             q̂ = 2α K/(ρ0 − q + Δ_w)             identity, Δ_w = Δ (logits) or (T/β)² Δ/2 (output)
    prior:   q = ρ0 − mmse(1/q̂),   mmse(Δ_Y) = Δ_Y − (4π²/3) Δ_Y² ∫ ρ_Y³,  Y = S0 + √Δ_Y Z

with ``K = T(T+1)/2``; ``MMSE = ρ0 − q``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from solvable_attention.params import PretrainParams

from .channel_identity import identity_noise_per_coordinate
from .fixed_point import solve_fixed_point, warn_if_not_converged
from .goe_coordinates import n_free_entries
from .spectral_prior import denoising_mmse


@dataclass(frozen=True)
class BayesOptimalSolution:
    """``mmse = ρ0 − q`` on ``S``, with ``q``, ``q_hat`` and the solver's status (docs/theory.md §3).

    Attributes:
        mmse: ``MMSE = ρ0 − q = lim E‖S0 − ⟨S⟩‖²_F/D``, the Bayes-optimal error on ``S``.
        q: ``q = E Tr(S0 ⟨S⟩)/D``, the overlap of the posterior mean.
        q_hat: ``q̂``, its conjugate (the effective signal-to-noise ratio ``1/Δ_Y``).
        rho0: ``ρ0 = 1 + κ0``.
        converged: whether the fixed-point iteration reached its tolerance.
        iterations: evaluations spent.
        residual: final relative residual.
    """

    mmse: float
    q: float
    q_hat: float
    rho0: float
    converged: bool
    iterations: int
    residual: float

    def to_dict(self) -> dict:
        """The fields as a dictionary.

        Returns:
            ``{field: value}``.
        """
        return asdict(self)


def bayes_optimal(alpha, *, T=3, kappa0=1.0, delta=0.0, activation="softmax", beta=1.0, noise="logits",
                  tol=1e-12, max_iter=2000, warn=True) -> BayesOptimalSolution:
    """Bayes-optimal MMSE on ``S`` (noiseless softmax channel, or identity channel with any ``Δ``).

    The one-parameter fixed point of docs/theory.md §3 (module docstring): ``q̂ = 2α n_obs/(ρ0 − q + Δ_w)``,
    ``q = ρ0 − mmse(1/q̂)`` with ``n_obs = K − 1`` (softmax) or ``K`` (identity), ``K = T(T+1)/2``.

    Args:
        alpha: ``α > 0``, samples per ``D²``.
        T: tokens (``≥ 1``; ``≥ 2`` with softmax).
        kappa0: ``κ0 > 0``, teacher width ratio.
        delta: ``Δ ≥ 0``, label noise (must be 0 with softmax).
        activation: ``"softmax"`` or ``"identity"``.
        beta: ``β > 0``, inverse temperature.
        noise: ``"logits"`` or ``"output"`` (identity: ``Δ_w = Δ`` or ``(T/β)² Δ/2``).
        tol: relative residual tolerance.
        max_iter: evaluations at most.
        warn: emit a :class:`~state_evolution.fixed_point.ConvergenceWarning` when not converged.

    Returns:
        The :class:`BayesOptimalSolution`.

    Raises:
        ValueError: a parameter out of its range (:class:`~solvable_attention.params.PretrainParams`), or
            ``delta ≠ 0`` with the softmax activation.
    """
    p = PretrainParams(alpha=alpha, delta=delta, lam=0.0, T=T, beta=beta, kappa0=kappa0, activation=activation,
                       noise=noise)
    K = n_free_entries(p.T)
    if p.activation == "softmax":
        if p.delta != 0:
            raise ValueError("bayes_optimal with the softmax activation needs delta=0 (the noisy softmax "
                             "channel has no closed-form Bayes-optimal update here)")
        n_obs, noise_w = K - 1, 0.0
    else:
        n_obs = K
        noise_w = identity_noise_per_coordinate(p)
    rho0 = p.rho0

    def F(x):
        q = min(float(x[0]), rho0 * (1 - 1e-15))
        q_hat = 2 * p.alpha * n_obs / (rho0 - q + noise_w)
        return [rho0 - denoising_mmse(1.0 / q_hat, kappa0=p.kappa0)]

    sol = solve_fixed_point(F, [0.0], tol=tol, max_iter=max_iter, damping=0.5,
                            project=lambda x: [min(max(x[0], 0.0), rho0 * (1 - 1e-12))])
    if warn:
        warn_if_not_converged("Bayes-optimal fixed point", sol, tol)
    q = float(sol.value[0])
    return BayesOptimalSolution(mmse=rho0 - q, q=q, q_hat=2 * p.alpha * n_obs / (rho0 - q + noise_w), rho0=rho0,
                                converged=sol.converged, iterations=sol.iterations, residual=sol.residual)
