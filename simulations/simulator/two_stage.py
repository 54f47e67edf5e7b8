"""``simulate``: both stages of the model trained at finite ``D`` (docs/model.md §2–§4).

One call draws the teachers and data from a seed, pre-trains ``Ŝ`` (nuclear-norm
ERM), adapts a rank-one LoRA ``û`` on fresh (or reused) fine-tuning data, and
measures every metric of docs/model.md §4 exactly at this ``D``. Same seed → same numbers.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np

from solvable_attention.activations import apply_activation
from solvable_attention.runtime import float64
from solvable_attention.data import sample_inputs, sample_labels, sample_teacher
from solvable_attention.metrics import (lora_order_parameters, matrix_overlaps, test_error, update_metrics,
                                       vector_overlaps)
from solvable_attention.params import FinetuneParams, PretrainParams, check_dimension, check_seed, make_params
from solvable_attention.status import Status, raise_if_failed, worst

from .finetune_fit import FINETUNE_METHODS, fit_full_nuclear, fit_full_ridge, fit_lora_rank
from .lora_fit import LORA_GTOL, fit_lora
from .objectives import pretrain_logits_all
from .pretraining_fit import fit_factorized, fit_proximal, relative_stationarity

METHODS = ("proximal", "factorized")

# Independent streams of one seed (jax.random.fold_in tags).
_TEACHER, _PRE_X, _PRE_NOISE, _PRE_INIT, _FT_X, _FT_NOISE, _FT_INIT, _PRE_TEST, _FT_TEST, _REUSE, _SELECT = range(11)


class _AsDict:
    def to_dict(self) -> dict:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}


def _plain(x):
    if isinstance(x, Status):
        return x.value
    if hasattr(x, "to_dict"):
        return x.to_dict()
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    return x


@dataclass(frozen=True)
class PretrainSimulation(_AsDict):
    """Pre-training metrics at finite ``D`` (docs/model.md §4).

    Attributes:
        m: ``m = Tr(Ŝ S0)/D``.
        q: ``q = Tr(Ŝ²)/D``.
        rho0: ``ρ0 = Tr(S0²)/D``.
        mse_S: ``mse_S = ‖Ŝ − S0‖²_F/D``.
        test_error: ``E = E_X‖σ(H(Ŝ)) − σ(H(S0))‖²_F`` on fresh noise-free inputs.
        test_error_se: its Monte Carlo standard error.
        train_loss: ``(1/n) Σ_μ ‖Y_μ − σ(H(Ŝ; X_μ))‖²_F``.
        objective: the ERM objective at ``Ŝ``.
        rank_fraction: ``rank(Ŝ)/D`` (eigenvalues above ``1e-9`` of the largest).
        converged: ``status.successful``: the ERM solver reached its tolerance.
        iterations: its iterations.
        residual: its stationarity residual.
        status: ``converged`` or ``max_iterations`` (:class:`~solvable_attention.status.Status`).
        status_message: residual and iterations.
    """

    m: float
    q: float
    rho0: float
    mse_S: float
    test_error: float
    test_error_se: float
    train_loss: float
    objective: float
    rank_fraction: float
    converged: bool
    iterations: int
    residual: float
    status: Status = Status.CONVERGED
    status_message: str = ""


@dataclass(frozen=True)
class FinetuneSimulation(_AsDict):
    """Fine-tuning metrics at finite ``D`` (docs/model.md §4).

    Attributes:
        m: ``m' = û·v/D``.
        q: ``q' = ‖û‖²/D``.
        rho_v: ``ρ_v = ‖v‖²/D``.
        alignment: ``|m'|/√(q' ρ_v)`` (0 when ``û = 0``).
        test_error: ``E' = E_X‖σ(H(c Ŝ + ûûᵀ/√D)) − σ(H(S1))‖²_F``.
        test_error_se: its Monte Carlo standard error.
        test_error_baseline: ``E'_0`` (``û = 0``, ``c = 1``), on the same fresh test inputs.
        test_error_baseline_se: its Monte Carlo standard error.
        c: the recalibration scalar (1 if not trained).
        objective: the LoRA objective at ``û`` (``nan`` at ``λ' = ∞``).
        train_loss: ``(1/n') Σ_ν ‖Y'_ν − σ(H(ĉŜ + ûûᵀ/√D; X'_ν))‖²_F`` at ``û`` (comparable with the
            theory's ``E‖Y' − σ‖²`` at the prox; ``nan`` at ``λ' = ∞``).
        converged: ``status.successful``: the LoRA fit reached its tolerance.
        iterations: its iterations.
        status: ``converged`` or ``max_iterations`` (:class:`~solvable_attention.status.Status`).
        status_message: gradient norm and iterations.
        finetune: the fine-tuning method, ``"lora"``, ``"full_nuclear"`` or ``"full_ridge"`` (docs/model.md §6).
        rank: the LoRA rank ``r`` (``0`` for full fine-tuning).
        shift_rank: the teacher shift's rank ``r*``.
        update_alignment: ``⟨Δ̂, VVᵀ⟩_F/(‖Δ̂‖_F‖VVᵀ‖_F)`` (for ``r = r* = 1``: ``alignment²``; 0 for ``Δ̂ = 0``).
        update_rank: the rank of ``Δ̂`` (eigenvalues above ``1e-6`` of the largest).
        update_norm: ``‖Δ̂‖_F/√D``.
        order_parameters: rank ``r > 1``: ``{"MtM", "Q_eigenvalues", "rho_V"}``, the rotation-invariant forms of
            ``M' = ÛᵀV/D`` and ``Q' = ÛᵀÛ/D`` (:func:`~solvable_attention.metrics.lora_order_parameters`);
            otherwise ``None``. For ``r > 1`` ``m`` and ``alignment`` (rank-one quantities) are NaN and ``q`` is
            ``Tr Q'``; for full fine-tuning all three are NaN (``update_norm`` measures the update).
    """

    m: float
    q: float
    rho_v: float
    alignment: float
    test_error: float
    test_error_se: float
    test_error_baseline: float
    test_error_baseline_se: float
    c: float
    objective: float
    train_loss: float
    converged: bool
    iterations: int
    status: Status = Status.CONVERGED
    status_message: str = ""
    finetune: str = "lora"
    rank: int = 1
    shift_rank: int = 1
    update_alignment: float = math.nan
    update_rank: int = 0
    update_norm: float = 0.0
    order_parameters: dict | None = None


@dataclass(frozen=True)
class SimulationResult(_AsDict):
    """Outcome of :func:`simulate`: settings, ``D``, seed, both stages' metrics and timings.

    Attributes:
        D: the embedding dimension.
        seed: the seed of every random stream.
        method: the pre-training minimiser, ``"proximal"`` or ``"factorized"``.
        pretrain_params: the validated :class:`~solvable_attention.params.PretrainParams`.
        finetune_params: the validated :class:`~solvable_attention.params.FinetuneParams`.
        pretrain: the :class:`PretrainSimulation` metrics.
        finetune: the :class:`FinetuneSimulation` metrics.
        timings: wall-clock seconds per phase (``data``, ``pretrain``, ``pretrain_metrics``, ``finetune``,
            ``finetune_metrics``).
    """

    D: int
    seed: int
    method: str
    pretrain_params: PretrainParams
    finetune_params: FinetuneParams
    pretrain: PretrainSimulation
    finetune: FinetuneSimulation
    timings: dict = field(default_factory=dict)

    @property
    def status(self) -> Status:
        """The more severe of the two stages' statuses."""
        return worst(self.pretrain.status, self.finetune.status)

    @property
    def converged(self) -> bool:
        """Both stages succeeded (``status.successful``)."""
        return self.status.successful

    @property
    def status_message(self) -> str:
        """Both stages' status messages."""
        return f"pre-training: {self.pretrain.status_message}; fine-tuning: {self.finetune.status_message}"


def simulate(D, alpha, alpha_prime, delta, lam, *, seed=0, lam_prime=1.0, T=3, beta=1.0, kappa0=1.0,
             kappa=1.0, gamma=1.0, activation="softmax", delta_prime=None, method="proximal",
             noise="logits", reuse=False, recalibrate=False, n_test=20000, x64=True,
             pretrain_tol=1e-7, chunk=4096, progress=None, max_bytes=None, throw=False, rank=1, shift_rank=1,
             finetune="lora") -> SimulationResult:
    """Train both stages at dimension ``D`` and measure every metric of docs/model.md §4.

    Pre-training: ``Ŝ = argmin_{S ⪰ 0, rank S ≤ κD} (1/(2D)) Σ_μ ‖Y_μ − σ(H(S; X_μ))‖²_F + λ Tr S``
    (docs/model.md §2); fine-tuning: rank-one LoRA ``Ŝ + û ûᵀ/√D`` with ridge ``λ'`` (docs/model.md §3).
    The parameters are those of docs/model.md §5.

    Args:
        D: embedding dimension, an integer ``≥ 2``.
        alpha: ``α > 0``, pre-training samples per ``D²`` (``n = round(α D²)``).
        alpha_prime: ``α' > 0``, fine-tuning samples per ``D`` (``n' = round(α' D)``).
        delta: ``Δ ≥ 0``, pre-training label noise.
        lam: ``λ ≥ 0``, nuclear-norm strength of pre-training.
        seed: seed of every random stream (teacher, data, noise, initialisations, test inputs).
        lam_prime: ``λ' ≥ 0``, LoRA ridge (``inf``: no adaptation).
        T: tokens (``≥ 1``; ``≥ 2`` with softmax).
        beta: ``β > 0``, inverse temperature.
        kappa0: ``κ0 > 0``, teacher width ratio.
        kappa: ``κ > 0``, student width ratio (``rank Ŝ ≤ round(κ D)``).
        gamma: ``γ > 0``, strength of the new direction, ``S1 = S0 + γ v vᵀ/√D``.
        activation: ``"softmax"`` or ``"identity"``.
        delta_prime: ``Δ' ≥ 0``, fine-tuning label noise (default ``Δ``).
        method: ``"proximal"`` (FISTA on ``S``, the reference) or ``"factorized"`` (L-BFGS on ``W``).
        noise: ``"logits"`` or ``"output"``.
        reuse: fine-tuning inputs taken from the pre-training set.
        recalibrate: train ``c`` in ``c Ŝ + u uᵀ/√D``.
        n_test: fresh test samples for each test error (``≥ 1``).
        x64: compute in float64 (default, for validation).
        pretrain_tol: relative tolerance of the FISTA pre-training.
        chunk: samples per batch (memory only).
        progress: optional callback ``(iteration, objective, residual)`` of pre-training.

    Returns:
        The :class:`SimulationResult`.

    Raises:
        ValueError: ``D`` not an integer ``≥ 2``, ``method`` not in :data:`METHODS`, ``n_test < 1``, or a
            parameter out of its range (:func:`~solvable_attention.params.make_params`: ``alpha``,
            ``alpha_prime``, ``beta``, ``kappa0``, ``kappa``, ``gamma`` ``> 0``; ``delta``, ``delta_prime``,
            ``lam``, ``lam_prime`` ``≥ 0``; ``T`` an integer ``≥ 1``, ``≥ 2`` with softmax; ``activation``,
            ``noise`` one of the choices), or ``reuse=True`` with more fine-tuning samples than pre-training ones.
    """
    return simulate_variants(D, alpha, alpha_prime, delta, lam, variants=[dict(lam_prime=lam_prime,
                             reuse=reuse, recalibrate=recalibrate, rank=rank, finetune=finetune)], seed=seed, T=T,
                             beta=beta, kappa0=kappa0, kappa=kappa, gamma=gamma, activation=activation,
                             delta_prime=delta_prime, method=method, noise=noise, n_test=n_test, x64=x64,
                             pretrain_tol=pretrain_tol, chunk=chunk, progress=progress, max_bytes=max_bytes,
                             throw=throw, shift_rank=shift_rank)[0]


def simulate_variants(D, alpha, alpha_prime, delta, lam, *, variants, seed=0, T=3, beta=1.0, kappa0=1.0,
                      kappa=1.0, gamma=1.0, activation="softmax", delta_prime=None, method="proximal",
                      noise="logits", n_test=20000, x64=True, pretrain_tol=1e-7, chunk=4096,
                      progress=None, max_bytes=None, throw=False, shift_rank=1) -> list[SimulationResult]:
    """One pre-training, several fine-tunings of it: ``variants`` is a list of dicts with keys among
    ``lam_prime, reuse, recalibrate, select, rank, finetune`` (defaults 1.0, False, False, None, 1, "lora"). Same data, teacher and
    test inputs for every variant (common random numbers), so differences between variants are sharp.

    ``select=dict(strategy=..., pool_ratio=...)``: active fine-tuning. A pool of ``round(pool_ratio·D)``
    candidates (fresh inputs, or with ``reuse`` the first ones of the same random permutation of the
    pre-training set) is scored by the strategy (:func:`solvable_attention.active.select`; label-based
    strategies see the pre-training labels) and the ``n' = round(α'D)`` best are labelled by the
    fine-tuning teacher with fresh noise. ``strategy="random", pool_ratio=α'`` is the plain variant.

    Args:
        D: embedding dimension, an integer ``≥ 2``.
        alpha: ``α > 0``, pre-training samples per ``D²`` (``n = round(α D²)``).
        alpha_prime: ``α' > 0``, fine-tuning samples per ``D`` (``n' = round(α' D)``).
        delta: ``Δ ≥ 0``, pre-training label noise.
        lam: ``λ ≥ 0``, nuclear-norm strength of pre-training.
        variants: list of dicts with keys among ``lam_prime, reuse, recalibrate, select``.
        seed: seed of every random stream.
        T: tokens (``≥ 1``; ``≥ 2`` with softmax).
        beta: ``β > 0``, inverse temperature.
        kappa0: ``κ0 > 0``, teacher width ratio.
        kappa: ``κ > 0``, student width ratio (``rank Ŝ ≤ round(κ D)``).
        gamma: ``γ > 0``, strength of the new direction, ``S1 = S0 + γ v vᵀ/√D``.
        activation: ``"softmax"`` or ``"identity"``.
        delta_prime: ``Δ' ≥ 0``, fine-tuning label noise (default ``Δ``).
        method: ``"proximal"`` (FISTA on ``S``, the reference) or ``"factorized"`` (L-BFGS on ``W``).
        noise: ``"logits"`` or ``"output"``.
        n_test: fresh test samples for each test error (``≥ 1``).
        x64: compute in float64 (default, for validation).
        pretrain_tol: relative tolerance of the FISTA pre-training.
        chunk: samples per batch (memory only).
        progress: optional callback ``(iteration, objective, residual)`` of pre-training.
        max_bytes: refuse a simulation whose estimated memory exceeds this (default: the memory available).
        throw: raise :class:`~solvable_attention.status.SolveError` when a stage did not succeed.
        shift_rank: ``r* ≥ 1``, the rank of the teacher shift ``S1 = S0 + γ V Vᵀ/√D`` (docs/model.md §6).

    Returns:
        One :class:`SimulationResult` per variant, in order.

    Raises:
        ValueError: ``D`` not an integer ``≥ 2``, ``method`` not in :data:`METHODS`, ``n_test < 1``, or a
            parameter out of its range (:func:`~solvable_attention.params.make_params`: ``alpha``,
            ``alpha_prime``, ``beta``, ``kappa0``, ``kappa``, ``gamma`` ``> 0``; ``delta``, ``delta_prime``,
            ``lam``, ``lam_prime`` ``≥ 0``; ``T`` an integer ``≥ 1``, ``≥ 2`` with softmax; ``activation``,
            ``noise`` one of the choices); a variant with another key; a ``select`` that is not
            ``dict(strategy=..., pool_ratio=...)``, with an unknown strategy, or with ``pool_ratio`` not finite
            or below ``alpha_prime``; or ``reuse=True`` with a pool larger than the pre-training set.
    """
    D = check_dimension(D)
    seed = check_seed(seed)
    if not isinstance(x64, (bool, np.bool_)):
        raise ValueError(f"x64 must be True or False, got {x64!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if int(n_test) < 1:
        raise ValueError(f"n_test must be a positive integer, got {n_test!r}")
    settings = []
    for v in variants:
        unknown = set(v) - {"lam_prime", "reuse", "recalibrate", "select", "rank", "finetune"}
        if unknown:
            raise ValueError("variants may only set lam_prime, reuse, recalibrate, select, rank, finetune; "
                             f"got {sorted(unknown)}")
        v = dict(v)
        sel = _check_select(v.pop("select", None), D, alpha_prime)
        update = check_update(v.pop("rank", 1), v.pop("finetune", "lora"), v.get("recalibrate", False),
                               v.get("lam_prime", 1.0))
        settings.append((*make_params(alpha, alpha_prime, delta, lam, T=T, beta=beta, kappa0=kappa0, kappa=kappa,
                                      gamma=gamma, activation=activation, delta_prime=delta_prime, noise=noise,
                                      **v), sel, update))
    shift_rank = _check_positive_int(shift_rank, "shift_rank")
    check_memory(D, [st[:3] for st in settings], x64, max_bytes)
    with float64(bool(x64)):
        results = _simulate(D, settings, seed, method, int(n_test), pretrain_tol, chunk, progress, shift_rank)
    return [raise_if_failed(r, "simulation") for r in results] if throw else results


# What the inputs cost is multiplied by this factor for the arrays derived from them during training
# (logits, residuals, gradients, L-BFGS history): a bound measured loosely, meant to catch requests that are
# orders of magnitude too large before they start, not to predict the peak to the byte.
MEMORY_OVERHEAD = 4.0


def available_memory() -> int:
    """Bytes of memory available to a new allocation (``MemAvailable`` of ``/proc/meminfo``; the physical
    memory where that is unreadable).

    Returns:
        The number of bytes.
    """
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import os

    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_memory(D, settings, x64, max_bytes=None) -> int:
    """Refuse a simulation whose data would not fit in memory, before anything is allocated.

    The estimate is ``MEMORY_OVERHEAD × itemsize × (n + n'_pool)·T·(D + T)``: the pre-training inputs and
    labels (``n = round(α D²)``) and the largest fine-tuning pool (``n'_pool = round(α_pool D)``).

    Args:
        D: the dimension.
        settings: the validated ``(PretrainParams, FinetuneParams, select)`` of each variant.
        x64: float64 (8 bytes per number) or float32 (4).
        max_bytes: the limit (default :func:`available_memory`).

    Returns:
        The estimated bytes.

    Raises:
        ValueError: the estimate exceeds ``max_bytes``; the message gives ``n``, ``n'`` and the bytes.
    """
    pre = settings[0][0]
    n = max(1, round(pre.alpha * D * D))
    n_ft = max(max(1, round(f.alpha_prime * D)) if sel is None else sel[1] for _, f, sel in settings)
    itemsize = 8 if x64 else 4
    need = int(MEMORY_OVERHEAD * itemsize * (n + n_ft) * pre.T * (D + pre.T))
    limit = available_memory() if max_bytes is None else int(max_bytes)
    if need > limit:
        raise ValueError(f"this simulation needs about {need / 2 ** 30:.3g} GiB (n = {n} pre-training samples, "
                         f"n' = {n_ft} fine-tuning samples of T = {pre.T} tokens in D = {D}), more than the "
                         f"{limit / 2 ** 30:.3g} GiB available: reduce alpha, alpha_prime or D")
    return need


def _check_positive_int(x, name):
    if isinstance(x, bool) or not isinstance(x, (int, np.integer)) or x < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {x!r}")
    return int(x)


def check_update(rank, finetune, recalibrate, lam_prime):
    """Validate a variant's fine-tuning method and rank (docs/model.md §6).

    Args:
        rank: the LoRA rank ``r``, an integer ``≥ 1`` (``1`` for full fine-tuning).
        finetune: one of :data:`~.finetune_fit.FINETUNE_METHODS`.
        recalibrate: whether ``c`` is trained (rank-one LoRA only).
        lam_prime: the fine-tuning penalty (``> 0`` for ``full_ridge``).

    Returns:
        ``(finetune, rank)``.

    Raises:
        ValueError: any of the above violated, naming the parameter.
    """
    if finetune == "full_ridge" and not (isinstance(lam_prime, (int, float)) and 0 < lam_prime):
        raise ValueError(f"full_ridge needs lam_prime > 0 (the ridge λ'_F; inf: no adaptation), got {lam_prime!r}")
    if finetune not in FINETUNE_METHODS:
        raise ValueError(f"finetune must be one of {FINETUNE_METHODS}, got {finetune!r}")
    rank = _check_positive_int(rank, "rank")
    if finetune != "lora" and rank != 1:
        raise ValueError(f"rank applies to finetune='lora' only (full fine-tuning has no rank), got rank={rank}")
    if recalibrate and (finetune != "lora" or rank != 1):
        raise ValueError("recalibrate=True is implemented for the rank-one LoRA only")
    return finetune, rank


def _check_select(sel, D, alpha_prime):
    """Validated ``(strategy, n_pool)`` of a ``select`` variant key, or ``None``."""
    if sel is None:
        return None
    from solvable_attention.active import get_strategy

    if not isinstance(sel, dict) or set(sel) - {"strategy", "pool_ratio"}:
        raise ValueError(f"select must be dict(strategy=..., pool_ratio=...), got {sel!r}")
    get_strategy(sel.get("strategy", "random"))
    pr = float(sel.get("pool_ratio", alpha_prime))
    if not (math.isfinite(pr) and pr >= alpha_prime):
        raise ValueError(f"select pool_ratio must be finite and >= alpha_prime = {alpha_prime}, got {pr!r}")
    return sel.get("strategy", "random"), max(1, int(round(pr * D)))


def _finetune_inputs(key_of, fine, sel, X, Y, S_hat, pre, D, dtype):
    """The ``n'`` fine-tuning inputs of a variant: fresh, reused, or actively selected from a pool."""
    from solvable_attention.active import select

    n_ft, n = max(1, int(round(fine.alpha_prime * D))), X.shape[0]
    n_pool = n_ft if sel is None else sel[1]
    if fine.reuse:
        if n_pool > n:
            raise ValueError(f"reuse=True needs a pool of {n_pool} <= n = {n} pre-training inputs (α_pool·D <= α·D²)")
        pool = jax.random.permutation(key_of(_REUSE), n)[:n_pool]
        pool_X, pool_Y = X[pool], Y[pool]
    else:
        pool_X, pool_Y = sample_inputs(key_of(_FT_X), n_pool, pre.T, D, dtype), None
    if sel is None:
        return pool_X
    idx = select(pool_X, n_ft, sel[0], S_hat=S_hat, pool_Y=pool_Y, key=key_of(_SELECT),
                 activation=pre.activation, beta=pre.beta)
    return pool_X[np.sort(idx)]


# A relative tolerance cannot be met below the round-off of the dtype: the stopping tolerances are raised to at
# least this many machine epsilons. Measured floor of FISTA's relative prox-gradient residual in float32 (identity,
# D = 24, α = 0.5): between 3e-5 (unreachable in 5000 iterations) and 1e-4 (reached in 21); 1000 eps = 1.2e-4.
# In float64 it is 2.2e-13, far below the defaults (1e-7, 1e-8), which are therefore unchanged.
TOL_EPS_FACTOR = 1000


def dtype_tolerance(tol: float, dtype) -> float:
    """``max(tol, TOL_EPS_FACTOR · eps(dtype))``: a relative tolerance reachable in ``dtype``.

    Args:
        tol: the requested relative tolerance.
        dtype: the floating-point type of the computation.

    Returns:
        The tolerance used.
    """
    return max(float(tol), TOL_EPS_FACTOR * float(jnp.finfo(dtype).eps))


def _simulate(D, settings, seed, method, n_test, tol, chunk, progress, shift_rank=1):
    pre = settings[0][0]
    key = jax.random.PRNGKey(seed)
    k = lambda tag: jax.random.fold_in(key, tag)  # noqa: E731
    dtype = jnp.result_type(float)
    tol = dtype_tolerance(tol, dtype)
    timings = {}
    t0 = time.perf_counter()
    teacher = sample_teacher(k(_TEACHER), D, pre.kappa0, settings[0][1].gamma, dtype, shift_rank=shift_rank)
    n = max(1, int(round(pre.alpha * D * D)))
    X = sample_inputs(k(_PRE_X), n, pre.T, D, dtype)
    Y = sample_labels(k(_PRE_NOISE), teacher.S0, X, pre.delta, pre.activation, pre.beta, pre.noise)
    timings["data"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    if method == "proximal":
        S_hat, info = fit_proximal(X, Y, lam=pre.lam, activation=pre.activation, beta=pre.beta,
                                   kappa=pre.kappa, chunk=chunk, tol=tol, progress=progress)
    else:
        S_hat, _, info = fit_factorized(X, Y, k(_PRE_INIT), lam=pre.lam, activation=pre.activation,
                                        beta=pre.beta, kappa=pre.kappa, chunk=chunk)
    S_hat.block_until_ready()
    certificate = relative_stationarity(S_hat, X, Y, lam=pre.lam, activation=pre.activation, beta=pre.beta,
                                        kappa=pre.kappa, chunk=chunk)
    timings["pretrain"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    pre_result = _pretrain_metrics(S_hat, teacher, X, Y, pre, info, k(_PRE_TEST), n_test, certificate, tol)
    timings["pretrain_metrics"] = time.perf_counter() - t0

    results = []
    for pre_v, fine, sel, (finetune, rank) in settings:
        t_ft = dict(timings)
        t0 = time.perf_counter()
        Xf = _finetune_inputs(k, fine, sel, X, Y, S_hat, pre, D, dtype)
        Yf = sample_labels(k(_FT_NOISE), teacher.S1, Xf, fine.delta_prime, pre.activation, pre.beta, pre.noise)
        H_hat = pretrain_logits_all(S_hat, Xf)
        gtol = dtype_tolerance(LORA_GTOL, dtype)
        if finetune == "lora" and rank == 1:  # the rank-one LoRA of docs/model.md §3
            fit = fit_lora(H_hat, Xf, Yf, k(_FT_INIT), lam_prime=fine.lam_prime, activation=pre.activation,
                           beta=pre.beta, recalibrate=fine.recalibrate, gtol=gtol)
        else:
            fit = _fit_update(finetune, rank, H_hat, Xf, Yf, k(_FT_INIT), fine, pre, gtol, tol)
        t_ft["finetune"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        if finetune == "lora" and rank == 1:
            ft_result = _finetune_metrics(S_hat, teacher, fit, pre, fine, Xf.shape[0], k(_FT_TEST), n_test)
        else:
            ft_result = _update_metrics(S_hat, teacher, fit, pre, fine, finetune, rank, k(_FT_TEST), n_test)
        t_ft["finetune_metrics"] = time.perf_counter() - t0
        results.append(SimulationResult(D=D, seed=seed, method=method, pretrain_params=pre_v, finetune_params=fine,
                                        pretrain=pre_result, finetune=ft_result, timings=t_ft))
    return results


def _pretrain_metrics(S_hat, teacher, X, Y, pre, info, key, n_test, certificate, tol) -> PretrainSimulation:
    D = S_hat.shape[0]
    ov = matrix_overlaps(S_hat, teacher.S0)
    E, E_se = test_error(key, S_hat, teacher.S0, T=pre.T, activation=pre.activation, beta=pre.beta,
                         n_test=n_test)
    residuals = [Y[i:i + 8192] - apply_activation(pretrain_logits_all(S_hat, X[i:i + 8192]),
                                                  pre.activation, pre.beta)
                 for i in range(0, X.shape[0], 8192)]
    train_loss = float(sum(jnp.sum(r * r) for r in residuals) / X.shape[0])
    eig = np.linalg.eigvalsh(np.asarray(S_hat))
    rank = int(np.sum(eig > 1e-9 * max(eig.max(), 1e-300)))
    status, message = _pretrain_status(info, certificate, tol, pre.activation)
    return PretrainSimulation(**ov, test_error=E, test_error_se=E_se, train_loss=train_loss,
                              objective=info.objective, rank_fraction=rank / D,
                              converged=status.successful, iterations=info.iterations,
                              residual=info.residual, status=status, status_message=message)


# A pre-training solution whose relative prox-gradient residual in S (the quantity FISTA's stopping rule bounds)
# exceeds this many times the tolerance is not a stationary point of the problem in S: for the factorised method
# a spurious critical point of the factorisation.
CERTIFICATE_FACTOR = 10.0


def _pretrain_status(info, certificate, tol, activation):
    """The status of the pre-training fit and its message: the solver's own convergence, then the certificate
    in ``S`` (:func:`~simulations.simulator.pretraining_fit.relative_stationarity`)."""
    message = (f"solver residual {info.residual:.3g} after {info.iterations} iterations; relative prox-gradient "
               f"residual in S {certificate:.3g}")
    if not info.converged:
        return Status.MAX_ITERATIONS, message
    if certificate > CERTIFICATE_FACTOR * tol:
        return Status.NOT_GLOBAL, message + " (not a stationary point of the problem in S)"
    if activation != "identity":  # the loss is not convex in S: stationarity is a local certificate only
        message += " (a stationary point; the softmax problem is not convex in S, so not certified global)"
    return Status.CONVERGED, message


def _lora_train_loss(objective, lam_prime, q, D, n_ft) -> float:
    """``(1/n') Σ_ν ‖Y'_ν − σ‖²_F = (2 L' − λ' ‖û‖²)/n'`` from the objective ``L'`` and ``q = ‖û‖²/D``
    (``nan`` for ``λ' = inf``, where nothing is fitted)."""
    return (2 * objective - lam_prime * q * D) / n_ft if math.isfinite(lam_prime) else math.nan


def _finetune_metrics(S_hat, teacher, fit, pre, fine, n_ft, key, n_test) -> FinetuneSimulation:
    D = S_hat.shape[0]
    ov = vector_overlaps(fit.u, teacher.v)
    S_ft = fit.c * S_hat + jnp.outer(fit.u, fit.u) / jnp.sqrt(D)
    S1 = teacher.S1
    kw = dict(T=pre.T, activation=pre.activation, beta=pre.beta, n_test=n_test)
    E0, E0_se = test_error(key, S_hat, S1, **kw)
    if math.isnan(fit.objective):  # lam_prime = inf: no adaptation, E' = E'_0 exactly
        E, E_se = E0, E0_se
    else:
        E, E_se = test_error(key, S_ft, S1, **kw)
    um = update_metrics(jnp.outer(fit.u, fit.u) / jnp.sqrt(D), teacher.V)
    return FinetuneSimulation(**ov, test_error=E, test_error_se=E_se, test_error_baseline=E0,
                              test_error_baseline_se=E0_se, c=fit.c, objective=fit.objective,
                              shift_rank=teacher.shift_rank, **um,
                              train_loss=_lora_train_loss(fit.objective, fine.lam_prime, ov["q"], D, n_ft),
                              converged=fit.converged, iterations=fit.iterations,
                              status=Status.CONVERGED if fit.converged else Status.MAX_ITERATIONS,
                              status_message=f"gradient norm {fit.grad_norm:.3g} after {fit.iterations} iterations"
                              if math.isfinite(fit.objective) else "lam_prime = inf: no adaptation (û = 0)")


def _fit_update(finetune, rank, H_hat, Xf, Yf, key, fine, pre, gtol, tol):
    """Rank-``r`` LoRA or full fine-tuning (:mod:`.finetune_fit`); ``None`` for ``λ' = ∞`` (no adaptation)."""
    if math.isinf(fine.lam_prime):
        return None
    kw = dict(lam_prime=fine.lam_prime, activation=pre.activation, beta=pre.beta)
    if finetune == "lora":
        return fit_lora_rank(H_hat, Xf, Yf, key, rank=rank, gtol=gtol, **kw)
    if finetune == "full_nuclear":
        return fit_full_nuclear(H_hat, Xf, Yf, tol=tol, **kw)
    return fit_full_ridge(H_hat, Xf, Yf, gtol=gtol, **kw)


def _update_metrics(S_hat, teacher, fit, pre, fine, finetune, rank, key, n_test) -> FinetuneSimulation:
    """The metrics of a rank-``r`` LoRA or full fine-tuning update (docs/model.md §6)."""
    D = S_hat.shape[0]
    kw = dict(T=pre.T, activation=pre.activation, beta=pre.beta, n_test=n_test)
    E0, E0_se = test_error(key, S_hat, teacher.S1, **kw)
    rho_v = float(teacher.v @ teacher.v / D)
    nan = math.nan
    if fit is None:  # λ' = ∞: no adaptation
        return FinetuneSimulation(m=nan, q=0.0, rho_v=rho_v, alignment=nan, test_error=E0, test_error_se=E0_se,
                                  test_error_baseline=E0, test_error_baseline_se=E0_se, c=1.0, objective=nan,
                                  train_loss=nan, converged=True, iterations=0, finetune=finetune,
                                  rank=rank if finetune == "lora" else 0, shift_rank=teacher.shift_rank,
                                  update_alignment=0.0, status_message="lam_prime = inf: no adaptation (Δ̂ = 0)")
    E, E_se = test_error(key, S_hat + fit.Delta, teacher.S1, **kw)
    um = update_metrics(fit.Delta, teacher.V)
    order = lora_order_parameters(fit.U, teacher.V) if fit.U is not None else None
    penalty = (fine.lam_prime * float(jnp.sum(fit.U * fit.U)) if fit.U is not None else
               fine.lam_prime * np.sqrt(D) * float(jnp.trace(fit.Delta)) if finetune == "full_nuclear" else
               fine.lam_prime * float(jnp.sum(fit.Delta * fit.Delta)))
    n_ft = max(1, int(round(fine.alpha_prime * D)))
    status = Status.CONVERGED if fit.converged else Status.MAX_ITERATIONS
    return FinetuneSimulation(m=nan, q=float(jnp.sum(fit.U * fit.U)) / D if fit.U is not None else nan, rho_v=rho_v, alignment=nan, test_error=E,
                              test_error_se=E_se, test_error_baseline=E0, test_error_baseline_se=E0_se, c=1.0,
                              objective=fit.objective, train_loss=(2 * fit.objective - penalty) / n_ft,
                              converged=fit.converged, iterations=fit.iterations, status=status,
                              status_message=f"residual {fit.residual:.3g} after {fit.iterations} iterations",
                              finetune=finetune, rank=rank if finetune == "lora" else 0, shift_rank=teacher.shift_rank,
                              order_parameters=order, **um)
