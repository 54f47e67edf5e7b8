"""The rank-r LoRA state evolution (a shift of rank ``r*``) on top of the pre-training fixed point.

Unknowns ``x = (M', Q', V')``: ``r × r*``, symmetric ``r × r``, symmetric ``r × r``. The channel
(:mod:`state_evolution.channel_lora_rank`) gives ``(M̂', Q̂', V̂')`` and the scalar ridge shift; the ridge
prior is closed form (docs/theory.md §7.1), with ``A = λ_eff I + V̂'`` and ``ρ_V = I``:

    λ_eff = λ' + 2α' E[∂ℓ/∂Tr Q'],   M' = A⁻¹ M̂',   Q' = A⁻¹ (M̂' M̂'ᵀ + Q̂') A⁻¹,   V' = A⁻¹.

**Gauge.** The equations are equivariant under ``U → UO`` (``M' → OᵀM'``, ``Q' → OᵀQ'O``, ``V' → OᵀV'O``) and,
because ``ρ_V = I``, under ``V → VO*`` (``M' → M'O*``): fixed points are orbits. The Monte Carlo map is
equivariant only in law (the samples are not rotation invariant), so unchecked the iterate drifts along the
orbit by the sampling noise. Every image is therefore rotated back onto the input's gauge: ``(O, O*)``
maximise the overlap of ``(OᵀM̂O*, OᵀQ'O, OᵀV'O)`` with the input (orthogonal Procrustes, alternated). A fixed
point is then a point whose image is itself up to a rotation; every reported quantity is rotation invariant
(the singular values of ``M'``, the eigenvalues of ``Q'``, ``E'``, the update alignment, the replicon).

At ``r = r* = 1`` the map is the rank-one one of :mod:`state_evolution.finetuning` (tested); the solver of
that module (recalibration, reuse, selection, warm sweeps) stays the reference there.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field

import numpy as np

from solvable_attention.params import FinetuneParams
from solvable_attention.status import Status, raise_if_failed

from .branch_selection import merge_starts, reached_fixed_point, warn_if_unresolved
from .channel_lora_rank import RankLoraChannel, polar_factor
from .finetuning import (BRANCH_CHECK_MAX_ITER, LORA_ACCEPT_TOL, SAME_BRANCH_RTOL, START_RESPONSE_SHRINK,
                         check_lora_tokens, fixed_point_resolution, noise_floor_acceptance, null_within)
from .fixed_point import SAMPLED_ACCEPT_TOL, SAMPLED_TOL, InvalidIterate, MemoizedMap, solve_fixed_point, warn_if_not_converged
from .pretraining import PretrainingSolution
from .sampling import N_SAMPLES, N_TEST_SAMPLES
from .stage_status import stage_status
from .solve_controls import (check_progress, deadline_after, evaluation_progress, flag_unchecked_branches,
                             skipped_by_time_limit)

# The scale of the starts: M' = 0.5 E (E the r × r* embedding), Q' = V' = 0.5 I (the rank-one default start
# (0.5, 0.5, 0.5) at r = r* = 1); the uninformative start has M' = 0.
START_SCALE = 0.5
# Alternations of the two Procrustes problems that put an image on the input's gauge (at most; they stop once
# the rotations change by less than GAUGE_TOL).
GAUGE_SWEEPS = 50
GAUGE_TOL = 1e-12
# Coarse-to-fine starts: each start is first solved on a channel of COARSE_SAMPLES samples (4× cheaper per
# evaluation at the default 2¹⁴), and the full channel's solve starts from that fixed point. Measured (softmax,
# r = 4, r* = 1, λ' = 1, 2¹⁴ samples, one core): 141 evaluations, 371 s from the plain starts; 31 coarse
# evaluations (16 s) then 6 full ones (17 s with the test errors) this way — the same fixed point
# (docs/theory.md §7.1).
COARSE_SAMPLES = 2 ** 12
COARSE_TEST_SAMPLES = 2 ** 10


@dataclass(frozen=True)
class RankLayout:
    """Packing of ``(M', Q', V')`` into one vector: ``M'`` row-major, then the upper triangles of ``Q'``, ``V'``.

    Attributes:
        rank: ``r``.
        shift_rank: ``r*``.
    """

    rank: int
    shift_rank: int

    @property
    def size(self) -> int:
        """The vector's length, ``r r* + r(r + 1)``."""
        r, rs = self.rank, self.shift_rank
        return r * rs + r * (r + 1)

    def pack(self, M, Q, V) -> np.ndarray:
        """``(M', Q', V')`` → vector.

        Args:
            M: ``(r, r*)``.
            Q: ``(r, r)`` symmetric.
            V: ``(r, r)`` symmetric.

        Returns:
            The packed vector.
        """
        iu = np.triu_indices(self.rank)
        return np.concatenate([np.asarray(M, float).ravel(), np.asarray(Q, float)[iu], np.asarray(V, float)[iu]])

    def unpack(self, x):
        """vector → ``(M', Q', V')``.

        Args:
            x: the packed vector.

        Returns:
            ``(M', Q', V')`` with symmetric ``Q'``, ``V'``.
        """
        r, rs = self.rank, self.shift_rank
        x = np.asarray(x, float)
        M = x[:r * rs].reshape(r, rs)
        k = r * (r + 1) // 2
        return M, _symmetric(x[r * rs:r * rs + k], r), _symmetric(x[r * rs + k:], r)


def _symmetric(upper, r):
    S = np.zeros((r, r))
    S[np.triu_indices(r)] = upper
    return S + np.triu(S, 1).T


def rotation_invariants(M, Q) -> dict:
    """The rotation-invariant summaries of ``(M', Q')`` (docs/model.md §6).

    Args:
        M: ``(r, r*)`` ``M'``.
        Q: ``(r, r)`` ``Q'``.

    Returns:
        ``{"MtM": M'ᵀM' (r*×r*), "Q_eigenvalues": descending, "M_singular_values": descending,
        "update_alignment": ‖M'‖²_F/(‖Q'‖_F ‖ρ_V‖_F) with ρ_V = I, "trace_Q": Tr Q'}``.
    """
    M, Q = np.asarray(M, float), np.asarray(Q, float)
    normQ = float(np.linalg.norm(Q))
    return {"MtM": (M.T @ M).tolist(),
            "Q_eigenvalues": sorted(np.linalg.eigvalsh(0.5 * (Q + Q.T)).tolist(), reverse=True),
            "M_singular_values": np.linalg.svd(M, compute_uv=False).tolist(),
            "update_alignment": float(np.sum(M * M) / (normQ * math.sqrt(M.shape[1]))) if normQ > 0 else math.nan,
            "trace_Q": float(np.trace(Q))}


def align_gauge(M1, Q1, V1, M0, Q0, V0):
    """Rotate ``(M1, Q1, V1)`` onto the gauge of ``(M0, Q0, V0)``: ``(OᵀM1O*, OᵀQ1O, OᵀV1O)`` with orthogonal
    ``O`` (``r × r``) and ``O*`` (``r* × r*``) minimising the squared distance to the reference, by alternating
    orthogonal Procrustes steps (linearised in ``O`` for the quadratic terms), from ``O = I`` and from a
    Procrustes solution of the linearised problem; the closer of the two results is returned.

    Args:
        M1, Q1, V1: the image.
        M0, Q0, V0: the reference (the input of the map).

    Returns:
        The rotated ``(M1, Q1, V1)``.
    """
    r, rs = M1.shape
    best, best_d = None, math.inf
    for O in (np.eye(r), _orthogonal_part(M1 @ M0.T + Q1 @ Q0 + V1 @ V0, np.eye(r))):
        Os = _orthogonal_part((O.T @ M1).T @ M0, np.eye(rs))
        for _ in range(GAUGE_SWEEPS):
            A = M1 @ Os @ M0.T + Q1 @ O @ Q0 + V1 @ O @ V0
            O_new = _orthogonal_part(A, O)
            Os_new = _orthogonal_part((O_new.T @ M1).T @ M0, Os)
            change = max(np.max(np.abs(O_new - O)), np.max(np.abs(Os_new - Os)))
            O, Os = O_new, Os_new
            if change < GAUGE_TOL:
                break
        out = (O.T @ M1 @ Os, O.T @ Q1 @ O, O.T @ V1 @ O)
        d = sum(float(np.sum((a - b) ** 2)) for a, b in zip(out, (M0, Q0, V0)))
        if d < best_d:
            best, best_d = out, d
    return best


def _orthogonal_part(A, fallback):
    """The orthogonal polar factor of a square ``A`` (the Procrustes solution); ``fallback`` when ``A ≈ 0``."""
    if not np.all(np.isfinite(A)) or np.max(np.abs(A)) < 1e-14:
        return fallback
    P, _, Rt = np.linalg.svd(A)
    return P @ Rt


@dataclass(frozen=True)
class RankBranch:
    """One fixed point of the rank-r equations from one start (docs/theory.md §7.1, §4.6).

    Attributes:
        start: ``"informative"`` or ``"uninformative"``.
        M_singular_values: singular values of ``M'``.
        Q_eigenvalues: eigenvalues of ``Q'``.
        update_alignment: ``‖M'‖²_F/(‖Q'‖_F √r*)``.
        test_error: ``E'``.
        objective: predicted training objective per sample, ``½ E‖Y' − σ‖² + λ' Tr Q'/(2α')``.
        objective_se: its Monte Carlo s.e.
        replicon: the replicon.
        status: this start's status.
    """

    start: str
    M_singular_values: tuple
    Q_eigenvalues: tuple
    update_alignment: float
    test_error: float
    objective: float
    objective_se: float
    replicon: float
    status: Status

    def to_dict(self) -> dict:
        """The fields as a JSON-ready dictionary.

        Returns:
            ``{field: value}`` (``status`` as its name).
        """
        d = dataclasses.asdict(self)
        d["status"] = self.status.value
        d["M_singular_values"], d["Q_eigenvalues"] = list(self.M_singular_values), list(self.Q_eigenvalues)
        return d


@dataclass(frozen=True, eq=False)
class RankFinetuningSolution:
    """The rank-r LoRA fixed point and its rotation-invariant metrics (docs/theory.md §7.1, docs/model.md §6).

    Attributes:
        params: the fine-tuning setting.
        rank: ``r``.
        shift_rank: ``r*``.
        M: ``(r, r*)`` ``M'`` in the solver's gauge (only its invariants are meaningful).
        Q: ``(r, r)`` ``Q'`` in the same gauge.
        V: ``(r, r)`` ``V'``.
        M_hat, Q_hat, V_hat: the conjugates (same gauge).
        M_singular_values: singular values of ``M'``, descending.
        Q_eigenvalues: eigenvalues of ``Q'``, descending.
        MtM: ``M'ᵀM'`` (``r* × r*``; invariant under ``U → UO``).
        update_alignment: ``⟨ÛÛᵀ, VVᵀ⟩/(‖ÛÛᵀ‖_F ‖VVᵀ‖_F) = ‖M'‖²_F/(‖Q'‖_F √r*)``.
        test_error, test_error_se: ``E'`` and its Monte Carlo s.e.
        test_error_baseline, test_error_baseline_se: ``E'_0``.
        train_loss: mean training residual at the prox.
        lam_eff: ``λ' + 2α' E[∂ℓ/∂Tr Q']``.
        objective: predicted training objective per sample.
        replicon: spectral radius of the transverse (replicon) operator; ``≥ 1``: RS-unstable.
        converged: ``status.successful``.
        status, status_message: the status and what was measured.
        iterations: map evaluations (all starts).
        residual: final relative residual.
        prox_residual: worst per-sample prox residual.
        seconds: wall time.
        branches: the distinct fixed points found (:class:`RankBranch`).
        history: the residuals.
        selection_resolved: ``False`` when another fixed point's objective is within the Monte Carlo error of the
            returned one's (:mod:`state_evolution.branch_selection`).
    """

    params: FinetuneParams
    rank: int
    shift_rank: int
    M: np.ndarray
    Q: np.ndarray
    V: np.ndarray
    M_hat: np.ndarray
    Q_hat: np.ndarray
    V_hat: np.ndarray
    M_singular_values: tuple
    Q_eigenvalues: tuple
    MtM: tuple
    update_alignment: float
    test_error: float
    test_error_se: float
    test_error_baseline: float
    test_error_baseline_se: float
    train_loss: float
    lam_eff: float
    objective: float
    replicon: float
    converged: bool
    status: Status
    status_message: str
    iterations: int
    residual: float
    prox_residual: float
    seconds: float
    branches: tuple = ()
    history: tuple = field(default=(), repr=False)
    selection_resolved: bool = True

    @property
    def alignment(self) -> float:
        """``√(update_alignment)``: at ``r = r* = 1`` the rank-one ``|m'|/√q'``."""
        return math.sqrt(self.update_alignment) if self.update_alignment >= 0 else math.nan

    def to_dict(self) -> dict:
        """JSON-ready fields.

        Returns:
            ``{field: value}``: matrices as nested lists, ``status`` as its name, ``alignment`` added; no ``history``.
        """
        d = {}
        for f in dataclasses.fields(self):
            if f.name == "history":
                continue
            v = getattr(self, f.name)
            d[f.name] = v.tolist() if isinstance(v, np.ndarray) else v
        d["params"], d["status"] = self.params.to_dict(), self.status.value
        d["branches"] = [b.to_dict() for b in self.branches]
        d["M_singular_values"], d["Q_eigenvalues"] = list(self.M_singular_values), list(self.Q_eigenvalues)
        d["alignment"] = self.alignment
        return d


def make_rank_lora_channel(pre: PretrainingSolution, fine: FinetuneParams, rank: int, shift_rank: int, *,
                           n_samples=N_SAMPLES, n_test_samples=N_TEST_SAMPLES, seed=1) -> RankLoraChannel:
    """The rank-r LoRA channel on a pre-training fixed point (docs/theory.md §7.1).

    Args:
        pre: the pre-training fixed point.
        fine: the fine-tuning setting.
        rank: ``r``.
        shift_rank: ``r*``.
        n_samples, n_test_samples, seed: Monte Carlo samples and their seed.

    Returns:
        The :class:`~state_evolution.channel_lora_rank.RankLoraChannel`.
    """
    p = pre.params
    return RankLoraChannel.create(m=pre.m, q=pre.q, rho0=pre.rho0, T=p.T, rank=rank, shift_rank=shift_rank,
                                  alpha_prime=fine.alpha_prime, delta_prime=fine.delta_prime, gamma=fine.gamma,
                                  activation=p.activation, beta=p.beta, noise=p.noise, n_samples=n_samples,
                                  n_test_samples=n_test_samples, seed=seed)


def rank_prior(ev, lam_prime):
    """The ridge prior at matrix conjugates (docs/theory.md §7.1), ``A = (λ' + shift) I + V̂'``.

    Args:
        ev: a :class:`~state_evolution.channel_lora_rank.RankLoraEvaluation` (or anything with ``M_hat``,
            ``Q_hat``, ``V_hat``, ``ridge_shift``).
        lam_prime: ``λ'``.

    Returns:
        ``(M', Q', V') = (A⁻¹M̂', A⁻¹(M̂'M̂'ᵀ + Q̂')A⁻¹, A⁻¹)``.

    Raises:
        InvalidIterate: conjugates not finite or beyond 1e150, or ``A`` not positive definite (the LoRA
            objective is unbounded in some direction).
    """
    parts = [ev.M_hat, ev.Q_hat, ev.V_hat, np.array([ev.ridge_shift])]
    if not all(np.all(np.isfinite(p)) for p in parts) or max(np.max(np.abs(p)) for p in parts) > 1e150:
        raise InvalidIterate("rank-r LoRA conjugates out of range")
    r = ev.V_hat.shape[0]
    A = (lam_prime + ev.ridge_shift) * np.eye(r) + ev.V_hat
    w = np.linalg.eigvalsh(A)
    if w[0] <= 0:
        raise InvalidIterate(f"λ_eff I + V̂' has eigenvalue {w[0]:.3g} <= 0: the LoRA objective is unbounded here")
    Ainv = np.linalg.inv(A)
    Ainv = 0.5 * (Ainv + Ainv.T)
    M = Ainv @ ev.M_hat
    Q = Ainv @ (ev.M_hat @ ev.M_hat.T + ev.Q_hat) @ Ainv
    return M, 0.5 * (Q + Q.T), Ainv


def _relative_noise(ev, out, lam_prime) -> float:
    """First-order relative Monte Carlo error of the prior's output, from the conjugates' s.e. (entrywise,
    taken independent): ``‖se(F)‖/‖F‖`` with ``se(M') ≈ ‖A⁻¹‖ se(M̂')``, ``se(Q') ≈ ‖A⁻¹‖² se(Q̂') +
    2‖Q'‖‖A⁻¹‖ se(A)``, ``se(V') ≈ ‖A⁻¹‖² se(A)``."""
    M, Q, V = out
    a = float(np.linalg.norm(V, 2))
    se_A = math.hypot(float(np.linalg.norm(ev.se["V_hat"])), ev.se["ridge_shift"])
    se_M = a * float(np.linalg.norm(ev.se["M_hat"])) + float(np.linalg.norm(M)) * a * se_A
    se_Q = a * a * float(np.linalg.norm(ev.se["Q_hat"])) + 2 * float(np.linalg.norm(Q)) * a * se_A
    se_V = a * a * se_A
    scale = math.sqrt(sum(float(np.linalg.norm(x)) ** 2 for x in (M, Q, V)))
    return math.sqrt(se_M ** 2 + se_Q ** 2 + se_V ** 2) / max(scale, 1e-300)


def spare_symmetric(M, Q, V, shift_rank):
    """Project ``(M', Q', V')`` onto the symmetric ansatz for the ``r − k`` spare columns (docs/theory.md §7.1):
    the spare block of ``Q'`` and ``V'`` replaced by its mean eigenvalue times ``I``, the cross blocks and the
    spare rows of ``M'`` set to zero (the first ``k`` columns of ``U`` carry the signal). ``k = r*`` is the
    ansatz of an informative solve with ``r > r*``; ``k = 0`` the uninformative subspace ``M' = 0``,
    ``Q' = q'I``, ``V' = v'I``.

    Args:
        M: ``(r, r*)``.
        Q: ``(r, r)``.
        V: ``(r, r)``.
        shift_rank: ``k ≥ 0``, the signal columns (``r ≤ k``: returned unchanged).

    Returns:
        The projected ``(M', Q', V')``.

    Raises:
        ValueError: ``k < 0``.
    """
    r = Q.shape[0]
    k = shift_rank
    if r <= k:
        return M, Q, V
    if k < 0:
        raise ValueError(f"the number of signal columns must be >= 0, got {k}")
    M = M.copy()
    M[k:] = 0.0
    out = []
    for A in (Q, V):
        B = np.zeros_like(A)
        B[:k, :k] = A[:k, :k]
        B[k:, k:] = np.trace(A[k:, k:]) / (r - k) * np.eye(r - k)
        out.append(B)
    return M, out[0], out[1]


def _rank_map(channel, fine, layout, signal_columns=None) -> MemoizedMap:
    """``x ↦ F(x)``: channel, ridge prior, then the image rotated onto the input's gauge and, when
    ``signal_columns`` is an integer ``k``, projected on the symmetric ansatz of :func:`spare_symmetric` with
    ``k`` signal columns (``k = r*``: the spare columns of an informative solve; ``k = 0``: the uninformative
    subspace ``M' = 0``, ``Q' = q'I``, ``V' = v'I``); memoises ``(evaluation, relative Monte Carlo error)``."""

    def evaluate(x):
        M0, Q0, V0 = layout.unpack(x)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            ev = channel.evaluate(M0, Q0, V0)
        out = rank_prior(ev, fine.lam_prime)
        out = align_gauge(*out, M0, Q0, V0)
        if signal_columns is not None:
            out = spare_symmetric(*out, signal_columns)
        return layout.pack(*out), (ev, _relative_noise(ev, out, fine.lam_prime))

    return MemoizedMap(evaluate)


def _project(layout, signal_columns=None):
    """The domain of the iterate: ``V' ≻ 0`` and ``Q' ⪰ M'M'ᵀ`` (``ρ_V = I``), eigenvalues floored at 1e-12 (and
    the symmetric ansatz of :func:`spare_symmetric` with ``signal_columns`` signal columns, when given)."""

    def project(x):
        M, Q, V = layout.unpack(x)
        if signal_columns is not None:
            M, Q, V = spare_symmetric(M, Q, V, signal_columns)
        w, E = np.linalg.eigh(V)
        V = (E * np.maximum(w, 1e-12)) @ E.T
        C = Q - M @ M.T
        w, E = np.linalg.eigh(0.5 * (C + C.T))
        Q = M @ M.T + (E * np.maximum(w, 1e-12)) @ E.T
        return layout.pack(M, Q, V)

    return project


def rank_starts(rank, shift_rank, init=None):
    """The starts ``[(name, (M', Q', V'))]``: ``init`` (if given), the informative ``M' = ½E, Q' = V' = ½I`` and
    the uninformative ``M' = 0`` (``E`` the ``r × r*`` embedding ``[I; 0]``).

    Args:
        rank: ``r``.
        shift_rank: ``r*``.
        init: ``(M', Q', V')`` or ``None``.

    Returns:
        The list of named starts.

    Raises:
        ValueError: an ``init`` of the wrong shapes or not finite.
    """
    starts = []
    if init is not None:
        M, Q, V = (np.asarray(a, float) for a in init)
        if M.shape != (rank, shift_rank) or Q.shape != (rank, rank) or V.shape != (rank, rank) \
                or not all(np.all(np.isfinite(a)) for a in (M, Q, V)):
            raise ValueError(f"init must be finite (M' {rank}x{shift_rank}, Q' {rank}x{rank}, V' {rank}x{rank})")
        starts.append(("given", (M, Q, V)))
    E, I = np.eye(rank, shift_rank), np.eye(rank)
    starts.append(("informative", (START_SCALE * E, START_SCALE * I, START_SCALE * I)))
    starts.append(("uninformative", (0 * E, START_SCALE * I, START_SCALE * I)))
    return starts


def _resolution(sol) -> float:
    """:func:`~state_evolution.finetuning.fixed_point_resolution` of a start that reached a fixed point (``0`` at the
    iteration cap or outside the domain), with the Frobenius norm of ``(M', Q', V')`` (the residual is relative to
    the packed vector, whose norm is smaller by at most √2: a conservative bound)."""
    return fixed_point_resolution(sol.residual, (sol.M, sol.Q, sol.V)) if reached_fixed_point(sol) else 0.0


def _null_within_resolution(sol) -> bool:
    """``U = 0`` within what the solve resolves: the rank-one rule (:func:`~state_evolution.finetuning.null_within`)
    on the largest eigenvalue of ``Q'`` and singular value of ``M'``."""
    return null_within(max(abs(v) for v in sol.Q_eigenvalues), max(abs(v) for v in sol.M_singular_values),
                       _resolution(sol))


def _same_branch(a, b) -> bool:
    """Two one-start rank-r solutions are one fixed point: both ``U = 0`` within what their solves resolve, or the
    spectra of ``M'`` and ``Q'`` equal within ``SAME_BRANCH_RTOL`` of their scale (the rank-one rule on invariants)."""
    if _null_within_resolution(a) and _null_within_resolution(b):
        return True
    sa = np.array(list(a.M_singular_values) + list(a.Q_eigenvalues))
    sb = np.array(list(b.M_singular_values) + list(b.Q_eigenvalues))
    scale = max(float(np.max(np.abs(sa))), float(np.max(np.abs(sb))))
    return bool(np.max(np.abs(sa - sb)) <= SAME_BRANCH_RTOL * scale)


def _check_coarse_samples(value) -> None:
    """Refuse a ``coarse_samples`` that is neither ``None`` nor an integer ``>= 16`` (bools refused)."""
    if value is None:
        return
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value) \
        and int(value) == value and value >= 16
    if not ok:
        raise ValueError(f"coarse_samples must be an integer >= 16 or None, got {value!r}")


def solve_finetuning_rank(pretrain_result: PretrainingSolution, alpha_prime, lam_prime, *, rank=1, shift_rank=1,
                          delta_prime=None, gamma=1.0, init=None, tol=SAMPLED_TOL, accept_tol=LORA_ACCEPT_TOL,
                          max_iter=400, damping=0.5, n_samples=N_SAMPLES, n_test_samples=N_TEST_SAMPLES, seed=1,
                          channel=None, branches=True, symmetric_spare=True, warn=True,
                          throw=False, time_limit=None, progress=False,
                          coarse_samples=COARSE_SAMPLES) -> RankFinetuningSolution:
    """Solve the rank-r LoRA state evolution (docs/theory.md §7.1) on a pre-training fixed point.

    From the informative start (and, with ``branches``, the uninformative one, at most
    ``BRANCH_CHECK_MAX_ITER`` evaluations, iterated within the subspace ``M' = 0``, ``Q' = q'I``, ``V' = v'I``,
    which the map leaves invariant in law: ``z* → −z*`` leaves the labels unchanged, and at ``M' = 0`` every
    rotation of ``U`` is a symmetry) the damped, Anderson-accelerated iteration solves
    ``x = gauge(P(C(x)))``; the returned fixed point is the one with the lowest predicted training objective
    (the estimator's branch; docs/theory.md §4.6), the others are in ``branches``.

    Args:
        pretrain_result: the pre-training fixed point.
        alpha_prime: ``α' > 0``.
        lam_prime: ``λ' ≥ 0`` (finite; ``inf`` is no adaptation: use the rank-one solver).
        rank: ``r ≥ 1``.
        shift_rank: ``r* ≥ 1``.
        delta_prime: ``Δ' ≥ 0`` (default: the pre-training ``Δ``).
        gamma: ``γ > 0``.
        init: starting ``(M', Q', V')``.
        tol, accept_tol, max_iter, damping: as :func:`~state_evolution.finetuning.solve_finetuning`.
        n_samples, n_test_samples, seed: the Monte Carlo samples.
        channel: an existing :class:`~state_evolution.channel_lora_rank.RankLoraChannel` (same setting).
        branches: also solve from the uninformative start.
        symmetric_spare: for ``r > r*``, iterate within the symmetric ansatz of the ``r − r*`` spare columns
            (:func:`spare_symmetric`: isotropic, orthogonal to the signal columns and to ``V``). The ansatz is
            invariant under the map (the reflection of the spare columns is a symmetry); it removes the rotations
            among spare columns of equal norm, which no gauge fixes and along which the sampled map drifts
            (measured, softmax r = 4, r* = 1: 113 evaluations without it). A fixed point that breaks the symmetry
            among the spare columns is not searched for (``False``: the full iteration).
        warn: warn when not converged (``ConvergenceWarning``) or when the branch selection is not resolved
            (``BranchSelectionWarning``).
        throw: raise :class:`~solvable_attention.status.SolveError` when not successful.
        time_limit: seconds all starts together may take (``None``: no limit); when reached, the best iterate
            is returned with ``Status.MAX_ITERATIONS`` (:mod:`state_evolution.solve_controls`).
        progress: show a progress bar over map evaluations with the current residual.
        coarse_samples: solve each start first on a channel with this many samples (its own draws, same seed)
            and start the full solve from that fixed point (``COARSE_SAMPLES``; ``None``, or not fewer than
            ``n_samples``: no coarse stage). The answer is the full channel's fixed point either way; the coarse
            stage only shortens the path to it (a coarse solve that fails leaves the start unchanged).

    Returns:
        The :class:`RankFinetuningSolution` (with its status; not raised).

    Raises:
        ValueError: a parameter out of range, ``lam_prime = inf``, ``T = 1``, a bad ``rank``/``shift_rank``/``init``,
            a ``time_limit`` that is not a positive number, a ``coarse_samples`` that is not a positive integer.
    """
    _check_coarse_samples(coarse_samples)
    fine = FinetuneParams(alpha_prime=alpha_prime, lam_prime=lam_prime,
                          delta_prime=pretrain_result.params.delta if delta_prime is None else delta_prime,
                          gamma=gamma)
    if not fine.adapts:
        raise ValueError("lam_prime must be finite for the rank-r solver (lam_prime=inf is no adaptation)")
    check_lora_tokens(pretrain_result.params.T, fine.lam_prime)
    deadline, progress = deadline_after(time_limit), check_progress(progress)
    t0 = time.perf_counter()
    if channel is None:
        channel = make_rank_lora_channel(pretrain_result, fine, rank, shift_rank, n_samples=n_samples,
                                         n_test_samples=n_test_samples, seed=seed)
    layout = RankLayout(channel.rank, channel.shift_rank)
    maps = {}  # per start kind: (F, domain projection, acceptance), the uninformative one within M' = 0

    def map_for(name, ch=channel):
        k = 0 if name == "uninformative" else (layout.shift_rank if symmetric_spare else None)
        if (k, id(ch)) not in maps:
            F = _rank_map(ch, fine, layout, k)
            maps[k, id(ch)] = (F, _project(layout, k), noise_floor_acceptance(F, accept_tol))
        return maps[k, id(ch)]

    n_full = int(channel.samples[0].shape[0])
    coarse = None
    if coarse_samples is not None and int(coarse_samples) < n_full:
        coarse = make_rank_lora_channel(pretrain_result, fine, channel.rank, channel.shift_rank,
                                        n_samples=int(coarse_samples), n_test_samples=COARSE_TEST_SAMPLES, seed=seed)

    def coarse_start(name, x0, cap):
        """The coarse channel's fixed point from ``x0`` (or ``x0`` itself) and the evaluations spent."""
        if coarse is None:
            return x0, 0
        F, project, accept = map_for(name, coarse)
        try:
            fp = solve_fixed_point(F, x0, tol=tol, max_iter=cap, damping=damping, project=project,
                                   accept_tol=accept if accept_tol > tol else tol, deadline=deadline,
                                   progress=report)
        except InvalidIterate:
            return x0, 0
        return (fp.value if fp.converged else x0), fp.iterations

    starts = rank_starts(channel.rank, channel.shift_rank, init)
    if not branches:
        starts = starts[:1]
    found, error, skipped = [], None, 0
    with evaluation_progress(f"rank-{channel.rank} LoRA state evolution", progress) as report:
        for shrink in START_RESPONSE_SHRINK:
            for k, (name, (M0, Q0, V0)) in enumerate(starts):
                F, project, accept = map_for(name)
                try:
                    cap = max_iter if k == 0 else min(max_iter, BRANCH_CHECK_MAX_ITER)
                    x0, spent = coarse_start(name, layout.pack(M0, Q0, shrink * V0), cap)
                    fp = solve_fixed_point(F, x0, tol=tol, max_iter=cap, damping=damping, project=project,
                                           accept_tol=accept if accept_tol > tol else tol, deadline=deadline,
                                           progress=report, estimate_below=SAMPLED_ACCEPT_TOL)
                    fp = dataclasses.replace(fp, iterations=fp.iterations + spent)
                except InvalidIterate as exc:
                    error = error or exc
                    continue
                if skipped_by_time_limit(fp, found):
                    skipped += 1
                    continue
                found.append(_assemble(fine, channel, F, fp, layout, name, t0))
            if found:
                break
    if not found:
        raise InvalidIterate(f"the rank-{channel.rank} LoRA map cannot be evaluated from any start: {error}")
    result = merge_starts(found, _same_branch, time.perf_counter() - t0)
    result = flag_unchecked_branches(result, skipped)
    if warn:
        warn_if_not_converged(f"rank-{channel.rank} LoRA state evolution", result, tol)
        warn_if_unresolved(f"rank-{channel.rank} LoRA state evolution", result)
    return raise_if_failed(result, "rank-r LoRA state evolution") if throw else result


def _assemble(fine, channel, F, sol, layout, start, t0) -> RankFinetuningSolution:
    """The solution of one start: the evaluation behind ``sol.value``, test errors, invariants, status."""
    M, Q, V = layout.unpack(sol.value)
    behind = F.aux_at(sol.evaluated_at)
    ev = behind[0] if behind is not None else channel.evaluate(M, Q, V)
    errs = channel.test_errors(M, Q)
    inv = rotation_invariants(M, Q)
    objective = 0.5 * ev.train_loss[0] + fine.lam_prime * inv["trace_Q"] / (2 * fine.alpha_prime)
    status, message = stage_status(sol, ev, ev.replicon)
    branch = RankBranch(start=start, M_singular_values=tuple(inv["M_singular_values"]),
                        Q_eigenvalues=tuple(inv["Q_eigenvalues"]), update_alignment=inv["update_alignment"],
                        test_error=errs["test_error"][0], objective=objective, objective_se=0.5 * ev.train_loss[1],
                        replicon=ev.replicon, status=status)
    return RankFinetuningSolution(
        params=fine, rank=layout.rank, shift_rank=layout.shift_rank, M=M, Q=Q, V=V, M_hat=ev.M_hat, Q_hat=ev.Q_hat,
        V_hat=ev.V_hat, M_singular_values=tuple(inv["M_singular_values"]), Q_eigenvalues=tuple(inv["Q_eigenvalues"]),
        MtM=tuple(map(tuple, inv["MtM"])), update_alignment=inv["update_alignment"],
        test_error=errs["test_error"][0], test_error_se=errs["test_error"][1],
        test_error_baseline=errs["test_error_baseline"][0], test_error_baseline_se=errs["test_error_baseline"][1],
        train_loss=ev.train_loss[0], lam_eff=fine.lam_prime + ev.ridge_shift, objective=objective,
        replicon=ev.replicon, converged=status.successful, status=status, status_message=message,
        iterations=sol.iterations, residual=sol.residual, prox_residual=ev.prox_residual,
        seconds=time.perf_counter() - t0, branches=(branch,), history=sol.history)


__all__ = ["solve_finetuning_rank", "spare_symmetric", "RankFinetuningSolution", "RankBranch", "make_rank_lora_channel",
           "rotation_invariants", "align_gauge", "rank_prior", "RankLayout", "polar_factor"]
