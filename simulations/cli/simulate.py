"""``solvable-attention simulate``: both stages of the model at finite ``D`` over several seeds.

Trains pre-training and rank-one LoRA (:func:`simulations.simulate`) for each seed, prints the mean ±
standard error of every metric, and optionally writes everything (parameters, per-seed results,
summary, versions, machine, timings) to a JSON file, atomically.
"""

from __future__ import annotations

import time

import numpy as np

from ..campaigns.records import run_metadata, write_json_atomic
from .arguments import add_model_arguments, add_seed_arguments, check_writable, model_kwargs, seed_list, validate

PRETRAIN_METRICS = ("m", "q", "rho0", "mse_S", "test_error", "train_loss", "rank_fraction")
FINETUNE_METRICS = ("m_abs", "q", "rho_v", "alignment", "test_error", "test_error_baseline", "c",
                    "update_alignment", "update_rank", "update_norm")  # |m'|: û's sign is arbitrary


def register(subparsers) -> None:
    """Add the ``simulate`` sub-parser.

    Args:
        subparsers: the sub-parsers action of the main parser (``add_subparsers()``).
    """
    p = subparsers.add_parser("simulate", help="train both stages at finite D over seeds",
                              description="Train pre-training and rank-one LoRA at finite D over "
                                          "several seeds; print mean ± s.e. of every metric.")
    p.add_argument("--D", type=int, required=True, help="embedding dimension (>= 2)")
    add_model_arguments(p)
    p.add_argument("--method", choices=("proximal", "factorized"), default="proximal",
                   help="pre-training solver (default: proximal)")
    p.add_argument("--n-test", type=int, default=20000, help="fresh samples per test error")
    p.add_argument("--pretrain-tol", type=float, default=1e-7,
                   help="pre-training stopping tolerance (proximal; default 1e-7)")
    add_seed_arguments(p)
    p.add_argument("--json", metavar="PATH", help="write parameters, results and summary here")
    p.add_argument("--float32", action="store_true", help="compute in float32 (default float64)")
    p.add_argument("--rank", type=int, default=1, help="LoRA rank r (default 1; docs/model.md §6)")
    p.add_argument("--shift-rank", type=int, default=1, help="rank r* of the teacher's shift (default 1)")
    p.add_argument("--finetune", choices=("lora", "full_nuclear", "full_ridge"), default="lora",
                   help="fine-tuning method (default lora; full_*: every weight of the update, nuclear or "
                        "ridge penalty, strength --lam-prime)")
    p.set_defaults(func=run)


def run(args) -> int:
    """Validate everything, simulate every seed, print the report, write ``--json``.

    Args:
        args: the parsed arguments of the ``simulate`` command.

    Returns:
        0 (exit status: success).

    Raises:
        UsageError: bad seeds (:func:`~simulations.cli.arguments.seed_list`) or an unwritable ``--json``
            path (:func:`~simulations.cli.arguments.check_writable`).
        ValueError: a bad ``--D``, model parameter, ``--n-test`` or ``--pretrain-tol``
            (:func:`~simulations.cli.arguments.validate`, before any simulation).
    """
    kw = model_kwargs(args)
    seeds = seed_list(args)
    validate(args.D, kw)
    if args.json:
        check_writable(args.json)
    t0 = time.perf_counter()
    results = run_seeds(args.D, seeds, kw)
    wall = time.perf_counter() - t0

    from ..simulator.summary import summarize
    summary = summarize(results)
    print(format_report(args.D, seeds, kw, results, summary, wall))
    if args.json:
        write_json_atomic(args.json, simulate_payload(args.D, seeds, kw, results, summary, wall))
        print(f"wrote {args.json}")
    return 0


def run_seeds(D, seeds, kw) -> list:
    """``simulate(D, seed=s, **kw)`` for each seed under a tqdm bar (pre-training in the postfix).

    Args:
        D: the embedding dimension.
        seeds: the seeds, run in this order.
        kw: the other keyword arguments of :func:`simulations.simulate`
            (:func:`~simulations.cli.arguments.model_kwargs`).

    Returns:
        The results of :func:`simulations.simulate`, one per seed, in the order of ``seeds``.
    """
    from tqdm import tqdm

    from ..simulator import simulate

    results = []
    with tqdm(seeds, desc=f"simulate D={D}", unit="seed", dynamic_ncols=True) as bar:
        for seed in bar:
            bar.set_postfix_str(f"seed {seed}: data", refresh=True)
            results.append(simulate(D, seed=seed, progress=_pretrain_postfix(bar, seed), **kw))
            bar.set_postfix_str(f"seed {seed}: done ({results[-1].pretrain.iterations} it)",
                                refresh=False)
    return results


def _pretrain_postfix(bar, seed, every: float = 0.25):
    """``progress(iteration, objective, residual)`` callback updating ``bar``'s postfix (throttled)."""
    last = [0.0]

    def progress(it, objective, residual):
        now = time.monotonic()
        if now - last[0] >= every:
            last[0] = now
            bar.set_postfix_str(f"seed {seed}: pretrain it {it} obj {float(objective):.6g} "
                                f"res {float(residual):.2e}", refresh=True)
    return progress


def format_report(D, seeds, kw, results, summary, wall) -> str:
    """The printed report: the setting, mean ± s.e. of every metric, convergence and timings.

    Args:
        D: the embedding dimension.
        seeds: the seeds simulated.
        kw: the keyword arguments given to :func:`simulations.simulate`.
        results: the per-seed results (:func:`run_seeds`).
        summary: their summary (``simulations.simulator.summary.summarize``), keyed ``<stage>.<metric>``
            and ``timings.<stage>``.
        wall: the total wall-clock time of the simulations, in seconds.

    Returns:
        The report as one string of lines: the setting, one line per metric (a single value when there is
        one seed), the convergence line and the mean timings.
    """
    from ..simulator.summary import format_mean_se

    n = len(results)
    head = (f"D={D}  seeds={seeds}  activation={kw['activation']}  noise={kw['noise']}  "
            f"method={kw.get('method', 'proximal')}  alpha={kw['alpha']:g}  "
            f"alpha'={kw['alpha_prime']:g}  delta={kw['delta']:g}  lam={kw['lam']:g}  "
            f"lam'={kw['lam_prime']:g}  T={kw['T']}")
    lines = [head, f"{'metric':<30} {'mean ± s.e.' if n > 1 else 'value'}"]
    for section, names in (("pretrain", PRETRAIN_METRICS), ("finetune", FINETUNE_METRICS)):
        for name in names:
            key = f"{section}.{name}"
            lines.append(f"{key:<30} {format_mean_se(summary[key])}")
    lines.append(_convergence_line(results))
    timing_keys = [k for k in summary if k.startswith("timings.")]
    lines.append("mean timings (s): " + ", ".join(
        f"{k.split('.', 1)[1]} {summary[k]['mean']:.3g}" for k in timing_keys)
        + f"; total wall {wall:.3g} (the first seed includes JIT compilation)")
    return "\n".join(lines)


def _convergence_line(results) -> str:
    parts = []
    for stage in ("pretrain", "finetune"):
        stats = [getattr(r, stage) for r in results]
        ok = sum(bool(s.converged) for s in stats)
        its = [int(s.iterations) for s in stats]
        parts.append(f"{stage} {ok}/{len(stats)} (iterations {min(its)}-{max(its)})")
    return "converged: " + ", ".join(parts)


def simulate_payload(D, seeds, kw, results, summary, wall) -> dict:
    """The ``--json`` record: parameters, per-seed results, summary, timings and run metadata.

    Args:
        D: the embedding dimension.
        seeds: the seeds simulated.
        kw: the keyword arguments given to :func:`simulations.simulate`.
        results: the per-seed results (:func:`run_seeds`).
        summary: their summary (``simulations.simulator.summary.summarize``).
        wall: the total wall-clock time of the simulations, in seconds.

    Returns:
        A JSON-ready dict: ``command``, ``parameters`` (``kw`` with ``delta_prime`` defaulting to
        ``delta``), ``D``, ``seeds``, ``results`` (each result's ``to_dict()``), ``summary``, ``timings``
        (``total_wall`` and the mean time of each stage) and the run metadata.
    """
    per_seed = [r.to_dict() for r in results]
    stages = sorted({k for r in per_seed for k in r["timings"]})
    return {
        "command": "simulate",
        "parameters": dict(kw, delta_prime=kw["delta"] if kw["delta_prime"] is None else kw["delta_prime"]),
        "D": D,
        "seeds": list(seeds),
        "results": per_seed,
        "summary": summary,
        "timings": {"total_wall": wall,
                    "mean": {s: float(np.mean([r["timings"][s] for r in per_seed])) for s in stages}},
        **run_metadata(),
    }
