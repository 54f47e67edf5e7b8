"""Closed-form loss, gradient and Hessian of the per-sample loss ``ℓ(Y, H) = ½‖Y − σ(H)‖²_F``.

Softmax rows ``p_a = softmax(β H_a)``, residual ``r = Y − p``, ``s_a = Σ_b r_ab p_ab``:

    ∂ℓ/∂H_ac        = −β p_ac (r_ac − s_a)
    ∂²ℓ/∂H_ac∂H_ad  = β² Σ_b J_a,bc J_a,bd − β² [δ_cd p_ac (r_ac − s_a) − p_ac p_ad (r_ac + r_ad − 2 s_a)]

with ``J_a = diag(p_a) − p_a p_aᵀ`` (rows of ``H`` decouple). Expanding ``J_a² = diag(p²) − p p²ᵀ − p² pᵀ
+ ‖p‖² p pᵀ`` gives the entrywise form that the code evaluates (``e = r − p``, ``S2 = Σ_b p_b²``, per row):

    ∂²ℓ/∂H_ac∂H_ad  = β² [ p_c p_d (S2 − 2s + e_c + e_d) + δ_cd p_c (s − e_c) ].

Identity: ``∂ℓ/∂H = −(β/T) r``, ``∂²ℓ/∂H∂H = (β/T)² I``.

**Layout: structure of arrays.** The channels need these for every Monte Carlo sample at every
Newton step (``~6·10⁴`` samples of ``3×3`` logits), so they are written on *lists of* ``(n,)``
*arrays*, one per matrix entry (:func:`entries`), with the sums over the ``T`` tokens unrolled in
Python: XLA then fuses the whole computation into a few loops over the samples that vectorise along
``n``. Batched ``(n, T, T, T)`` tensors with ``einsum`` contractions over axes of length 3 ran 5×
slower on this CPU (measured, one core, 65536 samples: LoRA derivatives 72 → 14 ms).
``tests/test_loss_derivatives.py`` and ``tests/test_channel_lora.py`` check everything against automatic
differentiation.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np


def entries(H):
    """``(n, T, T)`` array → ``T × T`` nested list of its ``(n,)`` entries."""
    T = H.shape[-1]
    return [[H[..., a, b] for b in range(T)] for a in range(T)]


def as_entries(H):
    """``H`` as a nested list of entries: already one (returned as is), or an ``(n, T, T)`` array.
    Callers that evaluate a loss many times on the same labels split them once (contiguous
    ``(n,)`` arrays instead of strided slices inside every evaluation)."""
    return H if isinstance(H, (list, tuple)) else entries(H)


def stack_entries(E):
    """Inverse of :func:`entries` (nested list of ``(n,)`` arrays → ``(n, T, T)``)."""
    return jnp.stack([jnp.stack(row, axis=-1) for row in E], axis=-2)


def entry_sum(terms):
    """Sum of a non-empty iterable of arrays or scalars, left to right."""
    terms = list(terms)
    return sum(terms[1:], terms[0])


def coordinate_map(T: int) -> np.ndarray:
    """``M[a, b, k] = ∂H_ab/∂h_k`` (``√2`` on the diagonal, 1 on both off-diagonal copies)."""
    rows, cols = np.triu_indices(T)
    M = np.zeros((T, T, rows.size))
    for k, (a, b) in enumerate(zip(rows, cols)):
        if a == b:
            M[a, a, k] = np.sqrt(2.0)
        else:
            M[a, b, k] = M[b, a, k] = 1.0
    return M


def coordinate_entries(h, T: int):
    """Whitened coordinates ``(n, K)`` → the ``T × T`` nested list of logit entries (``H_aa = √2 h_aa``)."""
    rows, cols = np.triu_indices(T)
    E = [[None] * T for _ in range(T)]
    for k, (a, b) in enumerate(zip(rows, cols)):
        if a == b:
            E[a][a] = np.sqrt(2.0) * h[..., k]
        else:
            E[a][b] = E[b][a] = h[..., k]
    return E


def activation_entries(H, activation, beta):
    """``σ(H)`` entry by entry (``H`` a nested list)."""
    T = len(H)
    if activation == "identity":
        return [[(beta / T) * H[a][b] for b in range(T)] for a in range(T)]
    out = []
    for a in range(T):
        row = [beta * H[a][b] for b in range(T)]
        mx = row[0]
        for x in row[1:]:
            mx = jnp.maximum(mx, x)
        ex = [jnp.exp(x - mx) for x in row]
        tot = entry_sum(ex)
        out.append([x / tot for x in ex])
    return out


def logit_loss(H, Y, activation, beta):
    """``ℓ = ½‖Y − σ(H)‖²_F`` per sample (``H``, ``Y`` nested lists)."""
    S = activation_entries(H, activation, beta)
    T = len(H)
    return 0.5 * entry_sum((Y[a][b] - S[a][b]) ** 2 for a in range(T) for b in range(T))


def logit_derivatives(H, Y, activation, beta):
    """Derivatives of ``ℓ = ½‖Y − σ(H)‖²_F`` in the ``T²`` entries of ``H`` taken as independent.

    ``H``, ``Y``: nested ``T × T`` lists of ``(n,)`` arrays. Returns ``(G, R)``: ``G[a][c] = ∂ℓ/∂H_ac``
    (nested list) and ``R(a, c, d) = ∂²ℓ/∂H_ac ∂H_ad`` (a function returning an ``(n,)`` array or a
    scalar; the Hessian is block diagonal over the rows ``a``). Chain rules to any parametrisation of
    ``H`` (whitened coordinates here, the LoRA field ``z`` in :mod:`state_evolution.channel_lora`)
    contract these.
    """
    T = len(H)
    if activation == "identity":
        k = beta / T
        G = [[-k * (Y[a][b] - k * H[a][b]) for b in range(T)] for a in range(T)]
        return G, lambda a, c, d: (k * k) if c == d else 0.0
    P = activation_entries(H, activation, beta)
    G, coef, diag = [], [], []
    for a in range(T):
        p = P[a]
        r = [Y[a][b] - p[b] for b in range(T)]
        s = entry_sum(r[b] * p[b] for b in range(T))
        e = [r[b] - p[b] for b in range(T)]
        base = entry_sum(p[b] * p[b] for b in range(T)) - 2 * s
        G.append([-beta * p[b] * (r[b] - s) for b in range(T)])
        coef.append((base, e))
        diag.append([p[b] * (s - e[b]) for b in range(T)])
    b2 = beta * beta

    def R(a, c, d):
        base, e = coef[a]
        off = P[a][c] * P[a][d] * (base + e[c] + e[d])
        return b2 * (off + diag[a][c]) if c == d else b2 * off

    return G, R


def loss_value(h, Y, T, activation, beta):
    """``ℓ(Y, h)`` for a batch of whitened logits ``h`` ``(n, K)`` and labels ``Y`` (``(n, T, T)`` or
    its :func:`entries`)."""
    return logit_loss(coordinate_entries(h, T), as_entries(Y), activation, beta)


def _coordinate_weights(T: int):
    """Per whitened coordinate ``k``, its logit entries ``[(a, c, ∂H_ac/∂h_k), ...]`` (one on the
    diagonal with weight ``√2``, two off it with weight 1): the non-zeros of :func:`coordinate_map`."""
    M = coordinate_map(T)
    return [[(a, c, float(M[a, c, k])) for a in range(T) for c in range(T) if M[a, c, k] != 0]
            for k in range(M.shape[-1])]


def loss_derivatives(h, Y, T, activation, beta):
    """``(∇_h ℓ, ∇²_h ℓ)`` for a batch, shapes ``(n, K)`` and ``(n, K, K)`` (chain rule through ``M``):

        ∂ℓ/∂h_k = Σ_ac M[a,c,k] ∂ℓ/∂H_ac,     ∂²ℓ/∂h_k∂h_l = Σ_a Σ_cd M[a,c,k] R[a,c,d] M[a,d,l],

    as static sums over the non-zeros of ``M``."""
    G, R = logit_derivatives(coordinate_entries(h, T), as_entries(Y), activation, beta)
    weights = _coordinate_weights(T)
    K = len(weights)
    zero = jnp.zeros(h.shape[:-1], h.dtype)
    grad_h = jnp.stack([entry_sum(w * G[a][c] for a, c, w in ent) for ent in weights], axis=-1)
    hess = [[None] * K for _ in range(K)]
    for k in range(K):
        for l in range(k, K):
            terms = [wk * wl * R(a, c, d) for a, c, wk in weights[k] for b, d, wl in weights[l] if a == b]
            hess[k][l] = hess[l][k] = sum(terms, zero)
    return grad_h, stack_entries(hess)
