"""Shared by the free-probability and spectral-prior tests."""

import math

D_MC = 1000
"""Dimension of the explicit-matrix oracles."""


def mp_params(m_hat, kappa0):
    """(s, c) of the MP part of B = m̂ S0 + √q̂ Z."""
    return m_hat * math.sqrt(kappa0), 1.0 / kappa0
