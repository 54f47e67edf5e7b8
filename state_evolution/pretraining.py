"""The pre-training state evolution: the six-parameter ERM fixed point (docs/theory.md §2).

    prior side    (m, q, V)    = P(m̂, q̂, V̂; λ, κ0, κ)   spectral denoiser of B = m̂ S0 + √q̂ Z
    channel side  (m̂, q̂, V̂)   = C(m, q, V; α, Δ, T, β)  proximal map of the T×T output channel

solved by damped iteration on ``x = (m, q, V)`` (:mod:`state_evolution.fixed_point`).
Then ``mse_S = ρ0 − 2m + q`` and the test error ``E = E‖σ(H_Ŝ) − σ(H0)‖²_F`` over the GOE
pair with covariance ``[[q, m], [m, ρ0]]``.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import numpy as np

from solvable_attention.params import PretrainParams
from solvable_attention.status import Status, raise_if_failed, worst

from .channels import make_channel
from .fixed_point import (SAMPLED_ACCEPT_TOL, SAMPLED_TOL, InvalidIterate, MemoizedMap, predicted_start,
                          solve_fixed_point, warn_if_not_converged)
from .sampling import N_SAMPLES, N_TEST_SAMPLES
from .stage_status import stage_status
from .solve_controls import check_progress, deadline_after, evaluation_progress
from .spectral_prior import prior_overlaps_free, prior_overlaps_matrix


@dataclass(frozen=True)
class PretrainingSolution:
    """The pre-training fixed point and its metrics (names as the simulator's; docs/theory.md §2.5–§2.6,
    docs/model.md §4).

    Attributes:
        params: the setting (:class:`~solvable_attention.params.PretrainParams`).
        m: ``m = lim Tr(Ŝ S0)/D``, student–teacher overlap.
        q: ``q = lim Tr(Ŝ²)/D``, student self-overlap.
        V: ``V``, the response (variance) of the prior's denoiser, docs/theory.md §2.1.
        m_hat: ``m̂``, conjugate of ``m`` from the output channel.
        q_hat: ``q̂``, conjugate of ``q``.
        V_hat: ``V̂``, conjugate of ``V``.
        rho0: ``ρ0 = lim Tr(S0²)/D = 1 + κ0``.
        mse_S: ``mse_S = ρ0 − 2m + q = lim ‖Ŝ − S0‖²_F/D``.
        test_error: ``E = E‖σ(H_Ŝ) − σ(H0)‖²_F`` per sequence over the GOE pair with covariance
            ``[[q, m], [m, ρ0]]`` (docs/theory.md §2.5).
        test_error_se: Monte Carlo standard error of ``test_error``.
        train_loss: mean of ``‖Y − σ(H*)‖²_F`` over training samples at the prox ``H*``.
        train_loss_se: its Monte Carlo standard error.
        rank_fraction: rank of ``Ŝ`` divided by ``D`` (the mass of the denoised spectrum above 0).
        converged: ``status.successful``: the values can be trusted to the solver's tolerance.
        iterations: map evaluations spent.
        residual: final relative residual ``‖F(x) − x‖/‖x‖``.
        m_hat_se: Monte Carlo standard error of ``m̂`` (0 for the closed-form identity channel).
        q_hat_se: Monte Carlo standard error of ``q̂``.
        V_hat_se: Monte Carlo standard error of ``V̂``.
        prox_residual: how well the channel's per-sample prox was solved (the Newton residual of the
            worst sample; 0 for the closed-form identity channel).
        seconds: wall-clock time of the solve.
        method: the solver's route (``"damped"``, ``"damped+root"``, ``"root"``, ``"secant"`` or
            ``"stalled<=accept_tol"``; :class:`~state_evolution.fixed_point.FixedPointSolution`).
        history: the residual at every evaluation.
        memory: the solver's secant pairs, to seed a warm-started solve nearby.
        status: the :class:`~solvable_attention.status.Status` of the solve (the fixed-point solver's and the
            per-sample proxes', :func:`~state_evolution.stage_status.stage_status`).
        status_message: what was measured (residual, bound, unfinished samples).
    """

    params: PretrainParams
    m: float
    q: float
    V: float
    m_hat: float
    q_hat: float
    V_hat: float
    rho0: float
    mse_S: float
    test_error: float
    test_error_se: float
    train_loss: float
    train_loss_se: float
    rank_fraction: float
    converged: bool
    iterations: int
    residual: float
    m_hat_se: float = 0.0
    q_hat_se: float = 0.0
    V_hat_se: float = 0.0
    prox_residual: float = 0.0
    seconds: float = 0.0
    method: str = "damped"
    history: tuple = field(default=(), repr=False)
    memory: tuple | None = field(default=None, repr=False)  # the solver's secant pairs (warm sweeps)
    status: Status = Status.CONVERGED
    status_message: str = ""

    def to_dict(self) -> dict:
        """The fields as a JSON-ready dictionary (``params`` as a dictionary, ``status`` as its name; no
        ``history``, ``memory``).

        Returns:
            ``{field: value}``.
        """
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("history", "memory")}
        d["params"] = self.params.to_dict()
        d["status"] = self.status.value
        return d

    @property
    def overlaps(self) -> np.ndarray:
        """``(m, q, V)``: pass as ``init`` to warm-start a nearby solve."""
        return np.array([self.m, self.q, self.V])


def prior_map(params: PretrainParams, m_hat, q_hat, V_hat, draws=None):
    """``(m, q, V, rank)`` of the spectral denoiser: free probability, or explicit ``draws`` if given.

    The prior side ``(m, q, V) = P(m̂, q̂, V̂; λ, κ0, κ)`` of docs/theory.md §2.1–§2.2: the spectral
    soft-threshold of ``B = m̂ S0 + √q̂ Z`` at ``λ`` with response ``1/V̂``.

    Args:
        params: the setting (``lam``, ``kappa0``, ``kappa`` are used; ``κ`` above 1 acts as 1).
        m_hat: ``m̂ > 0``.
        q_hat: ``q̂ > 0``.
        V_hat: ``V̂ > 0``.
        draws: explicit prior matrices (:func:`spectral_prior.draw_prior_matrices`) instead of free
            probability (reference route, for tests).

    Returns:
        The prior overlaps with fields ``m, q, V, rank_fraction``.

    Raises:
        state_evolution.fixed_point.InvalidIterate: a conjugate is not positive, or the prior integrals
            overflow (far outside the useful range).
    """
    kappa = min(params.kappa, 1.0)
    if not (m_hat > 0 and q_hat > 0 and V_hat > 0):
        raise InvalidIterate(f"conjugates out of the prior's domain: m̂={m_hat:.3g}, q̂={q_hat:.3g}, V̂={V_hat:.3g}")
    try:
        if draws is None:
            return prior_overlaps_free(m_hat, q_hat, V_hat, params.lam, kappa0=params.kappa0, kappa=kappa)
        return prior_overlaps_matrix(m_hat, q_hat, V_hat, params.lam, draws, kappa=kappa)
    except (OverflowError, FloatingPointError, ZeroDivisionError) as exc:  # far outside the useful range
        raise InvalidIterate(f"prior integrals fail at m̂={m_hat:.3g}, q̂={q_hat:.3g}, V̂={V_hat:.3g}: {exc}") from exc


def solve_pretraining(alpha, delta, lam, *, T=3, beta=1.0, kappa0=1.0, kappa=1.0, activation="softmax",
                      noise="logits", init=None, tol=None, max_iter=400, damping=0.7, n_samples=N_SAMPLES,
                      n_test_samples=N_TEST_SAMPLES, seed=0, channel=None, prior_draws=None,
                      fallback=True, warn=True, memory=None, throw=False, time_limit=None,
                      progress=False) -> PretrainingSolution:
    """Solve the pre-training state evolution at one setting (docs/model.md §2, D → ∞).

    The fixed point ``(m, q, V) = P(C(m, q, V))`` of docs/theory.md §2.6: the channel
    ``(m̂, q̂, V̂) = C(m, q, V; α, Δ, T, β)`` (§2.3 identity in closed form, §2.4 softmax by Monte
    Carlo) composed with the spectral prior ``P(m̂, q̂, V̂; λ, κ0, κ)`` (§2.2), then the metrics of §2.5.

    Args:
        alpha: ``α > 0``, samples per ``D²``.
        delta: ``Δ ≥ 0``, label-noise variance.
        lam: ``λ ≥ 0``, nuclear-norm strength.
        T: tokens (``≥ 1``; ``≥ 2`` with softmax).
        beta: ``β > 0``, inverse temperature.
        kappa0: ``κ0 > 0``, teacher width ratio.
        kappa: ``κ > 0``, student width ratio.
        activation: ``"softmax"`` or ``"identity"``.
        noise: ``"logits"`` or ``"output"``.
        init: starting ``(m, q, V)`` (e.g. ``previous.overlaps`` along a sweep); default ``0``, the
            small initialisation of gradient training.
        tol: relative residual tolerance (default 1e-10 identity, ``SAMPLED_TOL`` = 1e-5 Monte Carlo channels, whose own
            sampling error is ~1e-3).
        n_samples, n_test_samples, seed: fixed Monte Carlo samples of a sampled channel.
        channel: reuse an existing channel object (same ``α, Δ, T, β, activation, noise``).
        prior_draws: explicit matrices (:func:`spectral_prior.draw_prior_matrices`) instead of
            free probability for the prior side (reference route, for tests).
        fallback: allow the Powell-hybrid root polish/fallback of :func:`solve_fixed_point`
            (``False``: damped iteration only).
        warn: emit a :class:`ConvergenceWarning` when not converged.
        max_iter: map evaluations at most.
        damping: initial damping ``η`` of the iteration ``x ← (1 − η) x + η F(x)``.
        memory: the ``.memory`` of a solution at a nearby setting (secant pairs of its solver): seeds
            the Anderson mixing (:func:`fixed_point.solve_fixed_point`), as warm sweeps do.
        throw: raise :class:`~solvable_attention.status.SolveError` when the status is not successful
            (default: return the solution with ``converged=False`` and its ``status``).
        time_limit: seconds the iteration may take (``None``: no limit); when reached, the best iterate is
            returned with ``Status.MAX_ITERATIONS`` (:mod:`state_evolution.solve_controls`).
        progress: show a progress bar over map evaluations with the current residual.

    Returns:
        The :class:`PretrainingSolution`; its ``status`` says whether and how it converged.

    Raises:
        ValueError: a parameter out of its range (from :class:`~solvable_attention.params.PretrainParams`:
            ``alpha``, ``beta``, ``kappa0``, ``kappa`` ``> 0``; ``delta``, ``lam`` ``≥ 0``; ``T`` an
            integer ``≥ 1``, ``≥ 2`` with softmax; ``activation``, ``noise`` one of the choices), a
            ``channel`` built for a different setting, an ``init`` that is not a finite triple, or a
            ``time_limit`` that is not a positive number.
        state_evolution.fixed_point.InvalidIterate: the map cannot be evaluated at the start.
        solvable_attention.status.SolveError: ``throw=True`` and the solve did not succeed.
    """
    params = PretrainParams(alpha=alpha, delta=delta, lam=lam, T=T, beta=beta, kappa0=kappa0, kappa=kappa,
                            activation=activation, noise=noise)
    deadline, progress = deadline_after(time_limit), check_progress(progress)
    if channel is None:
        channel = make_channel(params, n_samples=n_samples, n_test_samples=n_test_samples, seed=seed)
    else:
        _check_channel(channel, params)
    sol = _solve(params, channel, init, tol, max_iter, damping, prior_draws, warn and init is not None, fallback, memory,
                 deadline=deadline, progress=progress)
    if init is None and not sol.converged and params.beta > BETA_CONTINUATION_FACTOR and sol.method != "time_limit":
        sol = _continue_in_beta(params, sol, n_samples, n_test_samples, seed, channel, tol, max_iter, damping,
                                prior_draws, fallback, deadline)
    if warn and init is None:
        warn_if_not_converged("pre-training state evolution", sol, tol or SAMPLED_TOL)
    return raise_if_failed(sol, "pre-training state evolution") if throw else sol


# A cold solve that fails at a large inverse temperature is retried by continuation in β: solved at
# β_k = β / FACTOR^k down to β ≤ FACTOR, then back up, each warm-started from the previous fixed point. At large β
# the softmax is nearly a hard maximum and a cold iteration wanders to the boundary q = m²/ρ0 (softmax, α = 0.1,
# Δ = 0.5, λ = 0.05, β = 20, 2^12 samples: ~470 evaluations without converging), while each step of the path
# moves the fixed point little.
BETA_CONTINUATION_FACTOR = 2.0


def _continue_in_beta(params, cold, n_samples, n_test_samples, seed, channel, tol, max_iter, damping, prior_draws,
                      fallback, deadline=None) -> PretrainingSolution:
    """The fixed point at ``params.beta`` reached along ``β = β_min, …, params.beta`` (warm starts), or ``cold``
    (the failed cold solve) if the path does not reach a successful solution. The evaluations of the whole path
    are counted in ``iterations``; ``method`` names the path."""
    betas = [params.beta]
    while betas[-1] > BETA_CONTINUATION_FACTOR:
        betas.append(betas[-1] / BETA_CONTINUATION_FACTOR)
    betas = betas[::-1]
    init, spent = None, cold.iterations
    for b in betas[:-1]:
        p_b = dataclasses.replace(params, beta=b)
        ch = make_channel(p_b, n_samples=n_samples, n_test_samples=n_test_samples, seed=seed)
        step = _solve(p_b, ch, init, tol, max_iter, damping, prior_draws, False, fallback, None, deadline=deadline)
        spent += step.iterations
        if step.converged:
            init = step.overlaps
    if init is None:
        return cold
    sol = _solve(params, channel, init, tol, max_iter, damping, prior_draws, False, fallback, None, deadline=deadline)
    spent += sol.iterations
    if not sol.converged:
        return cold if cold.residual <= sol.residual else dataclasses.replace(sol, iterations=spent)
    path = ", ".join(f"{b:.3g}" for b in betas)
    return dataclasses.replace(sol, iterations=spent, method=f"continuation in beta ({path}), {sol.method}",
                               status_message=f"{sol.status_message}; reached by continuation in beta over "
                                              f"{path} after the cold solve failed ({cold.status_message})")


def _check_channel(channel, params: PretrainParams) -> None:
    keys = ("alpha", "delta", "T", "beta", "activation", "noise", "kappa0")
    a, b = channel.params, params
    bad = [k for k in keys if getattr(a, k) != getattr(b, k)]
    if bad:
        raise ValueError(f"channel was built for a different setting ({', '.join(bad)} differ)")


# Conjugates beyond this magnitude come only from the boundary q = m²/ρ0 of the overlaps (a vanishing Stein
# denominator), never from a fixed point: the largest at any validated setting is O(10²).
MAX_CONJUGATE = 1e150
COARSE_FACTOR = 8  # coarse-to-fine start of sampled channels: n/8 samples ...
MIN_COARSE_SAMPLES = 1024  # ... when that leaves at least this many
COARSE_TOL = 1e-3  # well above the coarse channel's own Monte Carlo error is pointless


def _solve(params, channel, init, tol, max_iter, damping, prior_draws, warn, fallback=True,
           memory=None, deadline=None, progress=False) -> PretrainingSolution:
    t0 = time.perf_counter()
    sampled = params.activation != "identity" or not hasattr(channel, "weight")
    tol = (SAMPLED_TOL if sampled else 1e-10) if tol is None else float(tol)

    def state_map(ch):
        def evaluate(x):
            m, q, V = (float(v) for v in x)
            # On the boundary q = m²/ρ0 the Stein weight of m̂ divides by √(ρ0 − m²/q) = 0: the per-sample values
            # overflow. Such an iterate is rejected here (InvalidIterate: the solver steps back), not passed on
            # to the prior as m̂ ~ 1e298 (which overflowed the free-probability polynomials too).
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                ev = ch.evaluate(m, q, max(V, 0.0))
            c = ev.conjugates
            conj = np.array([c.m_hat, c.q_hat, c.V_hat], float)
            if not np.all(np.isfinite(conj)) or np.max(np.abs(conj)) > MAX_CONJUGATE:
                raise InvalidIterate(f"channel conjugates out of range (m̂, q̂, V̂) = {conj} at (m, q, V) = {x}")
            pr = prior_map(params, c.m_hat, c.q_hat, c.V_hat, prior_draws)
            return np.array([pr.m, pr.q, pr.V]), (ev, pr)
        return MemoizedMap(evaluate)

    x0 = np.zeros(3) if init is None else np.asarray(init, float)
    if x0.shape != (3,) or not np.all(np.isfinite(x0)):
        raise ValueError(f"init must be a finite (m, q, V) triple, got {init!r}")
    rho0 = params.rho0

    def project(x):  # the domain of overlaps: q ≥ m²/ρ0 (Cauchy–Schwarz), V ≥ 0
        return np.array([x[0], max(x[1], x[0] ** 2 / rho0, 0.0), max(x[2], 0.0)])
    n_coarse = getattr(channel, "n_samples", 0) // COARSE_FACTOR
    with evaluation_progress("pre-training state evolution", progress) as report:
        if init is None and n_coarse >= MIN_COARSE_SAMPLES:
            # coarse-to-fine: the wandering first phase on 1/8 of the samples, then the full samples from there
            # (plain damping there: robust far from the fixed point; Anderson on the full samples)
            coarse = solve_fixed_point(state_map(channel.subset(n_coarse)), x0, tol=COARSE_TOL, max_iter=max_iter,
                                       damping=damping, project=project, fallback=False, anderson=0,
                                       deadline=deadline, progress=report)
            x0 = coarse.value
        F = state_map(channel)
        sol = solve_fixed_point(F, x0, tol=tol, max_iter=max_iter, damping=damping, project=project,
                                fallback=fallback, accept_tol=max(tol, SAMPLED_ACCEPT_TOL) if sampled else None,
                                memory=memory, deadline=deadline, progress=report,
                                estimate_below=SAMPLED_ACCEPT_TOL if sampled else None)
    if warn:
        warn_if_not_converged("pre-training state evolution", sol, tol)
    m, q, V = (float(v) for v in sol.value)
    behind = F.aux_at(sol.evaluated_at)  # the evaluation whose prior image is (m, q, V)
    ev, pr = behind if behind is not None else (channel.evaluate(m, q, V), None)
    c = ev.conjugates
    if pr is None:
        pr = prior_map(params, c.m_hat, c.q_hat, c.V_hat, prior_draws)
    E, E_se = channel.test_error(m, q)
    status, message = stage_status(sol, ev)
    if getattr(pr, "inner_failures", 0):  # the prior's quadrature panels / quantile search at the solution
        status = worst(status, Status.INNER_SOLVE_FAILED)
        message += f"; {pr.inner_failures} inner searches of the spectral prior did not converge"
    return PretrainingSolution(
        params=params, m=m, q=q, V=V, m_hat=c.m_hat, q_hat=c.q_hat, V_hat=c.V_hat, rho0=params.rho0,
        mse_S=params.rho0 - 2 * m + q, test_error=E, test_error_se=E_se, train_loss=ev.train_loss[0],
        train_loss_se=ev.train_loss[1], rank_fraction=pr.rank_fraction, converged=status.successful,
        iterations=sol.iterations, residual=sol.residual, m_hat_se=c.m_hat_se, q_hat_se=c.q_hat_se,
        V_hat_se=c.V_hat_se, prox_residual=ev.prox_residual, seconds=time.perf_counter() - t0,
        method=sol.method, history=sol.history, memory=sol.memory, status=status, status_message=message)


def sweep_pretraining(lams, alpha, delta, *, progress=True, **kwargs) -> list[PretrainingSolution]:
    """Solve along a sequence of ``λ`` with warm starts (one channel, same fixed samples).

    Each point is the fixed point of :func:`solve_pretraining` (docs/theory.md §2.6). ``init`` applies
    to the first ``λ``; each later one starts from the extrapolation of its predecessors (the parabola through three,
    in ``log λ``: :func:`fixed_point.predicted_start`) with its predecessor's Anderson secant pairs (``memory``), and
    is retried from its predecessor's fixed point when that fails.

    Args:
        lams: the strengths ``λ ≥ 0``, solved in this order.
        alpha: ``α > 0``, samples per ``D²``.
        delta: ``Δ ≥ 0``, label noise.
        progress: show a progress bar.
        **kwargs: as :func:`solve_pretraining` (``T, beta, kappa0, kappa, activation, noise, init, tol,
            max_iter, damping, n_samples, n_test_samples, seed, channel, prior_draws, fallback, warn``);
            ``channel`` (default: built once here) serves every ``λ``.

    Returns:
        One :class:`PretrainingSolution` per ``λ``, in order (empty for empty ``lams``).

    Raises:
        ValueError: a parameter out of its range (as :func:`solve_pretraining`).
        state_evolution.fixed_point.InvalidIterate: the first ``λ`` starts outside the map's domain.
    """
    from tqdm.auto import tqdm

    lams = list(lams)
    if not lams:
        return []
    kwargs = dict(kwargs)
    init, channel = kwargs.pop("init", None), kwargs.pop("channel", None)
    if channel is None:
        keys = ("T", "beta", "kappa0", "kappa", "activation", "noise")
        params = PretrainParams(alpha=alpha, delta=delta, lam=lams[0], **{k: kwargs[k] for k in keys if k in kwargs})
        channel = make_channel(params, n_samples=kwargs.get("n_samples", N_SAMPLES),
                               n_test_samples=kwargs.get("n_test_samples", N_TEST_SAMPLES), seed=kwargs.get("seed", 0))
    out = []
    for lam in tqdm(lams, disable=not progress, desc="λ sweep"):
        start = predicted_start([s.overlaps for s in out[-3:]], [s.params.lam for s in out[-3:]], lam)
        try:
            sol = solve_pretraining(alpha, delta, lam, init=init if start is None else start, channel=channel,
                                    memory=out[-1].memory if out else None, **kwargs)
        except InvalidIterate:  # the extrapolated start left the map's domain
            if not out:
                raise
            sol = None
        if out and (sol is None or not sol.converged):  # retry from the last fixed point
            retry = solve_pretraining(alpha, delta, lam, init=out[-1].overlaps, channel=channel, **kwargs)
            sol = retry if (sol is None or retry.converged or retry.residual < sol.residual) else sol
        out.append(sol)
    return out
