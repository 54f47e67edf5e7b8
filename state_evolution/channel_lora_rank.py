"""The rank-r LoRA output channel (fine-tuning with ``U ∈ R^{D×r}``, a shift of rank ``r*``), by Monte Carlo.

Per fine-tuning sample (docs/theory.md §7.1), ``T × r`` student fields and ``T × r*`` teacher fields whose
rows (tokens) are i.i.d. with the overlaps ``Q'`` (``r × r``), ``M'`` (``r × r*``) and ``ρ_V = I``:

    ω  = ξ0 Q'^{1/2},   z* = ξ0 Bᵀ + ξ1 L*,   B = M'ᵀ Q'^{-1/2},   L* = (I − B Bᵀ)^{1/2}
    Ĥ, H0: the GOE pair of the pre-training fixed point (as the rank-one channel)
    Y' = σ(H0 + γ(z* z*ᵀ − r* I) + noise),     ℓ(z) = ½ ‖Y' − σ(Ĥ + z zᵀ − Tr Q' I)‖²_F
    prox  z = ω + g V',   g + ∇_z ℓ(z) = 0       (each token's row: z_a = ω_a + V' g_a)

The prox with a matrix response ``V'`` is solved as a scalar one in whitened variables: with
``z = h V'^{1/2}`` it is ``argmin_h ½‖h − ω V'^{-1/2}‖² + ℓ̃(h)``, ``ℓ̃(h) = ℓ(h V'^{1/2})``, whose logits
are ``Ĥ + h V' hᵀ − Tr Q' I`` (:func:`rank_lora_derivatives` with the metric ``K = V'``), so the
safeguarded multistart Newton of :mod:`state_evolution.prox_newton` applies unchanged (``V = 1``).

Conjugates (``r × r*``, ``r × r``, ``r × r``; ``g`` and the normals as ``T × r`` matrices):

    M̂' = α' E[gᵀ ξ1] L*^{-1},   Q̂' = α' E[gᵀ g],   V̂' = −α' E[(g − g̃)ᵀ η] S^{-1}/2  (symmetrised),

the last by the antithetic Stein estimator: ``ω = z* M'ᵀ + η S``, ``S = (Q' − M'M'ᵀ)^{1/2}``, and ``g̃`` the
prox at the reflected centre ``2 z* M'ᵀ − ω``. The ridge shift is a scalar (``Tr Q'`` is rotation invariant):
``λ_eff = λ' + 2α' E[∂ℓ/∂Tr Q']``, ``∂ℓ/∂Tr Q' = −tr ∂ℓ/∂H``. At ``r = r* = 1`` every line is the rank-one
channel's (:mod:`state_evolution.channel_lora`; tested).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from solvable_attention.activations import apply_activation
from solvable_attention.labels import labels_from_draw
from solvable_attention.runtime import float64

from .goe_coordinates import from_coordinates, n_free_entries
from .loss_derivatives import as_entries, entries, entry_sum, logit_derivatives, logit_loss, stack_entries
from .prox_newton import UNFINISHED_RESIDUAL, solve_prox_multistart
from .channel_lora import fresh_side_fields
from .sampling import N_SAMPLES, N_TEST_SAMPLES, TEST_SEED_OFFSET, gaussian_samples, sample_mean_se
from .small_linalg import solve


def _rank_logit_entries(P, h, tq, H_hat):
    """``Ĥ + h K hᵀ − tq I`` entry by entry, from ``P = h K`` and ``h`` (lists ``[a][k]`` of ``(n,)`` arrays)."""
    T, r = len(h), len(h[0])
    Hh = as_entries(H_hat)
    return [[Hh[a][b] + entry_sum(P[a][k] * h[b][k] for k in range(r)) - (tq if a == b else 0.0)
             for b in range(T)] for a in range(T)]


def _split(h, T, r, K):
    """``(n, T·r)`` → ``(h[a][k], P[a][k])`` lists with ``P = h K`` (``K`` an ``r × r`` array)."""
    hs = [[h[..., a * r + k] for k in range(r)] for a in range(T)]
    P = [[entry_sum(hs[a][j] * K[j, k] for j in range(r)) for k in range(r)] for a in range(T)]
    return hs, P


def rank_lora_loss(h, K, tq, H_hat, Y, activation, beta, T):
    """``ℓ = ½‖Y' − σ(Ĥ + h K hᵀ − tq I)‖²_F`` per sample, ``h`` flattened ``(n, T·r)`` (docs/theory.md §7.1).

    With ``K = I`` and ``h = z`` this is the rank-``r`` LoRA loss; with ``K = V'`` and ``z = h V'^{1/2}`` it
    is the loss of the whitened prox.

    Args:
        h: ``(n, T·r)`` fields, token-major (entry ``a·r + k`` is token ``a``, column ``k``).
        K: ``(r, r)`` symmetric metric.
        tq: ``Tr Q'``, the diagonal centring.
        H_hat: ``(n, T, T)`` frozen logits (or their entries).
        Y: ``(n, T, T)`` labels (or their entries).
        activation: ``"softmax"`` or ``"identity"``.
        beta: ``β > 0``.
        T: tokens.

    Returns:
        ``(n,)`` losses.
    """
    r = K.shape[0]
    hs, P = _split(h, T, r, K)
    return logit_loss(_rank_logit_entries(P, hs, tq, H_hat), as_entries(Y), activation, beta)


def rank_lora_derivatives(h, K, tq, H_hat, Y, activation, beta, T):
    """Gradient and Hessian of :func:`rank_lora_loss` in ``h``, and ``∂ℓ/∂Tr Q'`` (closed form).

    With ``G = ∂ℓ/∂H``, ``R[a,c,d] = ∂²ℓ/∂H_ac∂H_ad`` and ``P = h K`` (``∂H_ab/∂h_ck = δ_ac P_bk + P_ak δ_bc``):

        ∂ℓ/∂h_ck = ((G + Gᵀ) P)_ck,
        ∂²ℓ/∂h_ck∂h_dl = δ_cd Σ_bb' P_bk R[c,b,b'] P_b'l + P_cl w_cdk + P_dk w_dcl + Σ_a P_ak R[a,c,d] P_al
                         + (G_cd + G_dc) K_kl,          w_adk = Σ_b R[a,d,b] P_bk.

    At ``r = 1``, ``K = 1`` this is :func:`state_evolution.channel_lora.lora_derivatives` (tested against it
    and against automatic differentiation).

    Args:
        h, K, tq, H_hat, Y, activation, beta, T: as :func:`rank_lora_loss`.

    Returns:
        ``(∇_h ℓ, ∇²_h ℓ, ∂ℓ/∂Tr Q')`` of shapes ``(n, T·r)``, ``(n, T·r, T·r)``, ``(n,)``.
    """
    r = K.shape[0]
    hs, P = _split(h, T, r, K)
    G, R = logit_derivatives(_rank_logit_entries(P, hs, tq, H_hat), as_entries(Y), activation, beta)
    w = [[[entry_sum(R(a, d, b) * P[b][k] for b in range(T)) for k in range(r)] for d in range(T)]
         for a in range(T)]
    Gs = [[G[c][d] + G[d][c] for d in range(T)] for c in range(T)]
    n_f = T * r
    hess = [[None] * n_f for _ in range(n_f)]
    for c in range(T):
        for k in range(r):
            i = c * r + k
            for d in range(T):
                for l in range(r):
                    j = d * r + l
                    if j < i:
                        continue
                    v = P[c][l] * w[c][d][k] + P[d][k] * w[d][c][l] \
                        + entry_sum(P[a][k] * P[a][l] * R(a, c, d) for a in range(T)) + Gs[c][d] * K[k, l]
                    if c == d:
                        v = v + entry_sum(P[b][k] * w[c][b][l] for b in range(T))
                    hess[i][j] = hess[j][i] = v
    grad = jnp.stack([entry_sum(Gs[c][b] * P[b][k] for b in range(T)) for c in range(T) for k in range(r)], -1)
    dq = -entry_sum(G[a][a] for a in range(T))
    return grad, stack_entries(hess), dq


def rank_teacher_logits(H0, Z_star, gamma):
    """``H0 + γ (Z* Z*ᵀ − r* I)`` (``ρ_V = I``): the rank-``r*`` fine-tuning teacher's logits.

    Args:
        H0: ``(n, T, T)`` pre-training teacher logits.
        Z_star: ``(n, T, r*)`` teacher fields.
        gamma: ``γ > 0``.

    Returns:
        ``(n, T, T)`` logits.
    """
    T, rs = Z_star.shape[-2], Z_star.shape[-1]
    return H0 + gamma * (Z_star @ jnp.swapaxes(Z_star, -1, -2) - rs * jnp.eye(T, dtype=H0.dtype))


def psd_sqrt(A, floor=0.0):
    """``(A^{1/2}, A^{-1/2})`` of a symmetric matrix by ``eigh``, eigenvalues clipped at ``floor`` (numpy).

    The inverse root uses the eigenvalues clipped at ``1e-300``: a singular ``A`` gives a huge (finite or
    infinite) inverse, which the callers reject as an invalid iterate.

    Args:
        A: ``(k, k)`` symmetric.
        floor: the smallest eigenvalue kept.

    Returns:
        ``(A^{1/2}, A^{-1/2})``.
    """
    w, E = np.linalg.eigh(0.5 * (np.asarray(A, float) + np.asarray(A, float).T))
    w = np.maximum(w, floor)
    with np.errstate(divide="ignore", over="ignore"):
        inv = 1.0 / np.sqrt(np.maximum(w, 1e-300))
    return (E * np.sqrt(w)) @ E.T, (E * inv) @ E.T


def polar_factor(M):
    """The partial isometry of the polar decomposition ``M = W |M|`` (numpy SVD).

    Args:
        M: ``(r, r*)``.

    Returns:
        ``W`` (``r × r*``); the standard embedding ``[I; 0]`` when ``M = 0``.
    """
    r, rs = M.shape
    if not np.all(np.isfinite(M)) or np.max(np.abs(M)) < 1e-12:
        return np.eye(r, rs)
    P, _, Rt = np.linalg.svd(M, full_matrices=False)
    return P @ Rt


@dataclass(frozen=True)
class FieldLaw:
    """The square roots that build the fields from standard normals at ``(M', Q', V')`` (numpy, host side).

    Attributes:
        Qh: ``Q'^{1/2}``.
        B: ``M'ᵀ Q'^{-1/2}`` (``r* × r``).
        Ls: ``L* = (I − B Bᵀ)^{1/2}``.
        Ls_inv: ``L*^{-1}``.
        S_inv: ``(Q' − M'M'ᵀ)^{-1/2}`` (Stein weight of ``V̂'``).
        s_min: the smallest eigenvalue of ``Q' − M'M'ᵀ`` (``≤ 1e-12``: Stein is replaced by the Hessian form).
        Vh: ``V'^{1/2}``.
        Vh_inv: ``V'^{-1/2}``.
        W: the polar factor of ``M'`` (the teacher start of the prox).
    """

    Qh: np.ndarray
    B: np.ndarray
    Ls: np.ndarray
    Ls_inv: np.ndarray
    S_inv: np.ndarray
    s_min: float
    Vh: np.ndarray
    Vh_inv: np.ndarray
    W: np.ndarray

    @classmethod
    def at(cls, M, Q, V) -> "FieldLaw":
        """The roots at one iterate.

        Args:
            M: ``M'`` (``r × r*``).
            Q: ``Q'`` (``r × r``, positive definite).
            V: ``V'`` (``r × r``, positive definite).

        Returns:
            The :class:`FieldLaw`.
        """
        M, Q, V = (np.asarray(a, float) for a in (M, Q, V))
        Qh, Qh_inv = psd_sqrt(Q)
        B = M.T @ Qh_inv
        Ls, Ls_inv = psd_sqrt(np.eye(M.shape[1]) - B @ B.T)
        C = Q - M @ M.T
        s_min = float(np.min(np.linalg.eigvalsh(0.5 * (C + C.T))))
        _, S_inv = psd_sqrt(C)
        Vh, Vh_inv = psd_sqrt(V)
        return cls(Qh=Qh, B=B, Ls=Ls, Ls_inv=Ls_inv, S_inv=S_inv, s_min=s_min, Vh=Vh, Vh_inv=Vh_inv,
                   W=polar_factor(M))


def _flat(Z):
    return Z.reshape(Z.shape[0], -1)


@partial(jax.jit, static_argnames=("activation", "noise", "max_newton", "stein"))
def _rank_statistics(law, Mp, tq, side, consts, samples, activation, noise, max_newton, stein):
    """Per-sample terms of the rank-r channel; ``law`` the :class:`FieldLaw` arrays, ``side`` whitened."""
    Qh, B, Ls, Ls_inv, S_inv, Vh, Vh_inv, W = law
    gamma, delta_p, beta = consts
    xi0, xi1, noise_draw = samples
    n, T, r = xi0.shape
    omega = xi0 @ Qh
    z_star = xi0 @ B.T + xi1 @ Ls
    H_hat, H0 = from_coordinates(side[0], T), from_coordinates(side[1], T)
    Y = labels_from_draw(rank_teacher_logits(H0, z_star, gamma), noise_draw, delta_p, activation, beta, noise)
    Vm = Vh @ Vh

    def loss(h, d):
        return rank_lora_loss(h, Vm, tq, d[1], d[0], activation, beta, T)

    def derivs(h, d):
        return rank_lora_derivatives(h, Vm, tq, d[1], d[0], activation, beta, T)[:2]

    def prox(centre, data):  # whitened: h = ω V'^{-1/2} + y, z = h V'^{1/2}; starts z = ω and z = z* Wᵀ
        target = data[2] @ W.T  # (solved in chunks of prox_newton.PROX_CHUNK samples)
        starts = (jnp.zeros_like(_flat(centre)), _flat((target - centre) @ Vh_inv))
        y, _, res, it = solve_prox_multistart(_flat(centre @ Vh_inv), 1.0, starts, loss, derivs, max_newton,
                                              data=data)
        return (y.reshape(-1, T, r) @ Vh_inv), res, it  # g = y V'^{-1/2} (z = ω + g V')

    data = (entries(Y), entries(H_hat), z_star)
    if stein:
        both = lambda a, b: jnp.concatenate([a, b], axis=0)  # noqa: E731
        mean = z_star @ Mp.T
        g2, residual, iters = prox(both(omega, 2 * mean - omega), jax.tree_util.tree_map(lambda a: both(a, a), data))
        g, g_r = g2[:n], g2[n:]
        eta = (omega - mean) @ S_inv
        stein_V = -jnp.einsum("nak,nal->nkl", g - g_r, eta) @ S_inv / 2
    else:
        g, residual, iters = prox(omega, data)
    z = omega + g @ Vm
    h = _flat(z @ Vh_inv)
    _, hess_h, dq = rank_lora_derivatives(h, Vm, tq, H_hat, Y, activation, beta, T)
    eye = jnp.eye(T * r, dtype=g.dtype)
    N = solve(eye + hess_h, hess_h).reshape(n, T, r, T, r)  # (I + H̃)⁻¹H̃; −∂g/∂ω = V'^{-1/2} N V'^{-1/2} blocks
    diag_blocks = jnp.einsum("nakal->nkl", N)
    hessian_V = Vh_inv @ diag_blocks @ Vh_inv
    replicon_op = jnp.einsum("nakbl,napbq->nkplq", N, N).reshape(n, r * r, r * r)
    terms = dict(Q=jnp.einsum("nak,nal->nkl", g, g), M=jnp.einsum("nak,nal->nkl", g, xi1) @ Ls_inv,
                 V=stein_V if stein else hessian_V, V_hessian=hessian_V, dq=dq,
                 train=2 * loss(h, data), replicon=replicon_op)
    return terms, residual, iters


@partial(jax.jit, static_argnames=("activation",))
def _rank_test_samples(Qh, B, Ls, tq, pre, consts, samples, activation):
    """Per-sample ``‖σ(Ĥ + ZZᵀ − Tr Q' I) − σ(H0 + γ(Z*Z*ᵀ − r* I))‖²`` and the same with ``U = 0``."""
    m, q, rho0 = pre
    gamma, _, beta = consts
    xi0, xi1, G0, G1 = samples
    T = xi0.shape[-2]
    Z, Z_star = xi0 @ Qh, xi0 @ B.T + xi1 @ Ls
    H_hat_w, H0_w = fresh_side_fields(m, q, rho0, G0, G1)
    H_hat, H0 = from_coordinates(H_hat_w, T), from_coordinates(H0_w, T)
    target = apply_activation(rank_teacher_logits(H0, Z_star, gamma), activation, beta)
    logits = H_hat + Z @ jnp.swapaxes(Z, -1, -2) - tq * jnp.eye(T, dtype=H_hat.dtype)
    d = apply_activation(logits, activation, beta) - target
    d0 = apply_activation(H_hat, activation, beta) - target
    return jnp.sum(d * d, axis=(-1, -2)), jnp.sum(d0 * d0, axis=(-1, -2))


@dataclass(frozen=True)
class RankLoraEvaluation:
    """One evaluation of the rank-r LoRA channel (matrix conjugates; docs/theory.md §7.1).

    Attributes:
        M_hat: ``(r, r*)`` ``M̂' = α' E[gᵀξ1] L*^{-1}``.
        Q_hat: ``(r, r)`` ``Q̂' = α' E[gᵀg]``.
        V_hat: ``(r, r)`` ``V̂'`` (antithetic Stein, symmetrised; the Hessian form where ``Q' − M'M'ᵀ`` is singular).
        V_hat_hessian: ``(r, r)`` ``−α' E Σ_a ∂g_a/∂ω_a`` by implicit differentiation (a diagnostic).
        ridge_shift: ``2α' E[∂ℓ/∂Tr Q']``.
        train_loss: ``(mean, s.e.)`` of the training residual ``‖Y' − σ‖²`` at the prox.
        se: Monte Carlo standard errors (``M_hat``, ``Q_hat``, ``V_hat`` entrywise; ``ridge_shift``).
        prox_residual: the worst per-sample prox residual.
        replicon: the spectral radius of ``α' E Σ_ab (V'J_ab) ⊗ (V'J_ab)`` (``J = ∂g/∂ω``, smooth branch).
        unfinished: proxes whose residual ended above ``prox_newton.UNFINISHED_RESIDUAL``.
        n: proxes solved.
    """

    M_hat: np.ndarray
    Q_hat: np.ndarray
    V_hat: np.ndarray
    V_hat_hessian: np.ndarray
    ridge_shift: float
    train_loss: tuple
    se: dict
    prox_residual: float
    replicon: float = math.nan
    unfinished: int = 0
    n: int = 0


def _mean_se(x, alpha):
    """Entrywise ``α ×`` (mean, s.e.) over the leading sample axis."""
    x = np.asarray(x)
    n = x.shape[0]
    return alpha * x.mean(0), alpha * x.std(0, ddof=1) / math.sqrt(n)


@dataclass(frozen=True)
class RankLoraChannel:
    """Fixed-sample rank-r LoRA channel on a pre-training state ``(m, q, ρ0)`` (docs/theory.md §7.1).

    ``samples = (ξ0 (n,T,r), ξ1 (n,T,r*), G0, G1, noise)``, ``test_samples = (ξ0, ξ1, G0, G1)``; ``ρ_V = I``.
    At ``r = r* = 1`` the samples are those of :class:`~state_evolution.channel_lora.LoraChannel` with the
    same seed (the same Sobol dimensions in the same order).

    Attributes:
        m, q, rho0: the pre-training overlaps.
        rank: ``r``.
        shift_rank: ``r*``.
        alpha_prime, delta_prime, gamma, activation, beta, noise: the fine-tuning setting.
        samples, test_samples: the fixed draws.
        max_newton: Newton steps at most per prox.
    """

    m: float
    q: float
    rho0: float
    rank: int
    shift_rank: int
    alpha_prime: float
    delta_prime: float
    gamma: float
    activation: str
    beta: float
    noise: str
    samples: tuple
    test_samples: tuple
    max_newton: int = 60

    @classmethod
    def create(cls, *, m, q, rho0, T, rank, shift_rank, alpha_prime, delta_prime, gamma, activation, beta, noise,
               n_samples=N_SAMPLES, n_test_samples=N_TEST_SAMPLES, seed=1, max_newton=60,
               sampling="sobol") -> "RankLoraChannel":
        """Fixed samples from ``seed`` (scrambled Sobol by default; the test set uses ``seed + 7919``).

        Args:
            m, q, rho0: pre-training overlaps.
            T: tokens.
            rank: ``r ≥ 1``.
            shift_rank: ``r* ≥ 1``.
            alpha_prime, delta_prime, gamma, activation, beta, noise: the setting.
            n_samples: training samples.
            n_test_samples: test samples.
            seed: seed.
            max_newton: Newton steps at most per prox.
            sampling: ``"sobol"`` or ``"iid"``.

        Returns:
            The channel.

        Raises:
            ValueError: ``rank`` or ``shift_rank`` not a positive integer.
        """
        for name, v in (("rank", rank), ("shift_rank", shift_rank)):
            if int(v) != v or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        r, rs, K = int(rank), int(shift_rank), n_free_entries(T)
        train = gaussian_samples(int(n_samples), [(T, r), (T, rs), (K,), (K,), (T, T)], seed, sampling)
        test = gaussian_samples(int(n_test_samples), [(T, r), (T, rs), (K,), (K,)], seed + TEST_SEED_OFFSET,
                                sampling)
        with float64():
            samples = tuple(jnp.asarray(x, jnp.float64) for x in train)
            test = tuple(jnp.asarray(x, jnp.float64) for x in test)
        return cls(m=float(m), q=float(q), rho0=float(rho0), rank=r, shift_rank=rs, alpha_prime=float(alpha_prime),
                   delta_prime=float(delta_prime), gamma=float(gamma), activation=activation, beta=float(beta),
                   noise=noise, samples=samples, test_samples=test, max_newton=max_newton)

    @property
    def _pre(self):
        return (self.m, self.q, self.rho0)

    @property
    def _consts(self):
        return (self.gamma, self.delta_prime, self.beta)

    def evaluate(self, M, Q, V) -> RankLoraEvaluation:
        """The channel at ``(M', Q', V')`` (``r × r*``, ``r × r``, ``r × r``; docs/theory.md §7.1).

        Args:
            M: ``M'``.
            Q: ``Q' ≻ 0``.
            V: ``V' ≻ 0``.

        Returns:
            The :class:`RankLoraEvaluation`.
        """
        law = FieldLaw.at(M, Q, V)
        stein = law.s_min > 1e-12
        xi0, xi1, G0, G1, noise_draw = self.samples
        with float64():
            side = fresh_side_fields(self.m, self.q, self.rho0, G0, G1)
            arrays = tuple(jnp.asarray(a, jnp.float64) for a in (law.Qh, law.B, law.Ls, law.Ls_inv, law.S_inv,
                                                                 law.Vh, law.Vh_inv, law.W))
            t, res, _ = _rank_statistics(arrays, jnp.asarray(M, jnp.float64), float(np.trace(Q)), side,
                                         self._consts, (xi0, xi1, noise_draw), self.activation, self.noise,
                                         self.max_newton, stein)
        a = self.alpha_prime
        out, se = {}, {}
        for k in ("M", "Q", "V", "V_hessian", "replicon"):
            out[k], se[k] = _mean_se(t[k], a)
        for k in ("V", "V_hessian"):
            out[k] = 0.5 * (out[k] + out[k].T)
        dq = sample_mean_se(t["dq"])
        rep = float(np.max(np.abs(np.linalg.eigvals(out["replicon"]))))
        res = np.asarray(res)
        return RankLoraEvaluation(
            M_hat=out["M"], Q_hat=out["Q"], V_hat=out["V"], V_hat_hessian=out["V_hessian"],
            ridge_shift=2 * a * dq[0], train_loss=sample_mean_se(t["train"]),
            se={"M_hat": se["M"], "Q_hat": se["Q"], "V_hat": se["V"], "ridge_shift": 2 * a * dq[1]},
            prox_residual=float(np.max(res)), replicon=rep,
            unfinished=int(np.sum(res > UNFINISHED_RESIDUAL)), n=int(res.shape[0]))

    def test_errors(self, M, Q) -> dict:
        """``E'`` and ``E'_0`` (mean, s.e.) on fresh samples; they depend on ``(M', Q')`` only through their
        rotation invariants.

        Args:
            M: ``M'`` (``r × r*``).
            Q: ``Q'`` (``r × r``, PSD).

        Returns:
            ``{"test_error": (mean, s.e.), "test_error_baseline": (mean, s.e.)}``.
        """
        law = FieldLaw.at(M, Q, np.eye(self.rank))
        with float64():
            e, e0 = _rank_test_samples(jnp.asarray(law.Qh), jnp.asarray(law.B), jnp.asarray(law.Ls),
                                       float(np.trace(Q)), self._pre, self._consts, self.test_samples,
                                       self.activation)
            return {"test_error": sample_mean_se(e), "test_error_baseline": sample_mean_se(e0)}
