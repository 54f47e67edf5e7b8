"""Command line interface: ``solvable-attention <command> [options]``.

Commands register themselves in :data:`COMMANDS`: a function ``register(subparsers)``
that adds one sub-parser and sets ``func=<handler(args) -> exit code>``. Adding a
command is one register function, one handler and one entry in :data:`COMMANDS`.

``reproduce FIGURE``: one of the paper's figures (:mod:`simulations.figures`).
``convergence``: theory vs simulation as ``D`` grows at one setting (:mod:`simulations.campaigns.convergence`).

``simulate``: train both stages of the model at finite ``D`` over several seeds
(:func:`simulations.simulate`), print mean ± standard error of every metric, and
optionally write everything (parameters, per-seed results, summary, versions,
machine, timings) to a JSON file, atomically.

Exit codes: 0 success, 2 bad arguments (one line ``error: <message>`` on stderr).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from .campaigns.records import run_metadata, write_json_atomic
from .campaigns.resumable import Executor

PRETRAIN_METRICS = ("m", "q", "rho0", "mse_S", "test_error", "train_loss", "rank_fraction")
FINETUNE_METRICS = ("m", "q", "rho_v", "alignment", "test_error", "test_error_baseline", "c")
EXIT_USAGE = 2


class UsageError(Exception):
    """A bad command-line argument; reported as ``error: <message>``, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """``ArgumentParser`` that raises :class:`UsageError` instead of printing usage and exiting."""

    def error(self, message):
        raise UsageError(message)


# --------------------------------------------------------------------------- entry point

def main(argv=None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        return int(args.func(args) or 0)
    except (UsageError, ValueError) as exc:  # ValueError: the package's parameter checks
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="solvable-attention",
                     description="Solvable attention model: finite-D simulations and theory.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in COMMANDS:
        register(subparsers)
    return parser


# --------------------------------------------------------------------------- simulate

def register_simulate(subparsers) -> None:
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
    p.set_defaults(func=cmd_simulate)


def add_model_arguments(p) -> None:
    """The model's parameters (docs/model.md §5); shared by the commands that take a setting."""
    p.add_argument("--alpha", type=float, required=True, help="pre-training samples / D^2")
    p.add_argument("--alpha-prime", type=float, required=True, help="fine-tuning samples / D")
    p.add_argument("--delta", type=float, required=True, help="pre-training label-noise variance")
    p.add_argument("--lam", type=float, required=True, help="pre-training nuclear-norm strength")
    p.add_argument("--lam-prime", type=float, default=1.0,
                   help="LoRA ridge strength ('inf': no adaptation; default 1)")
    p.add_argument("--T", type=int, default=3, help="tokens (default 3)")
    p.add_argument("--beta", type=float, default=1.0, help="inverse temperature (default 1)")
    p.add_argument("--kappa0", type=float, default=1.0, help="teacher width ratio (default 1)")
    p.add_argument("--kappa", type=float, default=1.0, help="student width ratio (default 1)")
    p.add_argument("--gamma", type=float, default=1.0, help="fine-tuning direction strength")
    p.add_argument("--activation", choices=("softmax", "identity"), default="softmax")
    p.add_argument("--delta-prime", type=float, default=None,
                   help="fine-tuning label noise (default: --delta)")
    p.add_argument("--noise", choices=("logits", "output"), default="logits",
                   help="where the label noise enters (default: logits)")
    p.add_argument("--reuse", action="store_true", help="fine-tune on pre-training inputs")
    p.add_argument("--recalibrate", action="store_true", help="also train c in c*S + u u^T/sqrt(D)")


def add_seed_arguments(p) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument("--seeds", type=int, default=4, metavar="N", help="seeds 0..N-1 (default 4)")
    group.add_argument("--seed-list", type=int, nargs="+", metavar="SEED", help="explicit seeds")


def model_kwargs(args) -> dict:
    """Keyword arguments of :func:`simulations.simulate` from parsed arguments (except D, seed)."""
    names = ("alpha", "alpha_prime", "delta", "lam", "lam_prime", "T", "beta", "kappa0", "kappa",
             "gamma", "activation", "delta_prime", "noise", "reuse", "recalibrate")
    kw = {name: getattr(args, name) for name in names}
    for name in ("method", "n_test", "pretrain_tol"):
        if hasattr(args, name):
            kw[name] = getattr(args, name)
    kw["x64"] = not getattr(args, "float32", False)
    return kw


def seed_list(args) -> list[int]:
    seeds = list(args.seed_list) if args.seed_list is not None else list(range(args.seeds))
    if not seeds:
        raise UsageError(f"--seeds must be a positive integer, got {args.seeds}")
    if min(seeds) < 0:
        raise UsageError(f"seeds must be non-negative integers, got {min(seeds)}")
    if len(set(seeds)) != len(seeds):
        raise UsageError(f"--seed-list has repeated seeds: {seeds}")
    return seeds


def validate(D, kw) -> None:
    """Run the package's parameter checks before any work (raises ``ValueError``)."""
    from solvable_attention.params import check_dimension, make_params

    check_dimension(D)
    make_params(**{k: v for k, v in kw.items() if k not in ("method", "n_test", "pretrain_tol", "x64")})
    if kw.get("n_test", 1) < 1:
        raise ValueError(f"n_test must be a positive integer, got {kw['n_test']}")
    if not kw.get("pretrain_tol", 1.0) > 0:
        raise ValueError(f"pretrain_tol must be > 0, got {kw['pretrain_tol']}")


def cmd_simulate(args) -> int:
    kw = model_kwargs(args)
    seeds = seed_list(args)
    validate(args.D, kw)
    if args.json:
        check_writable(args.json)
    t0 = time.perf_counter()
    results = run_seeds(args.D, seeds, kw)
    wall = time.perf_counter() - t0

    from .simulator.summary import summarize
    summary = summarize(results)
    print(format_report(args.D, seeds, kw, results, summary, wall))
    if args.json:
        write_json_atomic(args.json, simulate_payload(args.D, seeds, kw, results, summary, wall))
        print(f"wrote {args.json}")
    return 0


def run_seeds(D, seeds, kw) -> list:
    """``simulate(D, seed=s, **kw)`` for each seed under a tqdm bar (pre-training in the postfix)."""
    from tqdm import tqdm

    from .simulator import simulate

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


# --------------------------------------------------------------------------- report

def format_report(D, seeds, kw, results, summary, wall) -> str:
    from .simulator.summary import format_mean_se

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


# --------------------------------------------------------------------------- JSON output

def simulate_payload(D, seeds, kw, results, summary, wall) -> dict:
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


def check_writable(path, flag: str = "--json") -> None:
    """Fail early (before hours of work) when ``path``'s directory cannot be written."""
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise UsageError(f"{flag} {path!r} is a directory")
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create directory for {flag} {path!r}: {exc.strerror}") from None
    if not os.access(directory, os.W_OK):
        raise UsageError(f"cannot write to directory {directory!r} ({flag})")


# --------------------------------------------------------------------------- reproduce

def register_reproduce(subparsers) -> None:
    from .figures import FIGURES

    p = subparsers.add_parser("reproduce", help="reproduce a figure of the paper (PNG, PDF, CSV, JSON)",
                              description="Reproduce one of the paper's figures: theory curves and simulation "
                                          "markers, written as <out>/<figure>.png/.pdf/.csv/.json; simulations "
                                          "are cached point by point under <out>/cache/ (a rerun skips them).")
    p.add_argument("figure", metavar="FIGURE", help=f"one of {', '.join(FIGURES)}")
    p.add_argument("--quick", action="store_true",
                   help="coarse grid, small D, 2 seeds, fewer theory samples (minutes instead of hours)")
    p.add_argument("--out", default="figures", help="output folder (default: ./figures)")
    p.add_argument("--workers", type=int, default=1, help="parallel processes (default 1)")
    p.add_argument("--D", type=int, default=None, help="override the simulations' dimension")
    p.add_argument("--seeds", type=int, default=None, help="override the number of seeds per point")
    add_dask_argument(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_reproduce)


def add_dask_argument(p) -> None:
    p.add_argument("--dask", nargs="?", const="local", default=None, metavar="SCHEDULER",
                   help="run the sweeps on Dask: a local cluster of --workers processes, or the scheduler "
                        "address given (tcp://host:8786); needs the [distributed] extra")


def make_executor(args) -> Executor:
    """``--workers N [--dask [ADDRESS]]``: where the command's points run (:class:`Executor`)."""
    if args.workers < 1:
        raise UsageError(f"--workers must be a positive integer, got {args.workers}")
    if args.dask is None:
        return Executor(workers=args.workers)
    try:
        import dask.distributed  # noqa: F401
    except ImportError:
        raise UsageError("--dask needs the optional extra: pip install -e '.[distributed]'") from None
    return Executor(workers=args.workers, backend="dask", address=None if args.dask == "local" else args.dask)


def cmd_reproduce(args) -> int:
    from .figures import FIGURES, FigureUnavailable, load

    if args.figure not in FIGURES:
        raise UsageError(f"unknown figure {args.figure!r}; choose from {', '.join(FIGURES)}")
    executor = make_executor(args)
    if args.D is not None and args.D < 2:
        raise UsageError(f"--D must be an integer >= 2, got {args.D}")
    if args.seeds is not None and args.seeds < 1:
        raise UsageError(f"--seeds must be a positive integer, got {args.seeds}")
    check_writable(os.path.join(args.out, "x"), flag="--out")
    try:
        module = load(args.figure)
    except FigureUnavailable as exc:
        raise UsageError(str(exc)) from None
    overrides = {k: v for k, v in (("D", args.D), ("seeds", args.seeds)) if v is not None}
    from pathlib import Path

    result = module.reproduce(Path(args.out), quick=args.quick, executor=executor,
                              progress=not args.no_progress, **overrides)
    for ext, path in result["paths"].items():
        print(f"wrote {path}")
    print("timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in result["timings"].items()))
    return 0


# --------------------------------------------------------------------------- convergence

def register_convergence(subparsers) -> None:
    p = subparsers.add_parser("convergence", help="finite-size study: theory vs simulation as D grows",
                              description="Simulate one setting at several D over seeds, solve the state "
                                          "evolution, print the table (mean, s.e., gap, z per metric and D) and "
                                          "the D -> infinity extrapolation; write CSV, JSON and plots to --out.")
    add_model_arguments(p)
    p.add_argument("--D", type=int, nargs="+", default=[50, 100, 150], help="dimensions (>= 2 values)")
    add_seed_arguments(p)
    p.add_argument("--out", default="convergence", help="output folder (default: ./convergence)")
    p.add_argument("--workers", type=int, default=1, help="parallel processes (default 1)")
    p.add_argument("--n-test", type=int, default=5000, help="fresh samples per simulated test error")
    p.add_argument("--mc-replicas", type=int, default=1,
                   help="independent Monte Carlo seeds of the theory (its s.e. enters the z-scores)")
    p.add_argument("--power", type=float, default=1.0, help="extrapolation in D^-power (default 1: 1/D)")
    add_dask_argument(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_convergence)


def cmd_convergence(args) -> int:
    kw = model_kwargs(args)
    seeds = seed_list(args)
    if kw.pop("reuse"):
        raise UsageError("--reuse is not supported by convergence (the theory of the reuse variant is separate)")
    for name in ("method", "pretrain_tol", "x64"):
        kw.pop(name, None)
    kw["n_test"] = args.n_test
    Ds = sorted(set(args.D))
    if len(Ds) < 2:
        raise UsageError(f"--D needs at least 2 distinct dimensions to extrapolate, got {args.D}")
    for D in Ds:
        validate(D, kw)
    executor = make_executor(args)
    if args.mc_replicas < 1:
        raise UsageError(f"--mc-replicas must be a positive integer, got {args.mc_replicas}")
    if not args.power > 0:
        raise UsageError(f"--power must be > 0, got {args.power}")
    check_writable(os.path.join(args.out, "x"), flag="--out")
    from .campaigns.convergence import run_comparison

    result = run_comparison(kw, Ds, seeds, out_dir=args.out, executor=executor, mc_replicas=args.mc_replicas,
                            power=args.power, progress=not args.no_progress)
    print(result["table"].format())
    for path in result["paths"].values():
        print(f"wrote {path}")
    return 0


COMMANDS = (register_simulate, register_reproduce, register_convergence)

if __name__ == "__main__":
    sys.exit(main())
