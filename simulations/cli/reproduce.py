"""``solvable-attention reproduce FIGURE``: one of the paper's figures (:mod:`simulations.figures`).

Theory curves and simulation markers, written as ``<out>/<figure>.png/.pdf/.csv/.json``; the simulations
are cached point by point under ``<out>/cache/`` (a rerun skips them). The figures accepted are the keys
of :data:`simulations.figures.FIGURES` (docs/model.md §7).
"""

from __future__ import annotations

import os
from pathlib import Path

from .arguments import UsageError, add_dask_argument, check_writable, make_executor


def register(subparsers) -> None:
    """Add the ``reproduce`` sub-parser (its help lists every figure accepted).

    Args:
        subparsers: the sub-parsers action of the main parser (``add_subparsers()``).
    """
    from ..figures import EXTRA_FIGURES, FIGURES

    p = subparsers.add_parser("reproduce", help="reproduce a figure of the paper (PNG, PDF, CSV, JSON)",
                              description="Reproduce one of the paper's figures: theory curves and simulation "
                                          "markers, written as <out>/<figure>.png/.pdf/.csv/.json; simulations "
                                          "are cached point by point under <out>/cache/ (a rerun skips them).")
    p.add_argument("figure", metavar="FIGURE", help=f"one of {', '.join(FIGURES)}, or 'all' (every figure of the paper in turn), "
                                                    f"or beyond the paper: {', '.join(EXTRA_FIGURES)}")
    p.add_argument("--quick", action="store_true",
                   help="coarse grid, small D, 2 seeds, fewer theory samples (minutes instead of hours)")
    p.add_argument("--out", default="figures", help="output folder (default: ./figures)")
    p.add_argument("--workers", type=int, default=1, help="parallel processes (default 1)")
    p.add_argument("--D", type=int, default=None, help="override the simulations' dimension")
    p.add_argument("--seeds", type=int, default=None, help="override the number of seeds per point")
    add_dask_argument(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    """Validate, reproduce the figure, print the files written and the timings.

    Args:
        args: the parsed arguments of the ``reproduce`` command.

    Returns:
        0 (exit status: success).

    Raises:
        UsageError: unknown or unavailable figure, ``--D < 2``, ``--seeds < 1``, bad ``--workers``/``--dask``,
            unwritable ``--out``.
    """
    from ..figures import EXTRA_FIGURES, FIGURES, FigureUnavailable, load

    if args.figure not in FIGURES and args.figure not in EXTRA_FIGURES and args.figure != "all":
        raise UsageError(f"unknown figure {args.figure!r}; choose from {', '.join([*FIGURES, *EXTRA_FIGURES])} "
                         "or all")
    executor = make_executor(args)
    if args.D is not None and args.D < 2:
        raise UsageError(f"--D must be an integer >= 2, got {args.D}")
    if args.seeds is not None and args.seeds < 1:
        raise UsageError(f"--seeds must be a positive integer, got {args.seeds}")
    check_writable(os.path.join(args.out, "x"), flag="--out")
    names = list(FIGURES) if args.figure == "all" else [args.figure]
    try:
        modules = [load(name) for name in names]
    except FigureUnavailable as exc:
        raise UsageError(str(exc)) from None
    overrides = {k: v for k, v in (("D", args.D), ("seeds", args.seeds)) if v is not None}
    summary = {}
    for name, module in zip(names, modules):
        result = module.reproduce(Path(args.out), quick=args.quick, executor=executor,
                                  progress=not args.no_progress, **overrides)
        for path in result["paths"].values():
            print(f"wrote {path}")
        timings = result["timings"]
        print(f"{name} timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()
                                                  if isinstance(v, (int, float))))
        summary[name] = timings
    if len(names) > 1:
        from ..campaigns.records import run_metadata, write_json_atomic

        total = sum(t["total_s"] for t in summary.values())
        write_json_atomic(Path(args.out) / "all.json", {"figures": summary, "total_s": total,
                                                        "quick": bool(args.quick), **run_metadata()})
        print(f"all figures: {total:.1f} s; wrote {Path(args.out) / 'all.json'}")
    return 0
