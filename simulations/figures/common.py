"""What every figure reproduction shares: configurations, the cached theory and simulation
sweeps, the tidy data table, the plotting of theory lines with simulation markers, and the files
written (``<name>.png``, ``.pdf``, ``.csv``, ``.json``).

Data table (the CSV behind a figure): one row per (source, setting, metric), *long* format::

    source      theory | simulation
    panel       which panel of the figure (e.g. ``delta=0.5``)
    alpha, delta, lam, lam_prime, recalibrate, activation   the setting of the point
    D, n_seeds  simulation only (theory: D = inf)
    metric      E_ft (E'), E_ft_baseline (E'_0), alignment, m_abs (|m'|), q_ft (q'), c, mse_S,
                q_pre (Tr Ŝ²/D), E_pre (pre-training test error), effective_noise,
                effective_noise_recalibrated, converged (1/0; simulation: fraction of seeds)
    value, se   theory: its Monte Carlo s.e. where the solver reports one; simulation: mean and
                s.e. over seeds (std(ddof=1)/√n)

Simulations run through :func:`simulations.campaigns.resumable.run_points` (one JSON per finished point under
``out/cache/<figure>/``): a rerun, or a run after an interrupt, computes only missing points. The
theory curves are sweep points too (one point per warm-started curve), so a rerun that only
changes the plot costs nothing.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import time
from pathlib import Path

import numpy as np

from solvable_attention.averages import mean_se
from solvable_attention.status import Status
from state_evolution.sampling import N_SAMPLES, N_TEST_SAMPLES

from ..campaigns.records import new_figure as make_figure
from ..campaigns.records import restore_inf, run_metadata, write_file_atomic, write_json_atomic
from ..campaigns.progress import WorkTracker
from ..campaigns.resumable import Executor, pending, run_points

SETTING_KEYS = ("panel", "alpha", "delta", "lam", "lam_prime", "recalibrate", "activation")
CSV_COLUMNS = ("source",) + SETTING_KEYS + ("D", "n_seeds", "metric", "value", "se")
INF = math.inf


# --------------------------------------------------------------------------- configuration

@dataclasses.dataclass(frozen=True)
class FigureConfig:
    """Fields shared by the figures' configurations: the fixed model settings and the run sizes
    (simulation ``D``, ``seeds``, test samples; the theory's Monte Carlo samples). Each figure's
    ``Config`` subclasses it with its own grid."""

    activation: str = "softmax"
    delta: float = 0.5
    lam_prime: float = 1.0
    T: int = 3
    D: int = 150
    seeds: int = 4
    n_test: int = 20000
    n_samples: int = N_SAMPLES
    n_test_samples: int = N_TEST_SAMPLES


def make_config(full, quick_config, quick: bool, overrides: dict):
    """``quick_config`` or ``full`` with ``overrides`` (field names of the dataclass) applied.

    Raises ``ValueError`` naming the valid fields for an unknown override.
    """
    base = quick_config if quick else full
    names = {f.name for f in dataclasses.fields(base)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(f"unknown figure option(s) {unknown}; valid: {sorted(names)}")
    cfg = dataclasses.replace(base, **{k: (tuple(v) if isinstance(v, list) else v) for k, v in overrides.items()})
    if cfg.D < 2:
        raise ValueError(f"D must be an integer >= 2, got {cfg.D}")
    if cfg.seeds < 1:
        raise ValueError(f"seeds must be a positive integer, got {cfg.seeds}")
    return cfg


def geomgrid(lo: float, hi: float, n: int) -> tuple:
    """``n`` log-spaced values from ``lo`` to ``hi`` as a tuple of floats (a config field)."""
    return tuple(float(x) for x in np.geomspace(lo, hi, n))


def lam_grid(cfg, delta) -> list[float]:
    """The ``λ`` grid of panel ``Δ = delta``: ``cfg.lams`` is either one grid shared by all
    ``cfg.deltas`` or a tuple of grids, one per entry of ``cfg.deltas``."""
    if cfg.lams and isinstance(cfg.lams[0], (tuple, list)):
        if len(cfg.lams) != len(cfg.deltas):
            raise ValueError(f"lams has {len(cfg.lams)} grids for {len(cfg.deltas)} deltas")
        return [float(x) for x in cfg.lams[list(cfg.deltas).index(delta)]]
    return [float(x) for x in cfg.lams]


def split_grid(grid, pieces: int) -> list[list[float]]:
    """``grid`` cut into ``pieces`` contiguous, nearly equal, non-empty parts (fewer if the grid is shorter).

    Args:
        grid: a sequence of floats.
        pieces: the number of parts, ``≥ 1``.

    Returns:
        The parts, in order; their concatenation is ``grid``.
    """
    grid = [float(x) for x in grid]
    pieces = max(1, min(int(pieces), len(grid)))
    return [list(map(float, part)) for part in np.array_split(grid, pieces)]


# --------------------------------------------------------------------------- metrics of one point

def theory_metrics(sol) -> dict:
    """``{metric: (value, se)}`` of one :class:`StateEvolutionSolution` (names as in the CSV)."""
    pre, f = sol.pretrain, sol.finetune
    return {"E_ft": (f.test_error, f.test_error_se), "E_ft_baseline": (f.test_error_baseline, f.test_error_baseline_se),
            "alignment": (f.alignment, 0.0), "m_abs": (abs(f.m), 0.0), "q_ft": (f.q, 0.0), "c": (f.c, 0.0),
            "mse_S": (pre.mse_S, 0.0), "q_pre": (pre.q, 0.0), "E_pre": (pre.test_error, pre.test_error_se),
            "effective_noise": (f.effective_noise, 0.0),
            "effective_noise_recalibrated": (f.effective_noise_recalibrated, 0.0),
            "converged": (float(sol.converged), 0.0),
            "rs_unstable": (float(getattr(sol, "status", None) is Status.UNSTABLE_FIXED_POINT), 0.0)}


THEORY_METRICS = ("E_ft", "E_ft_baseline", "alignment", "m_abs", "q_ft", "c", "mse_S", "q_pre", "E_pre",
                  "effective_noise",
                  "effective_noise_recalibrated")


def simulation_metrics(result) -> dict:
    """``{metric: value}`` of one :class:`simulations.SimulationResult` (the theory's names)."""
    pre, f = result.pretrain, result.finetune
    return {"E_ft": f.test_error, "E_ft_baseline": f.test_error_baseline, "alignment": f.alignment,
            "m_abs": abs(f.m), "q_ft": f.q, "c": f.c, "mse_S": pre.mse_S, "q_pre": pre.q, "E_pre": pre.test_error,
            "rho_v": f.rho_v, "converged": float(f.converged and pre.converged)}


# --------------------------------------------------------------------------- sweep point functions

def theory_curve(alpha, alpha_prime, delta, lams, lam_primes, recalibrate=False, n_samples=N_SAMPLES,
                 n_test_samples=N_TEST_SAMPLES, seed=0, **setting) -> dict:
    """Both stages along ``lams × lam_primes`` (warm-started, :func:`sweep_state_evolution`):
    ``{"rows": [{lam, lam_prime, metrics: {name: [value, se]}, error}, ...]}``.

    If the warm-started sweep raises (a diverging iterate at an extreme ``λ``), each ``(λ, λ')`` is
    solved on its own and a point that still fails is recorded with NaN metrics, ``converged = 0``
    and its ``error``: one bad corner never loses the whole curve, and it is never hidden.
    """
    from state_evolution import sweep_state_evolution

    lams, lam_primes = [restore_inf(x) for x in lams], [restore_inf(x) for x in lam_primes]
    kw = dict(recalibrate=recalibrate, n_samples=n_samples, n_test_samples=n_test_samples, seed=seed,
              progress=False, warn=False, **setting)
    grid = [(lam, lp) for lam in lams for lp in lam_primes]
    try:
        sols = sweep_state_evolution(alpha, alpha_prime, delta, lams, lam_primes, **kw)
        return {"rows": [dict(lam=lam, lam_prime=lp, metrics=theory_metrics(s), error=None)
                         for (lam, lp), s in zip(grid, sols)]}
    except (ArithmeticError, ValueError, np.linalg.LinAlgError):
        pass
    rows = []
    for lam, lp in grid:
        try:
            sol = sweep_state_evolution(alpha, alpha_prime, delta, [lam], [lp], **kw)[0]
            rows.append(dict(lam=lam, lam_prime=lp, metrics=theory_metrics(sol), error=None))
        except (ArithmeticError, ValueError, np.linalg.LinAlgError) as exc:
            nan = {k: (math.nan, math.nan) for k in THEORY_METRICS}
            rows.append(dict(lam=lam, lam_prime=lp, metrics=dict(nan, converged=(0.0, 0.0)), error=repr(exc)))
    return {"rows": rows}


def simulation_point(D, seed, alpha, alpha_prime, delta, lam, variants, n_test=5000, **setting) -> dict:
    """One pre-training at ``D`` fine-tuned with each of ``variants`` (:func:`simulate_variants`):
    ``{"variants": [metrics, ...]}`` in the order of ``variants``."""
    from simulations import simulate_variants

    variants = [{k: restore_inf(v) for k, v in var.items()} for var in variants]
    results = simulate_variants(D, alpha, alpha_prime, delta, lam, variants=variants, seed=seed, n_test=n_test,
                                **setting)
    return {"variants": [simulation_metrics(r) for r in results]}


# --------------------------------------------------------------------------- tidy rows

def theory_rows(records, panel_of) -> list[dict]:
    """Long rows of theory-curve records; ``panel_of(point)`` names the panel of a record."""
    rows = []
    for rec in records:
        p = rec["point"]
        for r in rec["result"]["rows"]:
            setting = dict(panel=panel_of(p), alpha=p["alpha"], delta=p["delta"], lam=restore_inf(r["lam"]),
                           lam_prime=restore_inf(r["lam_prime"]), recalibrate=bool(p.get("recalibrate", False)),
                           activation=p.get("activation", "softmax"))
            for metric, (value, se) in r["metrics"].items():
                rows.append(dict(source="theory", **setting, D=INF, n_seeds=0, metric=metric, value=restore_inf(value),
                                 se=restore_inf(se)))
    return rows


def simulation_rows(records, panel_of) -> list[dict]:
    """Mean ± s.e. over seeds of simulation records, per (point without seed, variant, metric)."""
    groups = {}
    for rec in records:
        p = rec["point"]
        key = tuple(sorted((k, str(v)) for k, v in p.items() if k != "seed"))
        for i, metrics in enumerate(rec["result"]["variants"]):
            groups.setdefault((key, i), (p, p["variants"][i], {}))
            for metric, value in metrics.items():
                groups[(key, i)][2].setdefault(metric, []).append(restore_inf(value))
    rows = []
    for p, variant, by_metric in groups.values():
        setting = dict(panel=panel_of(p), alpha=p["alpha"], delta=p["delta"], lam=restore_inf(p["lam"]),
                       lam_prime=restore_inf(variant.get("lam_prime", 1.0)),
                       recalibrate=bool(variant.get("recalibrate", False)),
                       activation=p.get("activation", "softmax"))
        for metric, values in by_metric.items():
            mean, se, n = mean_se(values)
            rows.append(dict(source="simulation", **setting, D=p["D"], n_seeds=n, metric=metric, value=mean, se=se))
    return rows


_NOT_SETTING = ("source", "D", "n_seeds", "value", "se", "metric")
Z_METRICS = ("E_ft", "E_ft_baseline", "alignment", "m_abs", "q_ft", "c", "mse_S", "q_pre", "E_pre", "update_alignment")


def marker_z_scores(rows) -> dict:
    """Each simulation marker against the theory line at its setting: ``z = (sim − theory)/√(se_sim² + se_th²)``.

    A marker is compared where a theory row has the same setting (every column but the source, the value, its
    s.e. and the simulation's ``D`` and seeds: :data:`SETTING_KEYS` and any extra one such as ``alpha_prime``)
    and metric (:data:`Z_METRICS`). The theory point's state is kept with it: ``converged``, ``rs_unstable`` (a
    replica-symmetric point that is unstable, docs/theory.md §4.6: the line is not the ERM's answer there)
    or ``not_converged`` (no theory value).

    Args:
        rows: the tidy rows of a figure (theory and simulation).

    Returns:
        ``{"markers": [{setting..., metric, D, n_seeds, simulation, simulation_se, theory, theory_se, z,
        theory_state}], "summary": {metric: {"markers", "compared", "within_3se", "rs_unstable"}}}``;
        ``z`` is ``None`` where no converged theory value or no spread exists.
    """
    def key(r):  # every column that is not a value or a simulation size: the setting (SETTING_KEYS, α', …)
        return tuple(sorted((k, str(v)) for k, v in r.items() if k not in _NOT_SETTING))

    theory = {(key(r), r["metric"]): r for r in rows if r["source"] == "theory"}
    markers, summary = [], {}
    for r in rows:
        if r["source"] != "simulation" or r["metric"] not in Z_METRICS:
            continue
        th = theory.get((key(r), r["metric"]))
        if th is None:
            continue
        conv = theory.get((key(r), "converged"))
        unstable = theory.get((key(r), "rs_unstable"))
        state = ("rs_unstable" if unstable is not None and unstable["value"] > 0.5 else
                 "converged" if conv is None or conv["value"] > 0.5 else "not_converged")
        th_se = th["se"] if isinstance(th["se"], (int, float)) and math.isfinite(th["se"]) else 0.0
        spread = math.hypot(r["se"], th_se) if math.isfinite(r["se"]) else math.nan
        usable = state != "not_converged" and math.isfinite(th["value"]) and math.isfinite(r["value"]) and spread > 0
        z = (r["value"] - th["value"]) / spread if usable else None
        markers.append(dict({k: v for k, v in r.items() if k not in _NOT_SETTING}, metric=r["metric"], D=r["D"],
                            n_seeds=r["n_seeds"],
                            simulation=r["value"], simulation_se=r["se"], theory=th["value"], theory_se=th_se,
                            z=z, theory_state=state))
        s = summary.setdefault(r["metric"], {"markers": 0, "compared": 0, "within_3se": 0, "rs_unstable": 0,
                                             "outside_3se_rs_stable": 0})
        s["markers"] += 1
        s["rs_unstable"] += state == "rs_unstable"
        if z is not None:
            s["compared"] += 1
            s["within_3se"] += abs(z) <= 3
            s["outside_3se_rs_stable"] += abs(z) > 3 and state == "converged"
    return {"markers": markers, "summary": summary}


def select(rows, **filters) -> list[dict]:
    """Rows whose fields equal ``filters`` (floats compared with ``math.isclose``)."""
    def match(row):
        for k, v in filters.items():
            x = row.get(k)
            if isinstance(v, float) and isinstance(x, (int, float)) and not isinstance(x, bool):
                if not (x == v or math.isclose(x, v, rel_tol=1e-9)):
                    return False
            elif x != v:
                return False
        return True

    return [r for r in rows if match(r)]


def series(rows, x: str, **filters) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(x, value, se)`` arrays of the selected rows, sorted by ``x``."""
    chosen = sorted(select(rows, **filters), key=lambda r: r[x])
    return (np.array([r[x] for r in chosen], float), np.array([r["value"] for r in chosen], float),
            np.array([r["se"] for r in chosen], float))


def paired(rows, x_metric: str, y_metric: str, **filters):
    """``(x, y, x_se, y_se)`` of two metrics measured at the same points (same source, setting and
    ``D``), sorted by ``x``: e.g. ``E'`` against the pre-training ``mse_S`` along a sweep."""
    def key(r):
        return tuple(str(r[k]) for k in ("source", "D") + SETTING_KEYS)

    xs = {key(r): r for r in select(rows, metric=x_metric, **filters)}
    pairs = sorted(((xs[key(r)], r) for r in select(rows, metric=y_metric, **filters) if key(r) in xs),
                   key=lambda pr: pr[0]["value"])
    return tuple(np.array([pr[i][f] for pr in pairs], float) for f, i in
                 (("value", 0), ("value", 1), ("se", 0), ("se", 1)))


def mask_unconverged(rows, keep_unstable: bool = True) -> list[dict]:
    """A copy of ``rows`` where every theory value of a point whose solve did not converge is NaN
    (kept in the CSV as computed, with ``converged = 0``; never drawn or minimised over). With
    ``keep_unstable`` a replica-symmetric fixed point that is only unstable (``rs_unstable = 1``) is kept, to be
    drawn as such; without, it is masked too (e.g. before locating a minimum)."""
    def key(r):
        return tuple(str(r[k]) for k in SETTING_KEYS)

    unstable = {key(r) for r in rows if keep_unstable and r["source"] == "theory" and r["metric"] == "rs_unstable"
                and r["value"] > 0.5}
    bad = {key(r) for r in rows if r["source"] == "theory" and r["metric"] == "converged" and not r["value"] > 0.5
           and key(r) not in unstable}  # an RS-unstable fixed point is drawn, as such (plot_theory_and_simulation)
    return [dict(r, value=math.nan) if (r["source"] == "theory" and r["metric"] != "converged" and key(r) in bad)
            else r for r in rows]


def mask_where(rows, metric: str, other: str, predicate) -> list[dict]:
    """A copy of ``rows`` where ``metric`` is NaN at the points (same source, setting, ``D``) where
    ``predicate(value of other)`` holds, e.g. the recalibration ``c`` where ``Ŝ = 0`` (``q_pre = 0``):
    there ``cŜ`` does not depend on ``c`` and its value means nothing."""
    def key(r):
        return tuple(str(r[k]) for k in ("source", "D") + SETTING_KEYS)

    hit = {key(r) for r in rows if r["metric"] == other and predicate(r["value"])}
    return [dict(r, value=math.nan) if (r["metric"] == metric and key(r) in hit) else r for r in rows]


def argmin_x(rows, x: str, **filters) -> float:
    """The grid value of ``x`` where the selected series is smallest (NaN-safe)."""
    xs, ys, _ = series(rows, x, **filters)
    if not len(xs) or np.all(np.isnan(ys)):
        raise ValueError(f"no finite values to minimise for {filters}")
    return float(xs[np.nanargmin(ys)])


# --------------------------------------------------------------------------- plotting

def plot_theory_and_simulation(ax, rows, x: str, *, color, label, logx=True, **filters) -> None:
    """Theory line (``source="theory"``; dotted where the replica-symmetric fixed point is unstable, its
    ``rs_unstable`` row set) and simulation markers with s.e. bars (``"simulation"``)."""
    xs, ys, _ = series(rows, x, source="theory", **filters)
    if len(xs):
        ux, uy, _ = series(rows, x, **{**filters, "source": "theory", "metric": "rs_unstable"})
        flags = dict(zip(ux, uy))
        unstable = np.array([flags.get(v, 0.0) > 0.5 for v in xs])
        ax.plot(xs, np.where(unstable, np.nan, ys), "-", color=color, label=label)
        if unstable.any():
            ax.plot(xs, ys, ":", color=color, label=f"{label} (RS-unstable)")
    xs, ys, se = series(rows, x, source="simulation", **filters)
    if len(xs):
        ax.errorbar(xs, ys, yerr=np.nan_to_num(se), fmt="o", ms=4, color=color, capsize=2)
    if logx:
        ax.set_xscale("log")


def new_figure(nrows: int, ncols: int, width: float = 4.2, height: float = 3.4):
    return make_figure(nrows, ncols, (width * ncols, height * nrows))


# --------------------------------------------------------------------------- cost model (progress ETA)

# Seconds of the figures' points on a 2-core machine with 2 single-threaded workers, fitted to the per-point
# times recorded by the full-scale reproductions (docs/figures/cache; benchmarks/check_eta.py replays them).
# Only the ratios between point costs matter for the ETA (campaigns/progress.py).
# A simulation: log s = log 5.2 + 0.35 log(α/0.1) − 0.25 log(λ/0.01) + 0.15 · (number of LoRA variants),
# rms error 0.35 in log over 508 points (fewer FISTA iterations at large α and large λ offset the larger n).
_SIM_SECONDS, _SIM_ALPHA_EXP, _SIM_LAM_EXP, _SIM_VARIANT_LOG = 5.2, 0.35, -0.25, 0.15
# A warm-started theory curve: each finite λ' starts cold (with the branch check), the other λ are warm
# starts; the cost grows at small α like α^-0.55 (Figure 2's curves: 110 s at α = 0.02, 12 s at α = 1).
_CURVE_COLD_SECONDS, _CURVE_ROW_SECONDS, _CURVE_ALPHA_EXP = 20.0, 2.7, -0.55
# The identity channel (closed-form pre-training) costs this fraction; recalibration (a 4th order
# parameter) this multiple; a selection-sweep theory point this much per (variant, α'^0.6).
_IDENTITY_FACTOR, _RECALIBRATE_FACTOR, _SELECTION_SECONDS = 0.15, 2.0, 12.0


def estimated_cost(point: dict) -> float:
    """Estimated seconds of one sweep point of a figure (theory curve, theory point or simulation).

    Args:
        point: the point's keyword dict.

    Returns:
        A positive estimate, on a common scale across the kinds of points (for the progress ETA).
    """
    identity = point.get("activation") == "identity"
    alpha = float(point.get("alpha", 0.1))
    if "sim_ranks" in point:  # a rank-figure simulation: one pre-training, LoRA of each rank and two full updates
        return _SIM_SECONDS * (point["D"] / 150) ** 4 * (2 + sum(point["sim_ranks"]) / 4)
    if "rank" in point:  # a rank-r theory point: a map evaluation grows like r² (docs/theory.md §7.1)
        return (_IDENTITY_FACTOR if identity else 1.0) * _CURVE_COLD_SECONDS * point["rank"] ** 2
    if "D" in point:  # a simulation: one pre-training and its LoRA variants
        variants = len(point.get("variants") or [None])
        lam = max(float(point.get("lam", 0.01)), 1e-4)
        return (_SIM_SECONDS * (alpha / 0.1) ** _SIM_ALPHA_EXP * (lam / 0.01) ** _SIM_LAM_EXP
                * float(np.exp(_SIM_VARIANT_LOG * variants)) * (point["D"] / 150) ** 4)
    factor = (_IDENTITY_FACTOR if identity else 1.0) * (alpha / 0.1) ** _CURVE_ALPHA_EXP
    if "lams" in point:  # a warm-started theory curve
        finite = [lp for lp in point["lam_primes"] if restore_inf(lp) != INF]
        cold = max(1, len(finite)) * _CURVE_COLD_SECONDS
        warm = (len(point["lams"]) - 1) * len(finite) * _CURVE_ROW_SECONDS
        return factor * (cold + warm) * (_RECALIBRATE_FACTOR if point.get("recalibrate") else 1.0)
    if "alpha_primes" in point:  # a selection-sweep theory point
        return factor * _SELECTION_SECONDS * len(point.get("variants") or [None]) * len(point["alpha_primes"]) ** 0.6
    return 1.0


# --------------------------------------------------------------------------- one reproduction

class Reproduction:
    """Bookkeeping of one figure's reproduction: cached sweeps (timed) and the files written.

    ``run.sweep(label, fn, points)`` runs a crash-safe sweep under ``out/cache/<name>/<label>/``;
    ``run.finish(fig, rows, config)`` writes ``<name>.png/.pdf/.csv/.json`` and returns the paths
    and timings.
    """

    def __init__(self, name: str, out, config, *, executor: Executor | None = None, progress: bool = True):
        self.name, self.out, self.config = name, Path(out), config
        self.executor, self.progress = executor or Executor(), progress
        self.out.mkdir(parents=True, exist_ok=True)
        self.cache = self.out / "cache" / name
        self.timings: dict = {}
        self.t0 = time.perf_counter()
        self.tracker = WorkTracker(name, estimated_cost, workers=self.executor.workers, enabled=progress)
        self.expected: set = set()

    def expect(self, label: str, points) -> None:
        """Announce a sweep to come, so that the figure's one progress bar counts its cost from the start.

        Args:
            label: the sweep's label (as given to :meth:`sweep`).
            points: its points (for a sweep whose points depend on earlier results, points of the same
                cost: only :func:`estimated_cost` of each is used).
        """
        self.expected.add(label)
        self.tracker.expect(pending(points, self.cache / label))

    def sweep(self, label: str, fn, points) -> list[dict]:
        points = [dict(p) for p in points]
        if label not in self.expected:
            self.expect(label, points)
        t = time.perf_counter()
        records = run_points(fn, points, self.cache / label, executor=self.executor, progress=False,
                             on_start=self.tracker.start, on_done=self.tracker.advance)
        self.timings[f"{label}_s"] = self.timings.get(f"{label}_s", 0.0) + time.perf_counter() - t
        return records

    def finish(self, fig, rows, *, notes: str = "") -> dict:
        paths = {ext: self.out / f"{self.name}.{ext}" for ext in ("png", "pdf", "csv", "json")}
        write_file_atomic(paths["png"], lambda tmp: fig.savefig(tmp, dpi=110))
        write_file_atomic(paths["pdf"], fig.savefig)
        write_rows_csv(paths["csv"], rows)
        self.timings["total_s"] = time.perf_counter() - self.t0
        self.timings["progress"] = self.tracker.close()
        meta = {"figure": self.name, "config": dataclasses.asdict(self.config), "seeds": list(range(self.config.seeds)),
                "executor": dataclasses.asdict(self.executor), "timings": self.timings, "notes": notes, "cache": str(self.cache),
                "files": {k: str(v) for k, v in paths.items()}, "z_scores": marker_z_scores(rows), **run_metadata()}
        write_json_atomic(paths["json"], meta)
        return {"paths": paths, "timings": dict(self.timings)}


def write_rows_csv(path, rows, columns=CSV_COLUMNS) -> None:
    """The tidy rows as CSV (``inf`` written as ``inf``), columns :data:`CSV_COLUMNS` (or ``columns``)."""
    def write(tmp):
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)

    write_file_atomic(path, write)


def read_rows_csv(path) -> list[dict]:
    """Rows of :func:`write_rows_csv` with numbers parsed back (for notebooks and tests)."""
    def parse(k, v):
        if k in ("source", "panel", "metric", "activation"):
            return v
        if k == "recalibrate":
            return v == "True"
        return float(v) if v != "" else float("nan")

    with open(path, newline="") as f:
        return [{k: parse(k, v) for k, v in row.items()} for row in csv.DictReader(f)]
