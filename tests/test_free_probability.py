"""Free probability of state_evolution/free_probability.py (docs/theory.md §2.2): the density of
B = m̂ S0 + √q̂ Z (normalisation, moments, support), its Stieltjes transform (cubic, branch, explicit
resolvent) and upper quantiles.

Tolerance conventions (see each test):
* deterministic quadrature identities: 1e-10 (the cos-mapped Gauss–Legendre rule is accurate to
  ~1e-13 at the default 256 nodes/panel);
* finite-D oracles at D ~ 1000: corrections are O(1/D) in bias and, for linear spectral
  statistics, O(1/D) in fluctuation, i.e. a few 1e-3 relative.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from spectral_helpers import D_MC, mp_params

from state_evolution.free_probability import (
    cubic_coefficients,
    density,
    mass_above,
    stieltjes_mp_semicircle,
    support_intervals,
    support_quadrature,
    upper_quantile,
)
from state_evolution.spectral_prior import draw_prior_matrices


@pytest.mark.parametrize("kappa0", [1.0, 0.5, 2.0])
@pytest.mark.parametrize("m_hat,q_hat", [(1.0, 0.5), (1.3, 0.05), (0.6, 2.0), (1.0, 0.01)])
def test_density_moments(kappa0, m_hat, q_hat):
    """∫ρ_B = 1, ∫bρ_B = m̂√κ0, ∫b²ρ_B = m̂²(1+κ0) + q̂ (free cumulants), to 1e-10."""
    s, c = mp_params(m_hat, kappa0)
    x, w, g = support_quadrature(s, c, q_hat)
    rho = -g.imag / np.pi
    assert np.all(rho >= 0)
    assert np.sum(w * rho) == pytest.approx(1.0, abs=1e-10)
    assert np.sum(w * rho * x) == pytest.approx(m_hat * math.sqrt(kappa0), abs=1e-10)
    assert np.sum(w * rho * x**2) == pytest.approx(m_hat**2 * (1 + kappa0) + q_hat, abs=1e-10)
    np.testing.assert_allclose(density(x, s, c, q_hat), rho, rtol=0, atol=1e-14)


def test_support_two_intervals_and_exact_separation():
    """κ0 = 0.5: the smoothed atom at 0 separates from the bulk for small q̂ (two intervals) and
    merges for larger q̂; when separated, the lower interval carries exactly the atom mass 1 − κ0.
    The density vanishes in the gap and outside the support."""
    s, c = mp_params(1.0, 0.5)
    two = support_intervals(s, c, 0.01)
    one = support_intervals(s, c, 0.05)
    assert len(two) == 2 and len(one) == 1
    (a1, b1), (a2, b2) = two
    assert a1 < 0 < b1 < a2 < b2
    assert 1.0 - mass_above(a2, s, c, 0.01) == pytest.approx(0.5, abs=1e-10)
    outside = np.array([a1 - 0.1, 0.5 * (b1 + a2), b2 + 0.1])
    assert np.all(density(outside, s, c, 0.01) == 0.0)
    inside = np.array([0.5 * (a1 + b1), 0.5 * (a2 + b2)])
    assert np.all(density(inside, s, c, 0.01) > 0.0)


def test_stieltjes_branch_and_cubic_residual():
    """Roots solve the cubic; real-axis values are the limits of g(x + iη), inside (Im g < 0) and
    outside (real) the support; g(z̄) = conj g(z)."""
    s, c, q_hat = mp_params(1.0, 0.5) + (0.3,)
    x = np.linspace(-3.0, 6.0, 37)
    g = stieltjes_mp_semicircle(x, s, c, q_hat)
    a, b, c1, d = cubic_coefficients(x, s, c, q_hat)
    resid = ((a * g + b) * g + c1) * g + d
    assert np.max(np.abs(resid)) < 1e-10
    g_eta = stieltjes_mp_semicircle(x + 1e-7j, s, c, q_hat)
    np.testing.assert_allclose(g_eta, g, atol=1e-5)
    assert np.all(g.imag <= 0)
    z = np.array([0.3 + 0.5j, -1.0 + 0.2j])
    np.testing.assert_allclose(
        stieltjes_mp_semicircle(np.conj(z), s, c, q_hat),
        np.conj(stieltjes_mp_semicircle(z, s, c, q_hat)),
        atol=1e-14,
    )


@pytest.mark.parametrize("kappa0,m_hat,q_hat", [(1.0, 1.0, 0.5), (0.5, 1.2, 0.02), (2.0, 0.8, 1.0)])
def test_stieltjes_vs_resolvent(kappa0, m_hat, q_hat):
    """g_B(x + 0.5i) vs (1/D) Tr (z − B)^{-1} at D = 1000 (one draw), abs 1e-2.

    At distance 0.5 from the real axis the resolvent trace is a smooth linear statistic:
    bias and fluctuations are O(1/D) ≈ 1e-3.
    """
    draws = draw_prior_matrices(D_MC, 1, kappa0, seed=7)
    B = m_hat * draws.S0[0] + math.sqrt(q_hat) * draws.Z[0]
    b = np.linalg.eigvalsh(B)
    z = np.linspace(-1.0, 4.5, 12) + 0.5j
    g_mc = np.mean(1.0 / (z[:, None] - b[None, :]), axis=1)
    s, c = mp_params(m_hat, kappa0)
    g = stieltjes_mp_semicircle(z, s, c, q_hat)
    np.testing.assert_allclose(g, g_mc, rtol=0, atol=1e-2)


@pytest.mark.parametrize("kappa0,q_hat,kappa", [(1.0, 0.5, 0.3), (0.5, 0.01, 0.7), (2.0, 1.0, 0.9)])
def test_upper_quantile(kappa0, q_hat, kappa):
    """∫_{b_κ} ρ_B = κ to 1e-11 (including a quantile in the lower of two intervals)."""
    s, c = mp_params(1.0, kappa0)
    t = upper_quantile(kappa, s, c, q_hat)
    assert mass_above(t, s, c, q_hat) == pytest.approx(kappa, abs=1e-11)


def test_unconverged_panels_are_counted():
    """Panels kept after the last refinement round are counted: with 2 rounds at q̂/s² = 1e-10, κ0 = 1
    (the smoothed hard edge at 0 needs more), the reported count equals the number of returned panels
    whose masses by the 256- and 128-node rules still differ by more than 1e-13, recomputed here from
    the density; with the default 40 rounds nothing is left (exact integer counts)."""
    from state_evolution.free_probability import _refined_panels, cos_gauss_legendre, quadrature_failures

    s, c, q_hat = 1.0, 1.0, 1e-10
    panels, _, left = _refined_panels(s, c, q_hat, 256, max_rounds=2)

    def mass(a, b, n):
        u, w = cos_gauss_legendre(n)
        return float(np.sum((b - a) * w * density(a + (b - a) * u, s, c, q_hat)))

    disagree = sum(abs(mass(a, b, 256) - mass(a, b, 128)) > 1e-13 for a, b in panels)
    assert left > 0
    assert left == disagree
    assert quadrature_failures(s, c, q_hat) == 0


def test_quantile_search_reports_convergence():
    """``upper_quantile_search`` flags its result converged where the mass above it is κ to 1e-12
    (quadrature accuracy ~1e-13), at an ordinary and a near-hard-edge setting."""
    from state_evolution.free_probability import upper_quantile_search

    for q_hat in (1.0, 1e-10):
        t, ok = upper_quantile_search(0.5, 1.0, 1.0, q_hat)
        assert ok
        assert mass_above(t, 1.0, 1.0, q_hat) == pytest.approx(0.5, abs=1e-12)
