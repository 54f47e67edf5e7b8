"""Theory vs simulation at one setting as ``D`` grows (the ``convergence`` command).

:func:`run_comparison` simulates ``setting`` at every ``D`` and seed through the crash-safe sweep
runner (one JSON per finished ``(D, seed)``; a rerun skips them), solves the state evolution
(``mc_replicas`` independent Monte Carlo seeds: mean and its s.e.), and returns the tidy table of
:func:`simulations.campaigns.statistics.comparison_table` — per metric and ``D``: theory, simulation
mean, s.e., gap, z — with the extrapolation of the simulation to ``D → ∞`` (weighted fit in
``D^{-power}``) compared with theory. Written to ``out_dir``: ``comparison.csv``,
``comparison.json`` (setting, Ds, seeds, theory, table, versions, timings) and
``comparison.png`` (metric vs D with the theory line; gap vs 1/D).

Metrics (the simulator's names): pre-training ``pretrain.m, .q, .mse_S, .test_error``; fine-tuning
``finetune.m_abs`` (``|m'|``: the sign of ``û`` is arbitrary), ``.q, .alignment, .test_error,
.test_error_baseline`` (and ``.c`` when recalibrating).
"""

from __future__ import annotations

import time
from pathlib import Path

from .comparison_plots import plot_comparison
from .statistics import comparison_table

from .records import run_metadata, write_json_atomic
from .resumable import Executor, run_points
from .theory_points import two_stage_point
from .validation import replicate_theory, values_by_D

PRETRAIN = ("m", "q", "mse_S", "test_error")
FINETUNE = ("m_abs", "q", "alignment", "test_error", "test_error_baseline")


def metric_names(setting: dict) -> list[str]:
    names = [f"pretrain.{m}" for m in PRETRAIN]
    if float(setting.get("lam_prime", 1.0)) != float("inf"):
        names += [f"finetune.{m}" for m in FINETUNE] + (["finetune.c"] if setting.get("recalibrate") else [])
    else:
        names += ["finetune.test_error"]
    return names


def _flat(pre, fine) -> dict:
    out = {f"pretrain.{m}": float(getattr(pre, m)) for m in PRETRAIN}
    out.update({f"finetune.{m}": float(getattr(fine, m)) for m in FINETUNE if m != "m_abs"})
    out["finetune.m_abs"] = abs(float(fine.m))
    out["finetune.c"] = float(fine.c)
    return out


def simulation_point(D, seed, n_test=5000, **setting) -> dict:
    """One ``simulate`` at ``(D, seed)``: the flat metrics of both stages."""
    from simulations import simulate

    s = dict(setting)
    r = simulate(D, s.pop("alpha"), s.pop("alpha_prime"), s.pop("delta"), s.pop("lam"), seed=seed, n_test=n_test,
                 **s)
    return dict(_flat(r.pretrain, r.finetune), converged=bool(r.pretrain.converged and r.finetune.converged))


def theory_point(setting: dict, seed: int = 0) -> dict:
    """The state evolution at ``setting`` (Monte Carlo seed ``seed``): flat metrics + status."""
    return two_stage_point(setting, seed, _flat)


def run_comparison(setting: dict, Ds, seeds, *, out_dir, executor: Executor | None = None, mc_replicas: int = 4,
                   power: float = 1.0, progress: bool = True, metrics=None, theory_fn=theory_point,
                   point_fn=simulation_point) -> dict:
    """Simulate ``setting`` at ``Ds`` × ``seeds``, solve the theory, tabulate and plot.

    ``setting``: keyword arguments of :func:`simulations.simulate` (and optionally ``n_test``) except
    ``D`` and ``seed``. ``theory_fn(setting, seed) -> dict`` and ``point_fn(D, seed, **setting) ->
    dict`` can be replaced (tests; other observables). Returns ``{"table", "theory", "records",
    "paths", "timings"}``.
    """
    Ds, seeds = sorted({int(D) for D in Ds}), list(seeds)
    if len(Ds) < 2:
        raise ValueError(f"Ds needs at least 2 distinct dimensions to extrapolate, got {Ds}")
    if not seeds:
        raise ValueError("seeds must be a non-empty list")
    out_dir = Path(out_dir)
    metrics = list(metrics or metric_names(setting))
    t0 = time.perf_counter()
    points = [dict(setting, D=D, seed=s) for D in Ds for s in seeds]
    records = run_points(point_fn, points, out_dir / "simulations", executor=executor, progress=progress,
                         desc="convergence simulations")
    t_sim = time.perf_counter() - t0
    theory = replicate_theory(theory_fn, setting, mc_replicas)
    t_theory = time.perf_counter() - t0 - t_sim
    values = {m: values_by_D(records, setting, m) for m in metrics}
    table = comparison_table({m: theory[m] for m in metrics}, values,
                             theory_se={m: theory.get(f"{m}_mc_se", 0.0) for m in metrics}, power=power)
    paths = {"csv": out_dir / "comparison.csv", "json": out_dir / "comparison.json",
             "png": out_dir / "comparison.png"}
    table.write_csv(paths["csv"])
    plot_comparison(table, paths["png"], title=", ".join(f"{k}={v}" for k, v in setting.items()))
    timings = {"simulations_s": t_sim, "theory_s": t_theory, "total_s": time.perf_counter() - t0}

    write_json_atomic(paths["json"], {"setting": setting, "Ds": Ds, "seeds": seeds, "mc_replicas": mc_replicas,
                                      "power": power, "theory": theory, "table": table.records(),
                                      "timings": timings, **run_metadata()})
    return {"table": table, "theory": theory, "records": records, "paths": paths, "timings": timings}
