r"""Prior side of the state evolution for a spectral (eigenvalue-thresholding) denoiser.

Setting
-------
Teacher ``S0 = √κ0 · W0ᵀW0/R0`` (D×D, ``W0`` i.i.d. N(0,1) of shape ``R0×D``, ``R0 = round(κ0 D)``),
with ``Tr(S0²)/D → 1 + κ0``; ``Z`` a GOE matrix with semicircle on ``[−2, 2]``
(``Z = (G + Gᵀ)/√(2D)``).  Given ``m̂ > 0, q̂ > 0, V̂ > 0, λ ≥ 0, κ ∈ (0, 1]``:

    B = m̂ S0 + √q̂ Z,      Ŝ = U diag(f(b_i)) Uᵀ   (B = U diag(b) Uᵀ),
    f(b) = relu(b − 2λ)/V̂  on the top κD eigenvalues of B,  f = 0 on the others

(the cut is at the (1 − κ)-quantile ``b_κ`` of the spectrum of B; for ``κ = 1`` nothing is cut).
Outputs (:class:`PriorOverlaps`):

    m = E Tr(Ŝ S0)/D,   q = E Tr(Ŝ²)/D,   V = (2/D²) · div Ŝ(B),
    r = fraction of eigenvalues with f(b) > 0  (``rank_fraction``),

where ``div`` is the divergence of ``B ↦ Ŝ(B)`` in orthonormal coordinates of Sym(D)
(basis ``E_ii`` and ``(E_ij + E_ji)/√2``):

    div = Σ_i f'(b_i) + Σ_{i<j} (f(b_i) − f(b_j))/(b_i − b_j).

Two routes
----------
* :func:`prior_overlaps_free` (production): D → ∞ limit by free probability
  (:mod:`state_evolution.free_probability`), with ``s = m̂√κ0``, ``c = 1/κ0``:

      m = ∫ ρ_B(b) f(b) (b − 2 q̂ Re g_B(b))/m̂ db      (RIE identity E[uᵀS0u | b] = (b − 2q̂ Re g_B)/m̂)
      q = ∫ ρ_B f²,      V = ∫∫ ρ_B ρ_B (f(x) − f(y))/(x − y) = 2 ∫ ρ_B f Re g_B,
      r = ∫ ρ_B 1[f > 0],

  integrated over ``b > max(2λ, b_κ)`` only.
* :func:`prior_overlaps_matrix` (reference / test oracle): explicit matrices at finite D with
  pre-drawn ``(S0, Z)`` pairs (common random numbers, :func:`draw_prior_matrices`) and the exact
  finite-D divergence above.  Its finite-D corrections are O(1/D) (e.g. the ``Σ f'`` term).

Bayes-optimal helpers: for ``Y = S0 + √Δ_Y Z`` (``m̂ = 1, q̂ = Δ_Y``) :func:`integral_rho_cubed`
returns ``∫ ρ_Y³`` and :func:`denoising_mmse` returns ``Δ_Y − (4π²/3) Δ_Y² ∫ ρ_Y³``, the MSE
``E‖ξ(Y) − S0‖²/D`` of the optimal rotationally-invariant estimator ``ξ(y) = y − 2Δ_Y Re g_Y(y)``
(:func:`bayes_rie_denoiser`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from solvable_attention.random_matrices import goe_from_square

from .free_probability import (
    stieltjes_mp_semicircle,
    support_quadrature,
    quadrature_failures,
    upper_quantile_search,
)

__all__ = [
    "PriorOverlaps",
    "PriorDraws",
    "spectral_threshold",
    "prior_overlaps_free",
    "draw_prior_matrices",
    "prior_overlaps_matrix",
    "denoiser_profile",
    "spectral_divergence",
    "apply_spectral_denoiser",
    "denoiser_divergence",
    "integral_rho_cubed",
    "denoising_mmse",
    "bayes_rie_denoiser",
]

DEFAULT_N_NODES = 256


@dataclass(frozen=True)
class PriorOverlaps:
    """Prior-side overlaps ``m, q, V`` and rank fraction ``r`` of the spectral denoiser.

    The ``*_se`` fields are standard errors over independent draws (``std(ddof=1)/√n_draws``)
    for :func:`prior_overlaps_matrix` with more than one draw; they are 0.0 otherwise (in
    particular for the deterministic :func:`prior_overlaps_free`).

    ``inner_failures`` counts the inner numerical searches of :func:`prior_overlaps_free` that ended
    without reaching their tolerance and were used as they were: support panels whose mass did not
    converge under refinement (:func:`~state_evolution.free_probability.quadrature_failures`) plus 1 if
    the rank quantile ``b_κ`` search did not converge
    (:func:`~state_evolution.free_probability.upper_quantile_search`). 0 in typical cases and for the
    explicit-matrix route; an outer solve should not report success on a prior image with failures.
    """

    m: float
    q: float
    V: float
    rank_fraction: float
    m_se: float = 0.0
    q_se: float = 0.0
    V_se: float = 0.0
    rank_fraction_se: float = 0.0
    inner_failures: int = 0


# ---------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------
def _real(name, val):
    try:
        x = float(val)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a finite real number, got {val!r}") from None
    if not math.isfinite(x):
        raise ValueError(f"{name} must be finite, got {val!r}")
    return x


def _positive(name, val):
    x = _real(name, val)
    if x <= 0:
        raise ValueError(f"{name} must be > 0, got {val!r}")
    return x


def _nonneg(name, val):
    x = _real(name, val)
    if x < 0:
        raise ValueError(f"{name} must be >= 0, got {val!r}")
    return x


def _kappa(val):
    x = _real("kappa", val)
    if not (0 < x <= 1):
        raise ValueError(f"kappa must satisfy 0 < kappa <= 1, got {val!r}")
    return x


def _n_nodes(val):
    if int(val) != val or int(val) < 8:
        raise ValueError(f"n_nodes must be an integer >= 8, got {val!r}")
    return int(val)


# ---------------------------------------------------------------------------------------------
# the denoiser
# ---------------------------------------------------------------------------------------------
def spectral_threshold(lam):
    """Eigenvalue threshold ``2λ`` of the denoiser ``f(b) = relu(b − 2λ)/V̂``.

    Taken as given from the ERM derivation: with the objective multiplied by D the regulariser
    reads ``Dλ Tr S``, and writing the proximal step in the D(D+1)/2 orthonormal coordinates of
    Sym(D) (``E_ii``, ``(E_ij + E_ji)/√2``) turns it into a soft threshold at ``2λ`` on the
    eigenvalues.
    """
    return 2.0 * _nonneg("lam", lam)


def denoiser_profile(b, lam, V_hat, kappa=1.0):
    """``f(b_i)`` and ``f'(b_i)`` for an eigenvalue vector ``b`` (any order).

    ``f(b) = relu(b − 2λ)/V̂`` and ``f'(b) = 1[b > 2λ]/V̂`` on the ``k = round(κ D)`` largest
    eigenvalues, ``f = f' = 0`` on the others (the top-k selection is locally constant as long
    as ``b_(k) > b_(k+1)``, so ``f'`` is the derivative of the map ``B ↦ Ŝ(B)``).
    """
    b = np.asarray(b, dtype=float)
    thr = spectral_threshold(lam)
    V_hat = _positive("V_hat", V_hat)
    kappa = _kappa(kappa)
    k = int(round(kappa * b.size))
    keep = np.zeros(b.shape, dtype=bool)
    if k > 0:
        keep[np.argsort(b, kind="stable")[b.size - k :]] = True
    active = keep & (b > thr)
    f = np.where(active, (b - thr) / V_hat, 0.0)
    fprime = np.where(active, 1.0 / V_hat, 0.0)
    return f, fprime


def spectral_divergence(b, f, fprime):
    """``div = Σ_i f'(b_i) + Σ_{i<j} (f_i − f_j)/(b_i − b_j)`` (ties ``b_i = b_j`` use ``(f'_i + f'_j)/2``).

    Only rows with ``f_i ≠ 0`` or ``f'_i ≠ 0`` are formed (pairs with both ``f = f' = 0`` vanish).
    """
    b = np.asarray(b, dtype=float)
    f = np.asarray(f, dtype=float)
    fprime = np.asarray(fprime, dtype=float)
    act = np.nonzero((f != 0) | (fprime != 0))[0]
    if act.size == 0:
        return 0.0
    scale = np.max(np.abs(b)) if b.size else 1.0
    db = b[act, None] - b[None, :]
    df = f[act, None] - f[None, :]
    tie = np.abs(db) <= 1e-14 * scale
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(tie, 0.5 * (fprime[act, None] + fprime[None, :]), df / np.where(tie, 1.0, db))
    ratio[np.arange(act.size), act] = 0.0  # drop i == j
    # Σ over (i ∈ act, j ≠ i) counts pairs with both ends in act twice.
    both = ratio[:, act].sum()
    pair_sum = ratio.sum() - 0.5 * both
    return float(np.sum(fprime) + pair_sum)


def apply_spectral_denoiser(B, lam, V_hat, *, kappa=1.0):
    """``Ŝ(B) = U diag(f(b)) Uᵀ`` for a symmetric matrix ``B`` (float64 ``eigh``)."""
    b, U = np.linalg.eigh(np.asarray(B, dtype=float))
    f, _ = denoiser_profile(b, lam, V_hat, kappa)
    return (U * f) @ U.T


def denoiser_divergence(B, lam, V_hat, *, kappa=1.0):
    """Exact finite-D divergence of ``B ↦ Ŝ(B)`` on Sym(D), see :func:`spectral_divergence`."""
    b = np.linalg.eigvalsh(np.asarray(B, dtype=float))
    f, fp = denoiser_profile(b, lam, V_hat, kappa)
    return spectral_divergence(b, f, fp)


# ---------------------------------------------------------------------------------------------
# free-probability route
# ---------------------------------------------------------------------------------------------
def prior_overlaps_free(
    m_hat, q_hat, V_hat, lam, *, kappa0=1.0, kappa=1.0, n_nodes=DEFAULT_N_NODES
) -> PriorOverlaps:
    """D → ∞ prior overlaps by free probability (deterministic).

    With ``s = m̂√κ0``, ``c = 1/κ0``, ``g_B`` from :func:`stieltjes_mp_semicircle`,
    ``ρ_B = −Im g_B/π`` and ``t = max(2λ, b_κ)`` (``b_κ``: ``∫_{b_κ} ρ_B = κ``, only if ``κ < 1``):

        m = ∫_t ρ_B(b) f(b) (b − 2 q̂ Re g_B(b))/m̂ db,   q = ∫_t ρ_B f²,
        V = 2 ∫_t ρ_B f Re g_B,                          r = ∫_t ρ_B,

    with ``f(b) = (b − 2λ)/V̂`` on ``b > t``.  Quadrature: ``n_nodes`` cos-mapped Gauss–Legendre
    nodes per support panel (:func:`state_evolution.free_probability.support_quadrature`);
    relative accuracy ≲ 1e-10 for ``q̂ ≳ 1e-4`` at the default 256 nodes.  If ``t`` is above the
    support all outputs are exactly 0.

    The result's ``inner_failures`` counts the quadrature panels and the quantile search that ended
    above their tolerances (:class:`PriorOverlaps`).

    Raises:
        ValueError: ``m_hat, q_hat, V_hat > 0``, ``lam >= 0``, ``0 < kappa <= 1``, ``kappa0 > 0``,
            all finite, ``n_nodes`` integer >= 8.
        FloatingPointError: an overflow in the spectral integrals (conjugates far outside the useful
            range, e.g. ``m̂ ≳ 1e150``); the pre-training solver treats it as an invalid iterate.
    """
    m_hat = _positive("m_hat", m_hat)
    q_hat = _positive("q_hat", q_hat)
    V_hat = _positive("V_hat", V_hat)
    lam = _nonneg("lam", lam)
    kappa = _kappa(kappa)
    kappa0 = _positive("kappa0", kappa0)
    n_nodes = _n_nodes(n_nodes)

    with np.errstate(over="raise"):  # far outside the useful range: an error, never a printed warning
        return _prior_overlaps_free(m_hat, q_hat, V_hat, lam, kappa0, kappa, n_nodes)


def _prior_overlaps_free(m_hat, q_hat, V_hat, lam, kappa0, kappa, n_nodes) -> PriorOverlaps:
    """:func:`prior_overlaps_free` on validated arguments."""
    s, c = m_hat * math.sqrt(kappa0), 1.0 / kappa0
    thr = spectral_threshold(lam)
    t = thr
    failures = quadrature_failures(s, c, q_hat, n_nodes=n_nodes)
    if kappa < 1.0:
        b_kappa, found = upper_quantile_search(kappa, s, c, q_hat, n_nodes=n_nodes)
        t, failures = max(t, b_kappa), failures + (not found)
    x, w, g = support_quadrature(s, c, q_hat, lower=t, n_nodes=n_nodes)
    if x.size == 0:
        return PriorOverlaps(0.0, 0.0, 0.0, 0.0, inner_failures=failures)
    wr = w * np.maximum(-g.imag, 0.0) / np.pi
    f = (x - thr) / V_hat
    re_g = g.real
    wf = wr * f
    return PriorOverlaps(
        m=float(np.sum(wf * (x - 2.0 * q_hat * re_g)) / m_hat),
        q=float(np.sum(wf * f)),
        V=float(2.0 * np.sum(wf * re_g)),
        rank_fraction=float(np.sum(wr)),
        inner_failures=failures,
    )


# ---------------------------------------------------------------------------------------------
# explicit-matrix route
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PriorDraws:
    """Pre-drawn ``(S0, Z)`` pairs (read-only float64 arrays) for common-random-number estimates."""

    D: int
    kappa0: float
    seed: int
    S0: tuple
    Z: tuple

    @property
    def n_draws(self) -> int:
        return len(self.S0)


def draw_prior_matrices(D, n_draws, kappa0, seed) -> PriorDraws:
    """Draw ``n_draws`` independent pairs ``S0 = √κ0 W0ᵀW0/R0`` (``R0 = max(1, round(κ0 D))``) and
    ``Z = (G + Gᵀ)/√(2D)`` from ``numpy.random.default_rng(seed)``."""
    if int(D) != D or D < 2:
        raise ValueError(f"D must be an integer >= 2, got {D!r}")
    if int(n_draws) != n_draws or n_draws < 1:
        raise ValueError(f"n_draws must be an integer >= 1, got {n_draws!r}")
    kappa0 = _positive("kappa0", kappa0)
    D, n_draws = int(D), int(n_draws)
    rng = np.random.default_rng(seed)
    R0 = max(1, int(round(kappa0 * D)))
    S0s, Zs = [], []
    for _ in range(n_draws):
        W0 = rng.standard_normal((R0, D))
        S0 = math.sqrt(kappa0) * (W0.T @ W0) / R0
        G = rng.standard_normal((D, D))
        Z = goe_from_square(G, D)
        S0.flags.writeable = False
        Z.flags.writeable = False
        S0s.append(S0)
        Zs.append(Z)
    return PriorDraws(D=D, kappa0=kappa0, seed=seed, S0=tuple(S0s), Z=tuple(Zs))


def prior_overlaps_matrix(m_hat, q_hat, V_hat, lam, draws: PriorDraws, *, kappa=1.0) -> PriorOverlaps:
    """Finite-D estimate with explicit matrices, averaged over ``draws`` (deterministic given them).

    Per draw: ``B = m̂ S0 + √q̂ Z = U diag(b) Uᵀ`` (``numpy.linalg.eigh``), ``f, f'`` from
    :func:`denoiser_profile`, and

        m = Σ_i f_i u_iᵀ S0 u_i / D,   q = Σ_i f_i² / D,
        V = (2/D²) [Σ_i f'_i + Σ_{i<j} (f_i − f_j)/(b_i − b_j)],   r = #{f_i > 0}/D.

    Returns the mean over draws with standard errors ``std(ddof=1)/√n`` in the ``*_se`` fields
    (0.0 for a single draw).  Unlike the free route, ``q_hat = 0`` is allowed here.
    """
    m_hat = _positive("m_hat", m_hat)
    q_hat = _nonneg("q_hat", q_hat)
    V_hat = _positive("V_hat", V_hat)
    lam = _nonneg("lam", lam)
    kappa = _kappa(kappa)
    D = draws.D
    vals = []
    for S0, Z in zip(draws.S0, draws.Z):
        B = m_hat * S0 + math.sqrt(q_hat) * Z
        b, U = np.linalg.eigh(B)
        f, fp = denoiser_profile(b, lam, V_hat, kappa)
        act = np.nonzero(f)[0]
        Ua = U[:, act]
        overlaps = np.einsum("ij,ij->j", Ua, S0 @ Ua)  # u_iᵀ S0 u_i
        vals.append(
            (
                float(np.dot(f[act], overlaps) / D),
                float(np.sum(f * f) / D),
                2.0 * spectral_divergence(b, f, fp) / D**2,
                float(np.count_nonzero(f > 0) / D),
            )
        )
    arr = np.array(vals)
    mean = arr.mean(axis=0)
    se = arr.std(axis=0, ddof=1) / math.sqrt(len(arr)) if len(arr) > 1 else np.zeros(4)
    return PriorOverlaps(*map(float, mean), *map(float, se))


# ---------------------------------------------------------------------------------------------
# Bayes-optimal denoising of Y = S0 + √Δ_Y Z
# ---------------------------------------------------------------------------------------------
def integral_rho_cubed(delta_Y, kappa0=1.0, *, n_nodes=DEFAULT_N_NODES):
    """``∫ ρ_Y(y)³ dy`` for ``Y = S0 + √Δ_Y Z`` (``s = √κ0``, ``c = 1/κ0``, ``q̂ = Δ_Y``)."""
    delta_Y = _positive("delta_Y", delta_Y)
    kappa0 = _positive("kappa0", kappa0)
    x, w, g = support_quadrature(
        math.sqrt(kappa0), 1.0 / kappa0, delta_Y, n_nodes=_n_nodes(n_nodes)
    )
    rho = np.maximum(-g.imag, 0.0) / np.pi
    return float(np.sum(w * rho**3))


def denoising_mmse(delta_Y, *, kappa0=1.0, n_nodes=DEFAULT_N_NODES):
    """Matrix-denoising MMSE ``lim E‖E[S0|Y] − S0‖²_F/D = Δ_Y − (4π²/3) Δ_Y² ∫ ρ_Y³``.

    This is the MSE of the optimal RIE ``ξ(y) = y − 2Δ_Y Re g_Y(y)`` (:func:`bayes_rie_denoiser`),
    which uses ``∫ρ_Y (Re g_Y)² = (π²/3)∫ρ_Y³`` and ``∫ρ_Y y Re g_Y = 1/2``.  Satisfies
    ``0 ≤ mmse ≤ min(Δ_Y, 1)`` (1 = error of the constant estimator ``E S0 = √κ0 I``), and
    ``mmse/Δ_Y → 1`` as ``Δ_Y → 0`` if ``κ0 ≥ 1`` but ``→ 1 − (1 − κ0)²`` if ``κ0 < 1`` (the
    noise inside the null space of the rank-``κ0 D`` teacher is removed).
    """
    delta_Y = _positive("delta_Y", delta_Y)
    return float(
        delta_Y
        - (4.0 * math.pi**2 / 3.0) * delta_Y**2 * integral_rho_cubed(delta_Y, kappa0, n_nodes=n_nodes)
    )


def bayes_rie_denoiser(y, delta_Y, *, kappa0=1.0):
    """Optimal RIE eigenvalue map ``ξ(y) = y − 2Δ_Y Re g_Y(y)`` (vectorised over real ``y``)."""
    delta_Y = _positive("delta_Y", delta_Y)
    kappa0 = _positive("kappa0", kappa0)
    y = np.asarray(y, dtype=float)
    g = stieltjes_mp_semicircle(y, math.sqrt(kappa0), 1.0 / kappa0, delta_Y)
    return y - 2.0 * delta_Y * g.real
