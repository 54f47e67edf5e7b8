"""Student/teacher Gaussian fields with prescribed overlaps (shared by all sampled channels).

At a fixed point with overlaps ``(m, q, ρ)`` a student field ``ω`` and the teacher field ``h0`` are
jointly Gaussian with ``E[ω²] = q``, ``E[ω h0] = m``, ``E[h0²] = ρ``; from two independent
standard normals ``a, b``:

    ω = √q a,     h0 = (m/√q) a + √(ρ − m²/q) b.
"""

from __future__ import annotations

import jax.numpy as jnp


def student_teacher_fields(m, q, rho, a, b):
    """``(ω, h0, √(ρ − m²/q))`` from standard normals ``a, b`` (safe at ``q = 0``: then ``ω = 0``, ``h0 = √ρ b``).

    ``ω = √q a``, ``h0 = (m/√q) a + √(ρ − m²/q) b`` (docs/theory.md §1, §2.1); ``ρ − m²/q`` is clipped at 0.

    Args:
        m: student–teacher overlap.
        q: student self-overlap, ``≥ 0``.
        rho: teacher self-overlap.
        a: standard normals, any shape.
        b: standard normals, the shape of ``a``.

    Returns:
        ``(ω, h0, √(ρ − m²/q))`` (arrays of the shape of ``a``, and a scalar).
    """
    q_safe = jnp.maximum(q, 1e-300)
    c0 = jnp.where(q > 0, m / jnp.sqrt(q_safe), 0.0)
    c1 = jnp.sqrt(jnp.maximum(rho - c0 ** 2, 0.0))
    return jnp.sqrt(q) * a, c0 * a + c1 * b, c1
