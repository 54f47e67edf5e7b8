"""Rank-r LoRA: the state evolution (docs/theory.md §7.1) against the finite-D simulations as D grows.

    python -m simulations.campaigns.rank_validation [--records results/full_finetuning results/full_finetuning_r2]
        [--theory-dir results/rank_validation/theory] [--report docs/validation_rank.md]

The simulations are the records of :mod:`simulations.campaigns.full_finetuning_scaling` (one pre-training per
``(D, seed)`` fine-tuned by rank-``r`` LoRA on the same data; shift of rank ``r*``). For every
``(activation, r*, r)`` the theory is solved once (cached, one JSON per point, written atomically) and compared
with the simulations' mean ± s.e. per ``D`` and two extrapolations to ``D → ∞``:

* ``a + b/D`` (weighted least squares over the per-``D`` means);
* the same with a control variate: each run's ``λ_max(ρ_V) − 1`` (``ρ_V = VᵀV/D`` of its teacher, recomputed
  from the seed), pooled over runs, ``y = a + b/D + c (λ_max(ρ_V) − 1)``. With ``r < r*`` the estimator learns the
  strongest directions of the shift, whose excess ``λ_max(ρ_V) − 1 ~ D^{-1/2}`` does not average out: its
  finite-size correction is ``O(D^{-1/2})`` and the plain ``1/D`` fit is biased (docs/validation_rank.md).

A theory value passes when it lies within 3 s.e. of an extrapolation or within 3 % of it. The judged
extrapolation is the control-variate one for ``r < r*`` (where the selection of the strongest directions is the
leading finite-size effect) and ``a + b/D`` for ``r ≥ r*`` (every direction of the shift is learnt; the
fluctuations of ``ρ_V`` enter at first order with zero mean); both are reported.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import warnings
from pathlib import Path

import numpy as np

from .records import run_metadata, write_file_atomic, write_json_atomic

METRICS = ("test_error", "update_alignment")
SETTING = dict(alpha=0.1, alpha_prime=3.0, delta=0.5, lam=0.05, lam_prime=1.0)


def shift_gram_top(D: int, seed: int, shift_rank: int) -> float:
    """``λ_max(VᵀV/D)`` of the teacher the simulator draws for ``(D, seed, r*)`` (its own sampling functions).

    Args:
        D: the dimension.
        seed: the simulation's seed.
        shift_rank: ``r*``.

    Returns:
        The largest eigenvalue of ``ρ_V``.
    """
    import jax
    import jax.numpy as jnp

    from simulations.simulator.two_stage import _TEACHER
    from solvable_attention.data import sample_teacher
    from solvable_attention.runtime import float64

    with float64():
        key = jax.random.fold_in(jax.random.PRNGKey(seed), _TEACHER)
        teacher = sample_teacher(key, D, 1.0, 1.0, jnp.float64, shift_rank=shift_rank)
        V = np.asarray(teacher.V)
    return float(np.linalg.eigvalsh(V.T @ V / D)[-1])


def load_records(folders) -> list[dict]:
    """The campaign records of every folder.

    Args:
        folders: folders of :mod:`simulations.campaigns.full_finetuning_scaling` records.

    Returns:
        The records that have a ``point`` and a ``result``.
    """
    out = []
    for folder in folders:
        for p in sorted(Path(folder).glob("*.json")):
            d = json.loads(p.read_text())
            if "point" in d and "result" in d:
                out.append(d)
    return out


def theory_path(folder: Path, activation: str, shift_rank: int, rank: int, lam: float, lam_prime: float) -> Path:
    """The cache file of one theory point.

    Args:
        folder: the cache folder.
        activation, shift_rank, rank, lam, lam_prime: the point.

    Returns:
        ``folder/{activation}_lam{λ}_lp{λ'}_rs{r*}_r{r}.json``.
    """
    return folder / f"{activation}_lam{lam:g}_lp{lam_prime:g}_rs{shift_rank}_r{rank}.json"


def theory_point(activation: str, shift_rank: int, rank: int, folder: Path, lam: float = SETTING["lam"],
                 lam_prime: float = SETTING["lam_prime"]) -> dict:
    """The rank-r state evolution at :data:`SETTING` with ``λ``, ``λ'`` (cached in ``folder``; written atomically).

    Args:
        activation: ``"softmax"`` or ``"identity"``.
        shift_rank: ``r*``.
        rank: ``r``.
        folder: the cache folder.
        lam: pre-training ``λ``.
        lam_prime: ``λ'``.

    Returns:
        The solution's ``to_dict()`` (with ``update_alignment`` also at ``r = r* = 1``).
    """
    path = theory_path(folder, activation, shift_rank, rank, lam, lam_prime)
    if path.exists():
        return json.loads(path.read_text())
    from state_evolution import solve_state_evolution

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = solve_state_evolution(SETTING["alpha"], SETTING["alpha_prime"], SETTING["delta"], lam,
                                  lam_prime=lam_prime, activation=activation, rank=rank,
                                  shift_rank=shift_rank, warn=False)
    f = s.finetune
    d = f.to_dict()
    if (rank, shift_rank) == (1, 1):
        d["update_alignment"] = f.alignment ** 2
    d["activation"] = activation
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, d)
    return d


def _wls(X, y, w):
    cov = np.linalg.inv(X.T @ (X * w[:, None]))
    coef = cov @ (X.T @ (w * y))
    return coef, np.sqrt(np.diag(cov))


def extrapolations(runs) -> dict:
    """``D → ∞`` values of one metric from its runs.

    Args:
        runs: ``[(D, value, λ_max(ρ_V) − 1)]``, one per simulation.

    Returns:
        ``{"per_D": {D: (mean, se, n)}, "inverse_D": (a, se), "control_variate": (a, se, c)}``; the control-variate
        fit is ordinary least squares on the runs with the residual variance pooled (one ``σ²`` for all).
    """
    runs = np.asarray(runs, float)
    per_D = {}
    for D in sorted(set(runs[:, 0])):
        v = runs[runs[:, 0] == D, 1]
        per_D[int(D)] = (float(v.mean()), float(v.std(ddof=1) / math.sqrt(len(v))), int(len(v)))
    Ds = np.array(sorted(per_D))
    means = np.array([per_D[D][0] for D in Ds])
    ses = np.array([max(per_D[D][1], 1e-12) for D in Ds])
    (a, b), (sa, _) = _wls(np.stack([np.ones_like(Ds, float), 1.0 / Ds], 1), means, 1.0 / ses ** 2)
    X = np.stack([np.ones(len(runs)), 1.0 / runs[:, 0], runs[:, 2]], 1)
    coef, *_ = np.linalg.lstsq(X, runs[:, 1], rcond=None)
    resid = runs[:, 1] - X @ coef
    sigma2 = float(resid @ resid) / max(len(runs) - 3, 1)
    cov = sigma2 * np.linalg.inv(X.T @ X)
    return {"per_D": per_D, "inverse_D": (float(a), float(sa)),
            "control_variate": (float(coef[0]), float(math.sqrt(cov[0, 0])), float(coef[2]))}


def verdict(theory: float, est: tuple) -> bool:
    """The acceptance rule: within 3 s.e. or 3 % of the extrapolation.

    Args:
        theory: the theory value.
        est: ``(a, se, ...)``, the extrapolation.

    Returns:
        Whether the theory passes.
    """
    a, se = est[0], est[1]
    return abs(theory - a) <= 3 * se or abs(theory - a) <= 0.03 * abs(a)


def build(records, theory_dir: Path, ranks=(1, 2, 4)):
    """Group the records per ``(activation, λ, λ', r*, r)`` (``r`` in ``ranks``), attach theory and extrapolations.

    Args:
        records: the campaign records.
        theory_dir: the theory cache.
        ranks: the LoRA ranks to compare.

    Returns:
        One row per ``(activation, λ, λ', r*, r)`` with the theory, the extrapolations and the verdicts per metric.
    """
    groups = {}
    tops = {}
    for rec in records:
        p, res = rec["point"], rec["result"]
        rs = int(p.get("shift_rank", 1))
        key_top = (p["D"], p["seed"], rs)
        if key_top not in tops:
            tops[key_top] = shift_gram_top(p["D"], p["seed"], rs) - 1.0
        for name, v in res["variants"].items():
            if not name.startswith("lora_r"):
                continue
            r = int(name[len("lora_r"):])
            if r not in ranks:
                continue
            lam, lp = float(p.get("lam", SETTING["lam"])), float(p.get("lam_prime", SETTING["lam_prime"]))
            g = groups.setdefault((p["activation"], lam, lp, rs, r), {m: [] for m in METRICS})
            for m in METRICS:
                g[m].append((p["D"], v[m], tops[key_top]))
    rows = []
    for (act, lam, lp, rs, r), g in sorted(groups.items()):
        th = theory_point(act, rs, r, theory_dir, lam, lp)
        row = {"activation": act, "lam": lam, "lam_prime": lp, "shift_rank": rs, "rank": r,
               "theory_status": th["status"],
               "replicon": th["replicon"], "metrics": {}}
        for m in METRICS:
            ex = extrapolations(g[m])
            t = float(th[m])
            p1, p2 = verdict(t, ex["inverse_D"]), verdict(t, ex["control_variate"])
            row["metrics"][m] = dict(theory=t, **ex, pass_inverse_D=p1, pass_control_variate=p2,
                                     judged_by="control_variate" if r < rs else "inverse_D",
                                     passed=p2 if r < rs else p1)
        rows.append(row)
    return rows


def report(rows) -> str:
    """The Markdown tables.

    Args:
        rows: the rows of :func:`build`.

    Returns:
        The tables, one per activation.
    """
    lines = []
    settings = sorted({(r.get("lam", SETTING["lam"]), r.get("lam_prime", SETTING["lam_prime"])) for r in rows})
    for (lam, lp), act in ((s, a) for s in settings for a in ("softmax", "identity")):
        sub = [r for r in rows if r["activation"] == act
               and (r.get("lam", SETTING["lam"]), r.get("lam_prime", SETTING["lam_prime"])) == (lam, lp)]
        if not sub:
            continue
        Ds = sorted({D for r in sub for D in r["metrics"]["test_error"]["per_D"]})
        lines += [f"### {act}, λ = {lam:g}, λ' = {lp:g}", "",
                  "| r* | r | metric | " + " | ".join(f"D={D}" for D in Ds)
                  + " | a + b/D | a + b/D + c·(λmax(ρ_V)−1) | theory | status, replicon | verdict |",
                  "|" + "---|" * (len(Ds) + 8)]
        for r in sub:
            for m in METRICS:
                d = r["metrics"][m]
                cells = [f"{d['per_D'][D][0]:.4f} ± {d['per_D'][D][1]:.4f}" if D in d["per_D"] else "—" for D in Ds]
                a1, s1 = d["inverse_D"]
                a2, s2, _ = d["control_variate"]
                ok = ("**pass**" if d["passed"] else "**fail**") + " (" + ("pass" if d["pass_inverse_D"] else "fail") \
                    + " / " + ("pass" if d["pass_control_variate"] else "fail") + ")"
                lines.append(f"| {r['shift_rank']} | {r['rank']} | {m} | " + " | ".join(cells)
                             + f" | {a1:.4f} ± {s1:.4f} | {a2:.4f} ± {s2:.4f} | {d['theory']:.4f} | "
                             f"{r['theory_status']}, {r['replicon']:.2f} | {ok} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    """Command line: compare, write the report's tables (Markdown) and the JSON behind them.

    Args:
        argv: the arguments (default ``sys.argv[1:]``).

    Returns:
        0.
    """
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", nargs="+", default=["results/full_finetuning", "results/full_finetuning_r2"])
    ap.add_argument("--theory-dir", default="results/rank_validation/theory")
    ap.add_argument("--ranks", nargs="+", type=int, default=[1, 2, 4], help="LoRA ranks to compare")
    ap.add_argument("--out", default="results/rank_validation/tables.md",
                    help="the tables (Markdown); a JSON with every number is written next to it")
    args = ap.parse_args(argv)
    rows = build(load_records(args.records), Path(args.theory_dir), tuple(args.ranks))
    text = report(rows)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_file_atomic(args.out, lambda path: Path(path).write_text(text + "\n"))
    write_json_atomic(os.path.splitext(args.out)[0] + ".json", {"rows": rows, "setting": SETTING, **run_metadata()})
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
