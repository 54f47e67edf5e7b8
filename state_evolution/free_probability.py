r"""Spectrum of ``B = m̂ S0 + √q̂ Z``: a scaled Marchenko–Pastur law ⊞ a semicircle.

Model
-----
* Teacher ``S0 = √κ0 · W0ᵀW0/R0`` (D×D, ``W0 ∈ R^{R0×D}`` i.i.d. N(0,1), ``R0 = κ0 D``).  Its
  spectrum tends to ``√κ0 × MP(c)`` with ratio ``c = D/R0 = 1/κ0`` (mean 1, variance ``c`` before
  the ``√κ0`` scaling; atom of mass ``1 − κ0`` at 0 when ``κ0 < 1``).
* ``Z`` is a GOE matrix with semicircle law on ``[−2, 2]``.
* ``B = m̂ S0 + √q̂ Z``; write ``s = m̂ √κ0`` (scale of the MP part).

Conventions: ``g_B(z) = ∫ ρ_B(x)/(z − x) dx`` so that ``Im g_B(x + i0) = −π ρ_B(x)``.

R-transform and cubic
---------------------
``R_B(g) = s/(1 − c s g) + q̂ g``; inserting into ``z = R_B(g) + 1/g`` gives the cubic

    P(g; z) = c s q̂ g³ − (q̂ + c s z) g² + (z − s + c s) g − 1 = 0,

i.e. coefficients ``a = c s q̂``, ``b = −(q̂ + c s z)``, ``c₁ = z − s + c s``, ``d = −1``
(docs/theory.md §2.2).

Branch selection (used throughout):

* ``Im z > 0``: exactly one root has ``Im g < 0`` (for such a root ``ω = z − q̂ g`` is in the upper
  half-plane and ``g = g_MP(ω)`` on the physical MP branch, because for a measure supported on
  ``[0, ∞)`` only one root of the MP quadratic has ``Im g < 0``; the subordination fixed point
  ``ω`` is unique by Denjoy–Wolff).  ``Im z < 0`` follows from ``g(z̄) = conj g(z)``.
* real ``z`` with cubic discriminant ``Δ(z) < 0``: one real root and a complex-conjugate pair;
  ``z`` is inside the support and ``g_B(z + i0)`` is the member of the pair with ``Im g < 0``.
* real ``z`` with ``Δ(z) ≥ 0``: three real roots, ``z`` outside the support (``ρ_B = 0``).  The
  physical root is the unique one with ``∂g/∂z < 0`` (at ``z + iη`` the roots acquire
  ``Im g ≈ η ∂g/∂z`` and only the physical one may have a negative imaginary part).

Support edges are the real roots of ``Δ(z)``, a polynomial of degree 4 in ``z`` (computed exactly by
polynomial arithmetic from ``Δ = 18abc₁d − 4b³d + b²c₁² − 4ac₁³ − 27a²d²``).  The density is
positive exactly where ``Δ(z) < 0``.  The support is one interval, or two intervals when
``κ0 < 1`` and ``q̂`` is small (the semicircle-smoothed atom at 0 separates from the MP bulk).

Quadrature
----------
Integrals ``∫ ρ_B(x) F(x, g_B(x)) dx`` over ``[lo, hi] ⊂ supp ρ_B`` use
``x = lo + (hi − lo)(1 − cos θ)/2`` with Gauss–Legendre nodes in ``θ ∈ [0, π]``; the Jacobian
``sin θ`` absorbs the square-root edges so that the integrand is analytic in ``θ`` and convergence is
exponential.  Intervals are additionally split at the real parts of complex roots of ``Δ`` that lie
inside the support (near-cusps where two intervals are about to merge / have just merged), and
then subdivided adaptively (graded towards the panel ends) until the ``n`` and ``n/2`` rules agree on
every panel's mass to 1e-13; this only triggers for extreme ``q̂/s² ≲ 1e-8`` (the smoothed hard edge
at 0 when ``κ0 ≈ 1``).  Support geometry and panels are memoised per parameter set (``lru_cache``).

The cubic requires ``q̂ > 0`` (for ``q̂ = 0`` the law has an atom and is not described by it);
``q̂ ≤ 0`` raises ``ValueError``.  Accuracy degrades slowly as ``q̂ → 0`` (the edges of the smoothed
atom / hard edge get sharp); ``n_nodes`` controls it.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from numpy.polynomial import polynomial as P

__all__ = [
    "cubic_coefficients",
    "discriminant_polynomial",
    "support_intervals",
    "support_pieces",
    "stieltjes_mp_semicircle",
    "density",
    "cos_gauss_legendre",
    "support_quadrature",
    "mass_above",
    "upper_quantile",
    "upper_quantile_search",
    "quadrature_failures",
]


# ---------------------------------------------------------------------------------------------
# validation / coefficients
# ---------------------------------------------------------------------------------------------
def _check_params(s, c, q_hat):
    for name, val in (("s", s), ("c", c)):
        if not (np.isfinite(val) and val > 0):
            raise ValueError(f"{name} must be finite and > 0, got {val!r}")
    if not np.isfinite(q_hat) or q_hat <= 0:
        raise ValueError(
            f"q_hat must be finite and > 0 for the free-probability route (q_hat = 0 gives a "
            f"spectrum with atoms, not described by the cubic), got {q_hat!r}"
        )
    return float(s), float(c), float(q_hat)


def cubic_coefficients(z, s, c, q_hat):
    """Coefficients ``(a, b, c₁, d)`` of ``a g³ + b g² + c₁ g + d = 0`` at spectral argument ``z``.

    ``a = c s q̂``, ``b = −(q̂ + c s z)``, ``c₁ = z − s + c s``, ``d = −1`` (``b, c₁`` broadcast with ``z``);
    docs/theory.md §2.2. Not validated (see :func:`stieltjes_mp_semicircle`).

    Args:
        z: spectral argument(s), real or complex, any shape.
        s: scale of the MP part, ``s = m̂ √κ0 > 0``.
        c: MP ratio, ``c = 1/κ0 > 0``.
        q_hat: semicircle variance ``q̂ > 0``.

    Returns:
        ``(a, b, c₁, d)``; ``b`` and ``c₁`` of the shape of ``z``.
    """
    a = c * s * q_hat
    b = -(q_hat + c * s * z)
    c1 = z - s + c * s
    return a, b, c1, -1.0


def _cubic_discriminant(a, b, c1, d):
    """``Δ = 18 a b c₁ d − 4 b³ d + b² c₁² − 4 a c₁³ − 27 a² d²`` (``Δ < 0``: one real root + pair)."""
    return 18 * a * b * c1 * d - 4 * b**3 * d + b**2 * c1**2 - 4 * a * c1**3 - 27 * a**2 * d**2


def discriminant_polynomial(s, c, q_hat):
    """Coefficients (ascending powers of ``z``, length 5) of ``Δ(z)``, the cubic's discriminant.

    Exact polynomial arithmetic on ``a = c s q̂``, ``b(z) = −q̂ − c s z``, ``c₁(z) = (c s − s) + z``,
    ``d = −1``:  ``Δ = 18 a b c₁ d − 4 b³ d + b² c₁² − 4 a c₁³ − 27 a² d²`` (docs/theory.md §2.2).

    Args:
        s: scale of the MP part, ``s = m̂ √κ0 > 0``.
        c: MP ratio, ``c = 1/κ0 > 0``.
        q_hat: semicircle variance ``q̂ > 0``.

    Returns:
        ``(5,)`` coefficients of ``Δ(z)``, ascending powers.

    Raises:
        ValueError: ``s``, ``c`` or ``q_hat`` not finite and ``> 0``.
    """
    s, c, q_hat = _check_params(s, c, q_hat)
    a = c * s * q_hat
    b = np.array([-q_hat, -c * s])
    c1 = np.array([c * s - s, 1.0])
    d = -1.0
    terms = [
        18 * a * d * P.polymul(b, c1),
        -4 * d * P.polypow(b, 3),
        P.polymul(P.polypow(b, 2), P.polypow(c1, 2)),
        -4 * a * P.polypow(c1, 3),
        np.array([-27 * a**2 * d**2]),
    ]
    out = np.zeros(5)
    for t in terms:
        out[: len(t)] += t
    return out


# ---------------------------------------------------------------------------------------------
# support
# ---------------------------------------------------------------------------------------------
def _polish_poly_roots(coef, roots, n_iter=3):
    """A few guarded Newton steps on real roots of the polynomial ``coef`` (ascending)."""
    dcoef = P.polyder(coef)
    r = np.array(roots, dtype=float)
    for _ in range(n_iter):
        val = P.polyval(r, coef)
        der = P.polyval(r, dcoef)
        with np.errstate(divide="ignore", invalid="ignore"):
            step = np.where(der != 0, val / der, 0.0)
        new = r - step
        ok = np.isfinite(new) & (np.abs(P.polyval(new, coef)) <= np.abs(val))
        r = np.where(ok, new, r)
    return r


@functools.lru_cache(maxsize=256)
def _support_structure(s, c, q_hat):
    """(intervals, breakpoint panels) as tuples; see :func:`support_intervals`."""
    coef = discriminant_polynomial(s, c, q_hat)
    roots = P.polyroots(coef)
    tol_im = 1e-7 * _spectral_scale(s, c, q_hat)
    real_roots = _polish_poly_roots(coef, roots[np.abs(roots.imag) <= tol_im].real)
    # Real parts of genuinely complex roots are candidate split points (near-cusps).
    cusp_like = roots[np.abs(roots.imag) > tol_im].real
    bps = np.unique(np.concatenate([real_roots, cusp_like]))
    if bps.size < 2:
        raise RuntimeError(f"could not locate the support: discriminant roots {roots}")
    mids = 0.5 * (bps[:-1] + bps[1:])
    inside = P.polyval(mids, coef) < 0
    intervals, pieces = [], []
    k = 0
    while k < len(mids):
        if not inside[k]:
            k += 1
            continue
        start = k
        while k + 1 < len(mids) and inside[k + 1]:
            k += 1
        lo, hi = bps[start], bps[k + 1]
        intervals.append((float(lo), float(hi)))
        pts = bps[start : k + 2]
        pieces.extend((float(pts[i]), float(pts[i + 1])) for i in range(len(pts) - 1))
        k += 1
    if not intervals:
        raise RuntimeError(f"could not locate the support: discriminant roots {roots}")
    return tuple(intervals), tuple(pieces)


@functools.lru_cache(maxsize=256)
def _refined_panels(s, c, q_hat, n_nodes, tol=1e-13, max_rounds=40):
    """Quadrature panels and their masses: :func:`support_pieces`, adaptively subdivided.

    A panel is accepted when its mass ``∫ρ_B`` by the ``n_nodes`` rule and by the ``n_nodes/2``
    rule agree to ``tol`` (absolute; total mass is 1).  Otherwise it is split at
    ``lo + w/16``, ``lo + w/2`` and ``hi − w/16`` (``w = hi − lo``): the graded end cuts resolve
    features much narrower than the panel next to an edge (e.g. the smoothed hard edge at 0 for
    ``κ0 ≈ 1`` when ``q̂/s² ≲ 1e-8``), the bisection interior ones.  In typical cases no panel is
    split and the cost is one extra evaluation with ``n_nodes/2`` nodes.

    Returns ``(panels, masses, unrefined)``: sorted tuple of ``(lo, hi)``, the ``n_nodes``-rule masses,
    and the number of the last round's panels whose two rules still disagree (kept as they are: a
    quadrature failure that :func:`quadrature_failures` reports).
    """
    u1, w1 = cos_gauss_legendre(n_nodes)
    u2, w2 = cos_gauss_legendre(max(n_nodes // 2, 4))
    floor = 1e-14 * _spectral_scale(s, c, q_hat)

    def panel_masses(panels, u, w):
        lo = np.array([p[0] for p in panels])[:, None]
        width = np.array([p[1] - p[0] for p in panels])[:, None]
        g = _stieltjes_real((lo + width * u).ravel(), s, c, q_hat).reshape(len(panels), -1)
        return np.sum(width * w * np.maximum(-g.imag, 0.0), axis=1) / np.pi

    todo = list(_support_structure(s, c, q_hat)[1])
    done = []
    for _ in range(max_rounds):
        if not todo:
            break
        m1, m2 = panel_masses(todo, u1, w1), panel_masses(todo, u2, w2)
        nxt = []
        for (a, b), mass, good in zip(todo, m1, np.abs(m1 - m2) <= tol):
            wd = b - a
            if good or wd <= floor + 1e-15 * max(abs(a), abs(b)):
                done.append((a, b, float(mass)))
            else:
                cuts = (a, a + wd / 16, a + wd / 2, b - wd / 16, b)
                nxt.extend(zip(cuts[:-1], cuts[1:]))
        todo = nxt
    unconverged = 0
    if todo:  # not converged within max_rounds: kept as they are; those whose two rules disagree are counted
        m1, m2 = panel_masses(todo, u1, w1), panel_masses(todo, u2, w2)
        done.extend((a, b, float(m)) for (a, b), m in zip(todo, m1))
        unconverged = int(np.sum(~(np.abs(m1 - m2) <= tol)))
    done.sort()
    return tuple((a, b) for a, b, _ in done), tuple(m for _, _, m in done), unconverged


def quadrature_failures(s, c, q_hat, n_nodes=256):
    """The number of support panels whose mass did not converge under refinement (the ``n_nodes`` and
    ``n_nodes/2`` rules still differ by more than 1e-13 after the last round; they are used as they are
    by :func:`support_quadrature`). 0 in typical cases.

    Args:
        s: scale of the MP part, ``s = m̂ √κ0 > 0``.
        c: MP ratio, ``c = 1/κ0 > 0``.
        q_hat: semicircle variance ``q̂ > 0``.
        n_nodes: nodes per panel, ``≥ 2``.

    Returns:
        The count of unconverged panels.

    Raises:
        ValueError: ``s``, ``c`` or ``q_hat`` not finite and ``> 0``.
    """
    s, c, q_hat = _check_params(s, c, q_hat)
    return int(_refined_panels(s, c, q_hat, int(n_nodes))[2])


def _spectral_scale(s, c, q_hat):
    """A natural scale of the spectrum (its rough width), used for relative tolerances."""
    return s * (1.0 + math.sqrt(c)) ** 2 + 2.0 * math.sqrt(q_hat)


def support_intervals(s, c, q_hat):
    """Support of ``ρ_B`` as a list of disjoint ``(a, b)`` intervals, sorted.

    Edges are the real roots of the quartic ``Δ(z)`` (:func:`discriminant_polynomial`), polished by
    Newton; a segment between consecutive roots is in the support iff ``Δ < 0`` at its midpoint.

    Args:
        s: scale of the MP part, ``s = m̂ √κ0 > 0``.
        c: MP ratio, ``c = 1/κ0 > 0``.
        q_hat: semicircle variance ``q̂ > 0``.

    Returns:
        ``[(a, b), ...]`` sorted disjoint intervals (one, or two when the smoothed atom separates).

    Raises:
        ValueError: ``s``, ``c`` or ``q_hat`` not finite and ``> 0``.
           RuntimeError: the support cannot be located from the discriminant's roots.
    """
    s, c, q_hat = _check_params(s, c, q_hat)
    return list(_support_structure(s, c, q_hat)[0])


def support_pieces(s, c, q_hat):
    """The support intervals, further split at real parts of complex roots of ``Δ`` inside them.

    These are the initial quadrature panels: on each the density is analytic in the interior and
    has at most square-root behaviour at the ends; they are further subdivided adaptively where
    needed (narrow features next to an edge, see ``_refined_panels``).

    Args:
        s: scale of the MP part, ``s = m̂ √κ0 > 0``.
        c: MP ratio, ``c = 1/κ0 > 0``.
        q_hat: semicircle variance ``q̂ > 0``.

    Returns:
        ``[(lo, hi), ...]`` sorted panels covering the support.

    Raises:
        ValueError: ``s``, ``c`` or ``q_hat`` not finite and ``> 0``.
           RuntimeError: the support cannot be located from the discriminant's roots.
    """
    s, c, q_hat = _check_params(s, c, q_hat)
    return list(_support_structure(s, c, q_hat)[1])


# ---------------------------------------------------------------------------------------------
# Stieltjes transform
# ---------------------------------------------------------------------------------------------
def _newton_cubic(g, a, b, c1, d, n_iter):
    for _ in range(n_iter):
        p = ((a * g + b) * g + c1) * g + d
        dp = (3 * a * g + 2 * b) * g + c1
        with np.errstate(divide="ignore", invalid="ignore"):
            new = g - p / dp
        g = np.where(np.isfinite(new), new, g)
    return g


def _stieltjes_inside(x, s, c, q_hat, a, b, c1, disc):
    """Physical root at real ``x`` where ``Δ < 0``: real root ``r`` by Cardano, pair by Vieta.

    Monic form ``g³ + A₂g² + A₁g + A₀`` (``A_k`` = coefficient/``a``); with
    ``Q = (A₂² − 3A₁)/9``, ``R = (2A₂³ − 9A₂A₁ + 27A₀)/54`` and ``R² − Q³ = −Δ/(108 a⁴)`` (taken from
    the accurately computed ``Δ`` to avoid cancellation when ``a`` is small),
    ``r = A + Q/A − A₂/3`` with ``A = −sign(R)(|R| + √(R² − Q³))^{1/3}``, then Newton-polished.
    Pair ``u ± i v`` from Vieta: ``u² + v² = −d/(a r)``, ``u = (c₁ + d/r)/(2 a r)``.
    """
    d = -1.0
    A2, A1, A0 = b / a, c1 / a, d / a
    Q = (A2 * A2 - 3.0 * A1) / 9.0
    R = (2.0 * A2**3 - 9.0 * A2 * A1 + 27.0 * A0) / 54.0
    sq = np.sqrt(np.maximum(-disc / (108.0 * a**4), 0.0))
    A = -np.where(R >= 0, 1.0, -1.0) * np.cbrt(np.abs(R) + sq)
    with np.errstate(divide="ignore", invalid="ignore"):
        Bq = np.where(A != 0, Q / A, 0.0)
    r = _newton_cubic(A + Bq - A2 / 3.0, a, b, c1, d, 3)
    ar = a * r
    u = (c1 + d / r) / (2.0 * ar)
    v2 = -d / ar - u * u
    return u - 1j * np.sqrt(np.maximum(v2, 0.0))


def _cubic_roots_batch(a, b, c1, d):
    """All three roots for each point (companion-matrix eigenvalues, Newton-polished)."""
    b, c1 = np.broadcast_arrays(np.asarray(b, dtype=complex), np.asarray(c1, dtype=complex))
    n = b.size
    comp = np.zeros((n, 3, 3), dtype=complex)
    comp[:, 0, 0] = -b.ravel() / a
    comp[:, 0, 1] = -c1.ravel() / a
    comp[:, 0, 2] = -d / a
    comp[:, 1, 0] = 1.0
    comp[:, 2, 1] = 1.0
    roots = np.linalg.eigvals(comp)  # (n, 3)
    return _newton_cubic(roots, a, b.ravel()[:, None], c1.ravel()[:, None], d, 2)


def _stieltjes_outside(x, s, c, q_hat):
    """Physical (real) root at real ``x`` outside the support: the root with ``∂g/∂z < 0``.

    ``∂g/∂z = −∂_z P/∂_g P`` with ``∂_z P = g − c s g²`` and ``∂_g P = 3 a g² + 2 b g + c₁``.
    """
    a, b, c1, d = cubic_coefficients(x, s, c, q_hat)
    roots = _cubic_roots_batch(a, b, c1, d).real
    b = np.asarray(b)[:, None]
    c1 = np.asarray(c1)[:, None]
    roots = _newton_cubic(roots, a, b, c1, d, 2)
    dzp = roots - c * s * roots**2
    dgp = (3 * a * roots + 2 * b) * roots + c1
    with np.errstate(divide="ignore", invalid="ignore"):
        gprime = -dzp / dgp
    gprime = np.where(np.isfinite(gprime), gprime, np.inf)
    idx = np.argmin(gprime, axis=1)
    return roots[np.arange(len(idx)), idx].astype(complex)


def _stieltjes_real(x, s, c, q_hat):
    x = np.asarray(x, dtype=float)
    a, b, c1, d = cubic_coefficients(x, s, c, q_hat)
    disc = _cubic_discriminant(a, b, c1, d)
    out = np.empty(x.shape, dtype=complex)
    inside = disc < 0
    if np.any(inside):
        out[inside] = _stieltjes_inside(
            x[inside], s, c, q_hat, a, b[inside], c1[inside], disc[inside]
        )
    if not np.all(inside):
        out[~inside] = _stieltjes_outside(x[~inside], s, c, q_hat)
    return out


def _stieltjes_upper(z, s, c, q_hat):
    """``Im z > 0``: the unique root with ``Im g < 0``."""
    a, b, c1, d = cubic_coefficients(z, s, c, q_hat)
    roots = _cubic_roots_batch(a, b, c1, d)
    idx = np.argmin(roots.imag, axis=1)
    return roots[np.arange(len(idx)), idx]


def stieltjes_mp_semicircle(z, s, c, q_hat):
    """``g_B(z) = ∫ ρ_B(x)/(z − x) dx`` for ``B = s·MP(c) ⊞ semicircle(q̂)``, vectorised over ``z``.

    Solves ``c s q̂ g³ − (q̂ + c s z) g² + (z − s + c s) g − 1 = 0`` and picks the physical root
    (module docstring).  For real ``z`` in the support this is the boundary value
    ``g_B(z + i0)`` (``Im g < 0``, ``ρ_B = −Im g/π``); outside the support it is real.

    Args:
        z: real or complex array-like.
        s: scale of the MP part (``s = m̂ √κ0``), > 0.
        c: MP ratio (``c = 1/κ0``), > 0.
        q_hat: semicircle variance ``q̂`` > 0.

    Returns:
        complex ndarray of the shape of ``z``.

    Raises:
        ValueError: ``s``, ``c`` or ``q_hat`` not finite and ``> 0``, or a non-finite ``z``.
    """
    s, c, q_hat = _check_params(s, c, q_hat)
    z = np.asarray(z)
    if not np.all(np.isfinite(z)):
        raise ValueError("z must be finite")
    zc = z.astype(complex).ravel()
    out = np.empty(zc.shape, dtype=complex)
    im = zc.imag
    real = im == 0
    if np.any(real):
        out[real] = _stieltjes_real(zc[real].real, s, c, q_hat)
    up = im > 0
    if np.any(up):
        out[up] = _stieltjes_upper(zc[up], s, c, q_hat)
    down = im < 0
    if np.any(down):
        out[down] = np.conj(_stieltjes_upper(np.conj(zc[down]), s, c, q_hat))
    return out.reshape(z.shape)


def density(x, s, c, q_hat):
    """``ρ_B(x) = −Im g_B(x + i0)/π`` at real ``x`` (zero outside the support); docs/theory.md §2.2.

    Args:
        x: real points, any shape.
        s: scale of the MP part, ``s = m̂ √κ0 > 0``.
        c: MP ratio, ``c = 1/κ0 > 0``.
        q_hat: semicircle variance ``q̂ > 0``.

    Returns:
        ``ρ_B(x)``, float array of the shape of ``x``.

    Raises:
        ValueError: ``s``, ``c`` or ``q_hat`` not finite and ``> 0``, or a non-finite ``x``.
    """
    x = np.asarray(x, dtype=float)
    return np.maximum(-stieltjes_mp_semicircle(x, s, c, q_hat).imag / np.pi, 0.0)


# ---------------------------------------------------------------------------------------------
# quadrature
# ---------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=32)
def cos_gauss_legendre(n_nodes):
    """Reference rule on ``[0, 1]`` for ``x = (1 − cos θ)/2``, Gauss–Legendre in ``θ ∈ [0, π]``.

    Returns read-only ``(u, w)`` such that ``∫₀¹ h(u) du ≈ Σ_j w_j h(u_j)``, with
    ``w_j = (π/2) w^{GL}_j · sin(θ_j)/2``.  For a panel ``[lo, hi]``: nodes ``lo + (hi − lo) u`` and
    weights ``(hi − lo) w``.

    Args:
        n_nodes: Gauss–Legendre nodes, ``≥ 2``.

    Returns:
        ``(u, w)``, two read-only ``(n_nodes,)`` arrays.

    Raises:
        ValueError: ``n_nodes < 2``.
    """
    n_nodes = int(n_nodes)
    if n_nodes < 2:
        raise ValueError(f"n_nodes must be >= 2, got {n_nodes}")
    t, wt = np.polynomial.legendre.leggauss(n_nodes)
    theta = 0.5 * np.pi * (t + 1.0)
    u = 0.5 * (1.0 - np.cos(theta))
    w = 0.5 * np.pi * wt * 0.5 * np.sin(theta)
    u.flags.writeable = False
    w.flags.writeable = False
    return u, w


def _panels_above(pieces, lower):
    return [(max(lo, lower), hi) for lo, hi in pieces if hi > lower]


def support_quadrature(s, c, q_hat, lower=-np.inf, n_nodes=256):
    """Nodes ``x``, weights ``w`` (for ``dx``) and ``g = g_B(x + i0)`` on ``supp ρ_B ∩ [lower, ∞)``.

    ``∫_{x > lower} ρ_B(x) F(x) dx ≈ Σ_j w_j ρ_j F(x_j)`` with ``ρ_j = −Im g_j/π``; ``n_nodes``
    Gauss–Legendre nodes per panel (:func:`support_pieces`, adaptively subdivided until the
    ``n_nodes`` and ``n_nodes/2`` rules agree on each panel's mass to 1e-13, then cut at ``lower``).

    Args:
        s: scale of the MP part, ``s = m̂ √κ0 > 0``.
        c: MP ratio, ``c = 1/κ0 > 0``.
        q_hat: semicircle variance ``q̂ > 0``.
        lower: the lower cut (default: the whole support).
        n_nodes: nodes per panel, ``≥ 2``.

    Returns:
        ``(x, w, g)``: nodes, weights and complex ``g_B(x + i0)``, all ``(N,)``; empty when ``lower`` is
        above the support.

    Raises:
        ValueError: ``s``, ``c`` or ``q_hat`` not finite and ``> 0``, or ``n_nodes < 2``.
    """
    s, c, q_hat = _check_params(s, c, q_hat)
    u, w = cos_gauss_legendre(n_nodes)
    panels = _panels_above(_refined_panels(s, c, q_hat, int(n_nodes))[0], lower)
    if not panels:
        return np.empty(0), np.empty(0), np.empty(0, dtype=complex)
    lo = np.array([p[0] for p in panels])[:, None]
    width = np.array([p[1] - p[0] for p in panels])[:, None]
    x = (lo + width * u).ravel()
    wx = (width * w).ravel()
    return x, wx, _stieltjes_real(x, s, c, q_hat)


def mass_above(t, s, c, q_hat, n_nodes=256):
    """``∫_t^∞ ρ_B(x) dx`` (by :func:`support_quadrature`).

    Args:
        t: the threshold.
        s: scale of the MP part, ``s = m̂ √κ0 > 0``.
        c: MP ratio, ``c = 1/κ0 > 0``.
        q_hat: semicircle variance ``q̂ > 0``.
        n_nodes: nodes per panel, ``≥ 2``.

    Returns:
        The mass above ``t``, in ``[0, 1]`` up to quadrature error.

    Raises:
        ValueError: ``s``, ``c`` or ``q_hat`` not finite and ``> 0``, or ``n_nodes < 2``.
    """
    _, w, g = support_quadrature(s, c, q_hat, lower=t, n_nodes=n_nodes)
    return float(np.sum(w * np.maximum(-g.imag, 0.0)) / np.pi)


def upper_quantile(kappa, s, c, q_hat, n_nodes=256, tol=1e-13):
    """``b_κ`` of :func:`upper_quantile_search` (without its convergence flag).

    Args:
        kappa: ``κ ∈ (0, 1]``, the mass above the quantile.
        s: scale of the MP part, ``s = m̂ √κ0 > 0``.
        c: MP ratio, ``c = 1/κ0 > 0``.
        q_hat: semicircle variance ``q̂ > 0``.
        n_nodes: nodes per panel, ``≥ 2``.
        tol: tolerance on the mass.

    Returns:
        ``b_κ``.

    Raises:
        ValueError: ``s``, ``c`` or ``q_hat`` not finite and ``> 0``, or ``kappa`` outside ``(0, 1]``.
    """
    return upper_quantile_search(kappa, s, c, q_hat, n_nodes, tol)[0]


def upper_quantile_search(kappa, s, c, q_hat, n_nodes=256, tol=1e-13):
    """``b_κ`` with ``∫_{b_κ}^∞ ρ_B = κ`` (the (1 − κ)-quantile), for ``0 < κ ≤ 1``.

    The panel containing ``b_κ`` is located from the panel masses; inside it a safeguarded Newton
    iteration ``t ← t + (M(t) − κ)/ρ_B(t)`` on ``M(t) = ∫_t ρ_B`` (bisection fallback on the
    bracket) is started from the interpolated cumulative quadrature sum.  If ``κ`` equals the mass
    above a gap, the lower edge of the upper interval is returned.  ``κ = 1`` returns the lower edge.
    Used for the rank constraint ``κ < 1`` of the prior (docs/theory.md §2.2).

    Args:
        kappa: ``κ ∈ (0, 1]``, the mass above the quantile.
        s: scale of the MP part, ``s = m̂ √κ0 > 0``.
        c: MP ratio, ``c = 1/κ0 > 0``.
        q_hat: semicircle variance ``q̂ > 0``.
        n_nodes: nodes per panel, ``≥ 2``.
        tol: tolerance on the mass.

    Returns:
        ``(b_κ, converged)``: ``converged`` is ``False`` when 60 iterations ended with the mass above
        ``b_κ`` still off by more than ``tol`` (the last iterate is returned).

    Raises:
        ValueError: ``s``, ``c`` or ``q_hat`` not finite and ``> 0``, or ``kappa`` outside ``(0, 1]``.
    """
    s, c, q_hat = _check_params(s, c, q_hat)
    if not (0 < kappa <= 1):
        raise ValueError(f"kappa must be in (0, 1], got {kappa!r}")
    pieces, masses, _ = _refined_panels(s, c, q_hat, int(n_nodes))
    if kappa == 1:
        return pieces[0][0], True
    u, w = cos_gauss_legendre(n_nodes)
    raw_total = float(sum(masses))
    tot = np.array(masses) / raw_total  # normalise away the quadrature error of the total
    above = np.cumsum(tot[::-1])[::-1]  # mass in panel k and all panels above
    k = int(np.nonzero(above >= kappa)[0][-1])
    target = kappa - (above[k] - tot[k])  # mass wanted inside panel k, above t
    lo, hi = pieces[k]
    if target >= tot[k] * (1 - 1e-15):
        return lo, True
    # initial guess: cumulative node masses from the top of panel k, interpolated
    xs = lo + (hi - lo) * u
    g = _stieltjes_real(xs, s, c, q_hat)
    node_mass = (hi - lo) * w * np.maximum(-g.imag, 0.0) / (np.pi * raw_total)
    cum_from_top = np.cumsum(node_mass[::-1])[::-1]  # ≈ mass above node j
    t = float(np.interp(-target, -cum_from_top, xs))
    a_br, b_br = lo, hi  # M(a_br) >= target >= M(b_br)
    converged = False
    for _ in range(60):
        # one cubic solve for the panel [t, hi] and for ρ_B(t) (last entry)
        g = _stieltjes_real(np.append(t + (hi - t) * u, t), s, c, q_hat)
        m_t = float(np.sum((hi - t) * w * np.maximum(-g[:-1].imag, 0.0)) / np.pi) / raw_total
        resid = m_t - target
        if abs(resid) <= tol:
            converged = True
            break
        if resid > 0:
            a_br = t
        else:
            b_br = t
        rho_t = max(-g[-1].imag, 0.0) / (np.pi * raw_total)
        t_new = t + resid / rho_t if rho_t > 0 else np.nan
        if not (a_br < t_new < b_br):
            t_new = 0.5 * (a_br + b_br)
        if abs(t_new - t) <= 1e-15 * (abs(t) + hi - lo):  # the bracket is at round-off: as exact as it gets
            t, converged = t_new, True
            break
        t = t_new
    return float(t), converged
