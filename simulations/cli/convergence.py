"""``solvable-attention convergence``: theory vs simulation as ``D`` grows, at one setting.

Simulates the setting at several ``D`` over seeds, solves the state evolution, prints the table (mean,
s.e., gap, z per metric and ``D``) and the ``D → ∞`` extrapolation, and writes CSV, JSON and plots
(:mod:`simulations.campaigns.convergence`).
"""

from __future__ import annotations

import os
import sys

from .arguments import (UsageError, add_dask_argument, add_model_arguments, add_seed_arguments, check_writable,
                        make_executor, model_kwargs, seed_list, validate)
from ..campaigns.statistics import MIN_SEEDS


def register(subparsers) -> None:
    """Add the ``convergence`` sub-parser.

    Args:
        subparsers: the sub-parsers action of the main parser (``add_subparsers()``).
    """
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
    p.add_argument("--mc-replicas", type=int, default=4,
                   help="independent Monte Carlo seeds of the theory, whose spread estimates its standard "
                        "error (enters the z-scores; default 4)")
    p.add_argument("--power", type=float, default=1.0, help="extrapolation in D^-power (default 1: 1/D)")
    add_dask_argument(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    """Validate everything, run the comparison, print its table and the files written.

    Args:
        args: the parsed arguments of the ``convergence`` command.

    Returns:
        0 (exit status: success).

    Raises:
        UsageError: ``--reuse``, bad seeds (:func:`~simulations.cli.arguments.seed_list`), fewer than 2
            distinct ``--D``, bad ``--workers``/``--dask``/``--mc-replicas``/``--power``, unwritable ``--out``.
        ValueError: a bad model parameter (the package's checks).
    """
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
    from ..campaigns.convergence import run_comparison

    result = run_comparison(kw, Ds, seeds, out_dir=args.out, executor=executor, mc_replicas=args.mc_replicas,
                            power=args.power, progress=not args.no_progress)
    print(result["table"].format())
    if result["table"].few_seeds:
        print(f"warning: fewer than {MIN_SEEDS} seeds per D: the standard errors and z-scores above are poorly "
              f"estimated (use --seeds {MIN_SEEDS} or more)", file=sys.stderr)
    for path in result["paths"].values():
        print(f"wrote {path}")
    return 0
