"""``solvable-attention solve``: the state evolution (``D → ∞``) at one setting or on a grid of settings.

The grid is the Cartesian product of the values given to ``--alpha``, ``--alpha-prime``, ``--delta``,
``--lam`` and ``--lam-prime`` (each takes one or more values; ``--lam-prime inf``: no adaptation); the
other model flags are fixed. Every point is validated before anything is solved. At fixed
``(α, α', Δ)`` a grid of several ``λ × λ'`` is solved by warm-started continuation
(:func:`state_evolution.sweep_state_evolution`, docs/theory.md §2.6, §4); a single point by
:func:`state_evolution.solve_state_evolution`. ``--pretrain-only``: the pre-training fixed point only
(:func:`state_evolution.solve_pretraining` / :func:`state_evolution.sweep_pretraining`).

Output: one table row per point (the parameters that vary; pre-training ``mse_S`` and ``E``; LoRA ``E'``,
``E'_0``, alignment and replicon; the largest relative residual of the two stages and the status);
``--json`` and ``--csv`` write per point every parameter, every metric of both stages
(:class:`~state_evolution.PretrainingSolution`, :class:`~state_evolution.FinetuningSolution`, docs/model.md
§4) and the solvers' status (converged, iterations, residual, method), with the run's metadata.

Exit status: 0 when every point converged, 1 when some point did not, 2 for a bad argument.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import math
import os
import tempfile

from ..campaigns.records import run_metadata, write_json_atomic
from .arguments import UsageError, add_model_arguments, check_writable

GRID = ("alpha", "alpha_prime", "delta", "lam", "lam_prime")  # flags taking several values, product order
PRETRAIN_GRID = ("alpha", "delta", "lam")
SETTING = ("T", "beta", "kappa0", "kappa", "activation", "noise")  # the pre-training setting besides α, Δ, λ
N_SAMPLES = 2 ** 14  # the theory's default Monte Carlo samples (state_evolution.solve_state_evolution)
SYMBOLS = {"alpha": "alpha", "alpha_prime": "alpha'", "delta": "delta", "lam": "lam", "lam_prime": "lam'",
           "delta_prime": "delta'"}
EXIT_NOT_CONVERGED = 1
PARAMETER_ORDER = ("alpha", "alpha_prime", "delta", "lam", "lam_prime", "T", "beta", "kappa0", "kappa", "gamma",
                   "activation", "noise", "delta_prime", "recalibrate")  # the flags' order

EPILOG = """\
exit status:
  0  every point converged
  1  some point did not converge (its row says which stage, and its residual)
  2  bad argument (nothing is solved)

--recalibrate applies to the points with a finite --lam-prime (lam' = inf is the unadapted model).
Monte Carlo samples: pre-training channel with --seed, LoRA channel with --seed + 1 (the identity
activation's pre-training channel is closed-form)."""


def register(subparsers) -> None:
    """Add the ``solve`` sub-parser.

    Args:
        subparsers: the sub-parsers action of the main parser (``add_subparsers()``).
    """
    p = subparsers.add_parser(
        "solve", help="state-evolution theory (D -> infinity) at one setting or a grid",
        description="Solve the state evolution (D -> infinity) of pre-training and rank-one LoRA at one\n"
                    "setting, or on the grid (Cartesian product) of the values given to --alpha,\n"
                    "--alpha-prime, --delta, --lam, --lam-prime; print one row per point; optionally\n"
                    "write JSON and CSV. Every point is validated before anything is solved.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(p, several=GRID, required=("alpha", "delta", "lam"), reuse=False)
    p.add_argument("--pretrain-only", action="store_true",
                   help="solve pre-training only (no LoRA stage; the fine-tuning flags are ignored)")
    p.add_argument("--rank", type=int, default=1,
                   help="LoRA rank r (default 1; r > 1 or --shift-rank > 1 uses the rank-r state evolution, "
                        "docs/theory.md §7.1, one point at a time; alignment is then √(update alignment))")
    p.add_argument("--shift-rank", type=int, default=1, help="rank r* of the teacher's shift (default 1)")
    p.add_argument("--n-samples", type=int, default=N_SAMPLES,
                   help=f"Monte Carlo samples of the output channels (default {N_SAMPLES})")
    p.add_argument("--seed", type=int, default=0, help="seed of the Monte Carlo samples (default 0)")
    p.add_argument("--json", metavar="PATH", help="write every parameter, metric and status per point here")
    p.add_argument("--csv", metavar="PATH", help="the same as a CSV table, one row per point")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    """Validate every point, solve them all, print the table, write ``--json``/``--csv``.

    Args:
        args: the parsed arguments of the ``solve`` command.

    Returns:
        0 when every point converged, :data:`EXIT_NOT_CONVERGED` (1) otherwise.

    Raises:
        UsageError: repeated grid values, missing ``--alpha-prime``, ``--n-samples < 2``, ``--seed < 0``,
            an unwritable output path.
        ValueError: a bad model parameter (the package's checks, before any solve).
    """
    points = grid_points(args)
    for flag, path in (("--json", args.json), ("--csv", args.csv)):
        if path:
            check_writable(path, flag=flag)
    if args.rank < 1 or args.shift_rank < 1:
        raise UsageError(f"--rank and --shift-rank must be integers >= 1, got {args.rank}, {args.shift_rank}")
    solutions = solve_points(points, pretrain_only=args.pretrain_only, n_samples=args.n_samples,
                             seed=args.seed, progress=not args.no_progress, rank=args.rank,
                             shift_rank=args.shift_rank)
    records = [point_record(pre, fine, solver, n_samples=args.n_samples, seed=args.seed)
               for pre, fine, solver in solutions]
    grid = grid_of(args)
    print(format_table(records, grid, args.pretrain_only))
    failed = sum(not r["converged"] for r in records)
    print(footer(records))
    metadata = run_metadata() if (args.json or args.csv) else {}
    if args.json:
        write_json_atomic(args.json, {"command": "solve", "grid": grid, "pretrain_only": args.pretrain_only,
                                      "n_points": len(records), "converged": failed == 0, "points": records,
                                      **metadata})
        print(f"wrote {args.json}")
    if args.csv:
        write_csv_atomic(args.csv, csv_rows(records, metadata))
        print(f"wrote {args.csv}")
    return 0 if failed == 0 else EXIT_NOT_CONVERGED


def grid_of(args) -> dict:
    """The values of the flags forming the grid.

    Args:
        args: the parsed arguments of the ``solve`` command.

    Returns:
        ``{keyword: [values]}`` for each keyword of :data:`GRID` (of :data:`PRETRAIN_GRID` with
        ``--pretrain-only``), in that order.
    """
    return {name: list(getattr(args, name)) for name in (PRETRAIN_GRID if args.pretrain_only else GRID)}


def grid_points(args) -> list[dict]:
    """Every point of the grid as the keyword arguments of :func:`state_evolution.solve_state_evolution`
    (or of :func:`state_evolution.solve_pretraining` with ``--pretrain-only``), ``λ'`` varying fastest,
    then ``λ``; each validated by :func:`solvable_attention.params.make_params` / ``PretrainParams``.

    Args:
        args: the parsed arguments of the ``solve`` command.

    Returns:
        One dict of keyword arguments per point of the Cartesian product of the grid flags, the fixed
        setting flags added (and ``gamma``, ``delta_prime`` and ``recalibrate`` without ``--pretrain-only``;
        ``recalibrate`` is ``False`` where ``lam_prime`` is infinite).

    Raises:
        UsageError: a grid flag with repeated values, no ``--alpha-prime`` without ``--pretrain-only``,
            ``--n-samples < 2`` or ``--seed < 0``.
        ValueError: a bad model parameter (names the keyword).
    """
    from solvable_attention.params import PretrainParams, make_params

    if not args.pretrain_only and args.alpha_prime is None:
        raise UsageError("--alpha-prime is required (unless --pretrain-only)")
    names = PRETRAIN_GRID if args.pretrain_only else GRID
    for name in names:
        values = getattr(args, name)
        if len(set(values)) != len(values):
            raise UsageError(f"--{name.replace('_', '-')} has repeated values: {values}")
    if args.n_samples < 2:
        raise UsageError(f"--n-samples must be an integer >= 2, got {args.n_samples}")
    if args.seed < 0:
        raise UsageError(f"--seed must be a non-negative integer, got {args.seed}")
    fixed = {name: getattr(args, name) for name in SETTING}
    if not args.pretrain_only:
        fixed.update(gamma=args.gamma, delta_prime=args.delta_prime)
    points = []
    for values in itertools.product(*(getattr(args, name) for name in names)):
        point = dict(zip(names, values), **fixed)
        if args.pretrain_only:
            PretrainParams(**point)
        else:
            point["recalibrate"] = bool(args.recalibrate) and math.isfinite(point["lam_prime"])
            make_params(**point)
        points.append(point)
    return points


def solve_points(points, *, pretrain_only: bool, n_samples: int, seed: int, progress: bool = True, rank: int = 1,
                 shift_rank: int = 1) -> list[tuple]:
    """Solve every point (as made by :func:`grid_points`, in that order) under one progress bar.

    Points sharing ``(α, α', Δ)`` (``(α, Δ)`` with ``pretrain_only``) and more than one ``(λ, λ')`` are
    solved together by warm-started continuation; a lone point on its own.

    Args:
        points: the points, as made by :func:`grid_points`.
        pretrain_only: solve the pre-training stage only.
        n_samples: Monte Carlo samples of the output channels.
        seed: seed of the Monte Carlo samples.
        progress: show the progress bar.
        rank: LoRA rank ``r``; with ``shift_rank`` not both 1, each point is solved on its own by
            :func:`state_evolution.solve_state_evolution` with ``rank``/``shift_rank`` (no warm sweep).
        shift_rank: the shift's rank ``r*``.

    Returns:
        ``[(PretrainingSolution, FinetuningSolution or None, solver name), ...]``, one per point, in order.
    """
    from tqdm import tqdm

    from state_evolution import (solve_pretraining, solve_state_evolution, sweep_pretraining,
                                 sweep_state_evolution)

    out = []
    stage_keys = ("alpha", "delta") if pretrain_only else ("alpha", "alpha_prime", "delta")
    with tqdm(total=len(points), desc="solve", unit="point", disable=not progress, dynamic_ncols=True) as bar:
        for _, group in itertools.groupby(points, key=lambda p: tuple(p[k] for k in stage_keys)):
            group = list(group)
            first = group[0]
            setting = {k: first[k] for k in SETTING}
            lams = list(dict.fromkeys(p["lam"] for p in group))
            common = dict(n_samples=n_samples, seed=seed, warn=False)
            bar.set_postfix_str(", ".join(f"{SYMBOLS[k]}={first[k]:g}" for k in stage_keys), refresh=True)
            if pretrain_only:
                if len(group) > 1:
                    pres = sweep_pretraining(lams, first["alpha"], first["delta"], progress=False, **common,
                                             **setting)
                    out += [(pre, None, "sweep_pretraining") for pre in pres]
                else:
                    pre = solve_pretraining(first["alpha"], first["delta"], first["lam"], **common, **setting)
                    out.append((pre, None, "solve_pretraining"))
                bar.update(len(group))
                continue
            fine_kw = dict(gamma=first["gamma"], delta_prime=first["delta_prime"])
            if (rank, shift_rank) != (1, 1):
                for p in group:
                    s = solve_state_evolution(p["alpha"], p["alpha_prime"], p["delta"], p["lam"],
                                              lam_prime=p["lam_prime"], rank=rank, shift_rank=shift_rank,
                                              **fine_kw, **common, **setting)
                    out.append((s.pretrain, s.finetune, f"solve_state_evolution(rank={rank}, shift_rank={shift_rank})"))
                    bar.update(1)
                continue
            if len(group) > 1:
                lam_primes = list(dict.fromkeys(p["lam_prime"] for p in group))
                recalibrate = any(p["recalibrate"] for p in group)  # applied to the finite λ' by the sweep
                sols = sweep_state_evolution(first["alpha"], first["alpha_prime"], first["delta"], lams, lam_primes,
                                             progress=False, recalibrate=recalibrate,
                                             on_point=lambda done: bar.update(len(done)), **fine_kw, **common,
                                             **setting)
                out += [(s.pretrain, s.finetune, "sweep_state_evolution") for s in sols]
            else:
                s = solve_state_evolution(first["alpha"], first["alpha_prime"], first["delta"], first["lam"],
                                          lam_prime=first["lam_prime"], recalibrate=first["recalibrate"],
                                          **fine_kw, **common, **setting)
                out.append((s.pretrain, s.finetune, "solve_state_evolution"))
                bar.update(1)
    return out


def point_record(pre, fine, solver: str, *, n_samples: int, seed: int) -> dict:
    """One point's record.

    Args:
        pre: the pre-training solution.
        fine: the fine-tuning solution, or ``None`` without a LoRA stage.
        solver: the name of the function that solved the point.
        n_samples: Monte Carlo samples used.
        seed: seed of the Monte Carlo samples.

    Returns:
        ``{"parameters", "solver", "converged", "pretrain", "finetune"}``: ``parameters`` (the validated
        settings of both stages in :data:`PARAMETER_ORDER`, ``n_samples``, ``seed``), ``solver``,
        ``converged`` (both stages), ``pretrain`` and ``finetune`` (every metric and status field of the
        solutions except ``params``; ``finetune`` is ``None`` without a LoRA stage).
    """
    given = dict(pre.params.to_dict(), **({} if fine is None else fine.params.to_dict()))
    parameters = {k: given[k] for k in PARAMETER_ORDER if k in given}
    parameters.update(n_samples=n_samples, seed=seed)
    stages = {"pretrain": pre, "finetune": fine}
    return {"parameters": parameters, "solver": solver,
            "converged": all(s.converged for s in stages.values() if s is not None),
            **{name: None if s is None else {k: v for k, v in s.to_dict().items() if k != "params"}
               for name, s in stages.items()}}


# --------------------------------------------------------------------------- table

PRETRAIN_COLUMNS = (("mse_S", "pretrain", "mse_S"), ("E", "pretrain", "test_error"))
FINETUNE_COLUMNS = (("E'", "finetune", "test_error"), ("E'_0", "finetune", "test_error_baseline"),
                    ("alignment", "finetune", "alignment"), ("replicon", "finetune", "replicon"))


def format_table(records, grid: dict, pretrain_only: bool) -> str:
    """The printed table.

    Args:
        records: the points' records (:func:`point_record`).
        grid: the grid's values (:func:`grid_of`); a keyword with more than one value is a column.
        pretrain_only: leave out the LoRA metrics' columns.

    Returns:
        The table as one string: a line with the fixed parameters, a header, then one row per point (the
        varying parameters, the metrics, the largest residual of the stages, the status).
    """
    varying = [k for k, v in grid.items() if len(v) > 1]
    params = records[0]["parameters"]
    fixed = [k for k in params if k not in varying]
    head = "  ".join(f"{SYMBOLS.get(k, k)}={_fmt(params[k])}" for k in fixed)
    metric_columns = PRETRAIN_COLUMNS + (() if pretrain_only else FINETUNE_COLUMNS)
    header = [SYMBOLS[k] for k in varying] + [c[0] for c in metric_columns] + ["residual", "status"]
    rows = []
    for r in records:
        stages = [r[s] for s in ("pretrain", "finetune") if r[s] is not None]
        rows.append([_fmt(r["parameters"][k]) for k in varying]
                    + [_fmt(r[stage][field]) for _, stage, field in metric_columns]
                    + [f"{max(s['residual'] for s in stages):.1e}", status(r)])
    widths = [max(len(x) for x in col) for col in zip(header, *rows)]
    lines = [head, "  ".join(h.rjust(w) if i < len(header) - 1 else h for i, (h, w) in enumerate(zip(header, widths)))]
    for row in rows:
        lines.append("  ".join(x.rjust(w) if i < len(row) - 1 else x for i, (x, w) in enumerate(zip(row, widths))))
    return "\n".join(lines)


def footer(records) -> str:
    """The line under the table: how many points converged, and how many of those leave their branch selection
    unresolved (two fixed points whose objectives lie within the Monte Carlo error; ``selection_resolved``).

    Args:
        records: the points' records (:func:`point_record`).

    Returns:
        ``"<k> of <n> points converged"``, with ``"; <u> of them with the branch selection not resolved"`` when
        ``u > 0``.
    """
    converged = [r for r in records if r["converged"]]
    text = f"{len(converged)} of {len(records)} points converged"
    unresolved = sum(1 for r in converged
                     if r.get("finetune") is not None and r["finetune"].get("selection_resolved") is False)
    return text + (f"; {unresolved} of them with the branch selection not resolved" if unresolved else "")


def status(record) -> str:
    """A point's status column.

    Args:
        record: the point's record (:func:`point_record`).

    Returns:
        ``"converged"``, or ``"not converged (<stage> <status>, residual <r>, ...)"`` naming the stages that did not
        and their status (``unstable_fixed_point``, ``max_iterations``, ...); with
        ``"; branch selection not resolved"`` appended where the LoRA solve could not decide between two fixed
        points at its sample count (``selection_resolved``; the JSON record's message names both).
    """
    failed = [f"{name} {record[name]['status']}, residual {record[name]['residual']:.1e}" if record[name].get("status")
              else f"{name} residual {record[name]['residual']:.1e}" for name in ("pretrain", "finetune")
              if record[name] is not None and not record[name]["converged"]]
    text = "converged" if not failed else f"not converged ({', '.join(failed)})"
    if record.get("finetune") is not None and record["finetune"].get("selection_resolved") is False:
        text += "; branch selection not resolved"
    return text


def _fmt(x) -> str:
    if isinstance(x, bool) or isinstance(x, str) or x is None:
        return str(x)
    if isinstance(x, float):
        return f"{x:.6g}"
    return str(x)


# --------------------------------------------------------------------------- CSV

def csv_rows(records, metadata: dict) -> list[dict]:
    """The ``--csv`` rows.

    Args:
        records: the points' records (:func:`point_record`).
        metadata: the run metadata (empty for none).

    Returns:
        One flat dict per point: the parameters, ``solver``, ``converged``, ``pretrain.<field>``,
        ``finetune.<field>``, and the run metadata as ``meta.<key>`` (nested keys joined by dots, lists
        and tuples as JSON).
    """
    meta = _flatten(metadata, "meta")
    rows = []
    for r in records:
        row = dict(r["parameters"], solver=r["solver"], converged=r["converged"])
        for stage in ("pretrain", "finetune"):
            if r[stage] is not None:
                row.update({f"{stage}.{k}": v for k, v in r[stage].items()})
        rows.append(dict(row, **meta))
    return rows


def _flatten(d: dict, prefix: str) -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}.{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key))
        else:
            out[key] = json.dumps(v) if isinstance(v, (list, tuple)) else v
    return out


def write_csv_atomic(path, rows: list[dict]) -> None:
    """Write ``rows`` as CSV to ``path`` atomically.

    A temporary file in the same folder (created when missing), ``fsync``, then ``os.replace``; on
    failure (any exception, re-raised) the temporary file is removed and the previous file is untouched.

    Args:
        path: the CSV file to write.
        rows: the rows as dicts; the first one's keys are the columns.

    Raises:
        OSError: the folder or file cannot be created or written.
        ValueError: a row has a key that the first row lacks (``csv.DictWriter``).
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
            f.flush()
            os.fsync(f.fileno())
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
