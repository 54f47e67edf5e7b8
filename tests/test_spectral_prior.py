"""The spectral-denoiser prior map of state_evolution/spectral_prior.py (docs/theory.md §2.2): the
denoiser's divergence, the free-probability route against explicit matrices, exact zeros at large λ, the
Bayes-optimal denoising error, and input validation.

Tolerance conventions (see each test):
* deterministic quadrature identities: 1e-10 (the cos-mapped Gauss–Legendre rule is accurate to
  ~1e-13 at the default 256 nodes/panel);
* finite-D oracles at D ~ 1000: corrections are O(1/D) in bias and, for linear spectral
  statistics, O(1/D) in fluctuation, i.e. a few 1e-3 relative; tolerances are set at ~3× the
  largest deviation seen over several seeds.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from spectral_helpers import D_MC, mp_params

from state_evolution.free_probability import stieltjes_mp_semicircle, support_intervals, upper_quantile
from state_evolution.spectral_prior import (
    PriorOverlaps,
    apply_spectral_denoiser,
    bayes_rie_denoiser,
    denoiser_divergence,
    denoising_mmse,
    draw_prior_matrices,
    integral_rho_cubed,
    prior_overlaps_free,
    prior_overlaps_matrix,
    spectral_threshold,
)

FIELDS = ("m", "q", "V", "rank_fraction")


# ---------------------------------------------------------------------------------------------
# 1. exact divergence vs finite differences
# ---------------------------------------------------------------------------------------------
def _sym_basis(D):
    """Orthonormal basis of Sym(D): E_ii and (E_ij + E_ji)/√2."""
    basis = []
    for i in range(D):
        for j in range(i, D):
            E = np.zeros((D, D))
            if i == j:
                E[i, i] = 1.0
            else:
                E[i, j] = E[j, i] = 1.0 / math.sqrt(2.0)
            basis.append(E)
    return basis


@pytest.mark.parametrize("kappa", [1.0, 0.5])
def test_divergence_matches_finite_differences(kappa):
    """div Ŝ(B) = Σ f'(b_i) + Σ_{i<j} (f_i − f_j)/(b_i − b_j) vs central differences, rel 1e-6.

    2λ is placed in the middle of a spectral gap (so the relu kink is ≥ 0.1 away from every
    eigenvalue); for κ = 0.5 it lies below the k-th eigenvalue, so the top-k cut makes f jump.
    Central differences with h = 1e-6 have truncation error O(h²) and round-off O(ε/h) ≈ 1e-10.
    """
    D = 8
    rng = np.random.default_rng(123)
    G = rng.standard_normal((D, D))
    B = (G + G.T) / math.sqrt(2 * D) + 0.3 * np.diag(np.arange(D)) + 2.0 * np.eye(D)
    b = np.sort(np.linalg.eigvalsh(B))[::-1]
    assert np.min(-np.diff(b)) > 0.1
    thr = 0.5 * (b[5] + b[6])  # 6 eigenvalues above 2λ; κ = 0.5 keeps only the top 4
    lam, V_hat = thr / 2, 0.7
    h = 1e-6
    fd = 0.0
    for E in _sym_basis(D):
        dS = apply_spectral_denoiser(B + h * E, lam, V_hat, kappa=kappa) - apply_spectral_denoiser(
            B - h * E, lam, V_hat, kappa=kappa
        )
        fd += np.sum(E * dS) / (2 * h)
    exact = denoiser_divergence(B, lam, V_hat, kappa=kappa)
    assert exact == pytest.approx(fd, rel=1e-6)
    # the pairwise part matters: Σ f' alone is far off
    n_active = 6 if kappa == 1.0 else 4
    assert abs(exact - n_active / V_hat) > 0.1 * abs(exact)


# ---------------------------------------------------------------------------------------------
# 2. free-probability prior map vs explicit matrices
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def draws_by_kappa0():
    cache = {}

    def get(kappa0):
        if kappa0 not in cache:
            cache[kappa0] = draw_prior_matrices(D_MC, 2, kappa0, seed=2024)
        return cache[kappa0]

    return get


# (m̂, q̂, V̂, λ, κ0, κ, rel tol)
CASES = [
    (1.0, 0.5, 1.0, 0.0, 1.0, 1.0, 1e-2),  # plain relu, one interval
    (1.5, 0.3, 2.0, 0.3, 0.5, 1.0, 1e-2),  # low-rank teacher, threshold inside the bulk
    (0.7, 1.0, 0.8, 0.2, 2.0, 0.5, 1e-2),  # rank cut κ = 0.5 above the threshold 2λ
    (1.0, 0.02, 1.0, 0.0, 0.5, 0.4, 1e-2),  # two-interval support, cut inside the upper interval
    (1.0, 0.02, 1.3, 0.03, 0.5, 0.7, 1e-2),  # two intervals, 2λ > b_κ in the lower interval
    # few survivors (rank ≈ 5%, ~50 eigenvalues near the upper edge): fluctuations of the number
    # of eigenvalues above a fixed level are O(1) → a few % relative (seen up to 3.5%).
    (1.0, 0.5, 1.0, 1.65, 1.0, 1.0, 8e-2),
]


@pytest.mark.parametrize("m_hat,q_hat,V_hat,lam,kappa0,kappa,rtol", CASES)
def test_free_vs_matrix(draws_by_kappa0, m_hat, q_hat, V_hat, lam, kappa0, kappa, rtol):
    """Free-probability (m, q, V, r) vs explicit matrices, D = 1000, 2 draws (common random numbers).

    Bulk cases: finite-D bias and fluctuations are O(1/D); deviations over 6 seeds were ≤ 0.3%,
    tolerance 1%.  The few-survivor case has a wider tolerance (see CASES).
    """
    free = prior_overlaps_free(m_hat, q_hat, V_hat, lam, kappa0=kappa0, kappa=kappa)
    mc = prior_overlaps_matrix(m_hat, q_hat, V_hat, lam, draws_by_kappa0(kappa0), kappa=kappa)
    assert free.rank_fraction > 0.03
    for name in FIELDS:
        assert getattr(mc, name) == pytest.approx(getattr(free, name), rel=rtol), name
    if kappa < 1 and spectral_threshold(lam) < upper_quantile(kappa, *mp_params(m_hat, kappa0), q_hat):
        assert free.rank_fraction == pytest.approx(kappa, abs=1e-10)


def test_matrix_route_deterministic_and_se(draws_by_kappa0):
    """Common random numbers: identical inputs give identical outputs; se fields are filled."""
    draws = draws_by_kappa0(1.0)
    r1 = prior_overlaps_matrix(1.0, 0.5, 1.0, 0.1, draws)
    r2 = prior_overlaps_matrix(1.0, 0.5, 1.0, 0.1, draws)
    assert r1 == r2
    assert r1.m_se > 0 and r1.q_se > 0 and r1.V_se > 0


def test_linear_denoiser_closed_form():
    """If 2λ is below the whole spectrum (κ0 = 2, small q̂) then Ŝ = B/V̂ exactly, so
    m = m̂(1 + κ0)/V̂, q = (m̂²(1 + κ0) + q̂)/V̂², V = 1/V̂, r = 1.  This checks the RIE identity for
    m and the Hilbert-transform form of V in the free route (1e-10)."""
    m_hat, q_hat, V_hat, kappa0 = 1.1, 0.01, 0.7, 2.0
    assert support_intervals(*mp_params(m_hat, kappa0), q_hat)[0][0] > 0
    r = prior_overlaps_free(m_hat, q_hat, V_hat, 0.0, kappa0=kappa0)
    assert r.m == pytest.approx(m_hat * (1 + kappa0) / V_hat, rel=1e-10)
    assert r.q == pytest.approx((m_hat**2 * (1 + kappa0) + q_hat) / V_hat**2, rel=1e-10)
    assert r.V == pytest.approx(1.0 / V_hat, rel=1e-10)
    assert r.rank_fraction == pytest.approx(1.0, abs=1e-10)


# ---------------------------------------------------------------------------------------------
# 3. λ large ⇒ exact zeros
# ---------------------------------------------------------------------------------------------
def test_large_lambda_gives_exact_zero(draws_by_kappa0):
    """2λ above the top support edge ⇒ nothing survives: m = q = V = r = 0 exactly."""
    m_hat, q_hat = 1.0, 0.5
    top = support_intervals(*mp_params(m_hat, 1.0), q_hat)[-1][1]
    for kappa in (1.0, 0.3):
        r = prior_overlaps_free(m_hat, q_hat, 1.0, top / 2 + 1e-9, kappa=kappa)
        assert r == PriorOverlaps(0.0, 0.0, 0.0, 0.0)
    mc = prior_overlaps_matrix(m_hat, q_hat, 1.0, 10.0, draws_by_kappa0(1.0))
    assert (mc.m, mc.q, mc.V, mc.rank_fraction) == (0.0, 0.0, 0.0, 0.0)


# ---------------------------------------------------------------------------------------------
# 4. Bayes-optimal denoising
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kappa0", [0.5, 1.0, 2.0])
def test_mmse_bounds(kappa0):
    """0 ≤ mmse ≤ min(Δ_Y, 1): Δ_Y is the error of ξ(Y) = Y, 1 that of the constant E S0 = √κ0 I."""
    for delta in (1e-3, 0.05, 0.3, 1.0, 3.0, 10.0):
        mmse = denoising_mmse(delta, kappa0=kappa0)
        assert 0.0 < mmse <= min(delta, 1.0)


@pytest.mark.parametrize("kappa0,limit,tol", [(1.0, 1.0, 5e-3), (2.0, 1.0, 1e-3), (0.5, 0.75, 1e-3)])
def test_mmse_small_noise(kappa0, limit, tol):
    """mmse/Δ_Y as Δ_Y → 0 (at Δ_Y = 1e-4): → 1 for a full-rank teacher (κ0 ≥ 1; for κ0 = 1 the
    hard edge at 0 gives a slow Δ^{2/3} correction, 2.7e-3 here), but → 1 − (1 − κ0)² for κ0 < 1:
    the noise in the null space of the rank-κ0D teacher is removed (fraction of Sym(D) degrees of
    freedom of a rank-κ0D matrix = 1 − (1 − κ0)²)."""
    delta = 1e-4
    assert denoising_mmse(delta, kappa0=kappa0) / delta == pytest.approx(limit, abs=tol)


@pytest.mark.parametrize("kappa0,delta,D", [(1.0, 0.5, 1200), (0.5, 0.2, 1200)])
def test_mmse_vs_explicit_rie(kappa0, delta, D):
    """‖ξ(Y) − S0‖²_F/D with ξ(y) = y − 2Δ_Y Re g_Y(y) applied to the eigenvalues of an explicit
    Y (2 draws, D = 1200) ≈ Δ_Y − (4π²/3)Δ_Y² ∫ρ_Y³, rel 5e-3 (observed ≤ 2.6e-3 over 3 seeds;
    O(1/D) bias + fluctuation)."""
    draws = draw_prior_matrices(D, 2, kappa0, seed=11)
    errs = []
    for S0, Z in zip(draws.S0, draws.Z):
        y, U = np.linalg.eigh(S0 + math.sqrt(delta) * Z)
        E = (U * bayes_rie_denoiser(y, delta, kappa0=kappa0)) @ U.T - S0
        errs.append(np.sum(E * E) / D)
    mmse = denoising_mmse(delta, kappa0=kappa0)
    assert np.mean(errs) == pytest.approx(mmse, rel=5e-3)
    assert mmse == pytest.approx(
        delta - 4 * math.pi**2 / 3 * delta**2 * integral_rho_cubed(delta, kappa0), rel=1e-14
    )


# ---------------------------------------------------------------------------------------------
# input validation
# ---------------------------------------------------------------------------------------------
GOOD = dict(m_hat=1.0, q_hat=0.5, V_hat=1.0, lam=0.1)


@pytest.mark.parametrize(
    "override,name",
    [
        (dict(m_hat=0.0), "m_hat"),
        (dict(m_hat=np.nan), "m_hat"),
        (dict(q_hat=0.0), "q_hat"),
        (dict(q_hat=-1.0), "q_hat"),
        (dict(V_hat=-1.0), "V_hat"),
        (dict(V_hat=np.inf), "V_hat"),
        (dict(lam=-0.1), "lam"),
        (dict(kappa=0.0), "kappa"),
        (dict(kappa=1.5), "kappa"),
        (dict(kappa0=0.0), "kappa0"),
        (dict(kappa0=np.inf), "kappa0"),
    ],
)
def test_input_validation(override, name):
    kw = {**GOOD, **override}
    with pytest.raises(ValueError, match=name):
        prior_overlaps_free(**kw)


def test_input_validation_other_entry_points(draws_by_kappa0):
    with pytest.raises(ValueError, match="q_hat"):
        stieltjes_mp_semicircle(1.0, 1.0, 1.0, 0.0)
    with pytest.raises(ValueError, match="q_hat"):
        support_intervals(1.0, 1.0, -1.0)
    with pytest.raises(ValueError, match="delta_Y"):
        denoising_mmse(0.0)
    with pytest.raises(ValueError, match="kappa0"):
        integral_rho_cubed(0.1, kappa0=-1.0)
    with pytest.raises(ValueError, match="lam"):
        spectral_threshold(-1.0)
    with pytest.raises(ValueError, match="kappa"):
        prior_overlaps_matrix(1.0, 0.5, 1.0, 0.0, draws_by_kappa0(1.0), kappa=2.0)
    with pytest.raises(ValueError, match="V_hat"):
        prior_overlaps_matrix(1.0, 0.5, 0.0, 0.0, draws_by_kappa0(1.0))


def test_prior_reports_no_inner_failures_at_ordinary_points():
    """``inner_failures`` is 0 where every panel and the rank quantile converge (κ = 1 and κ = 0.5)."""
    from state_evolution.spectral_prior import prior_overlaps_free as free

    assert free(1.0, 0.5, 2.0, 0.1).inner_failures == 0
    assert free(1.0, 0.5, 2.0, 0.1, kappa=0.5).inner_failures == 0


def test_prior_overflow_is_an_error_not_a_warning():
    """Conjugates far outside the useful range (m̂ = 1e298, as a channel on the boundary q = m²/ρ0 used
    to return) raise FloatingPointError, which the pre-training solver turns into an invalid iterate;
    no RuntimeWarning is printed."""
    import warnings

    from state_evolution.spectral_prior import prior_overlaps_free as free

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with pytest.raises(FloatingPointError):
            free(1e298, 0.5, 2.0, 0.1)
