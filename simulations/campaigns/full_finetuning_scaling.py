"""Full fine-tuning as ``D`` grows: what the nuclear and ridge penalties learn at ``n' = α'D`` (docs/model.md §6).

    python -m simulations.campaigns.full_finetuning_scaling --workers 2 [--Ds 50 100 150 200] [--seeds 8]

For each activation, one pre-training per ``(D, seed)`` is fine-tuned five ways on the same data (common
random numbers): rank-one LoRA (``λ'``), rank-two LoRA (``λ'``), full nuclear (``λ'``: the ``r → ∞`` end of
the LoRA family), full ridge (``λ'_F``) and no adaptation. Per ``D`` the report gives mean ± s.e. over
seeds of ``E'``, the gain ``E'_0 − E'`` (paired), the update alignment and the update's rank, then fits
``E' = a + b/D`` (the ``D → ∞`` value ``a`` with its s.e.) and the gain of the ridge update against
``D^{-p}`` and the update's rank against ``D^p`` (log-log slopes). Records are written one per point (resumable); the report goes to
``--report`` (Markdown) with a JSON next to it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from solvable_attention.averages import mean_se

from .records import run_metadata, write_file_atomic, write_json_atomic
from .resumable import Executor, run_points

VARIANTS = {"lora_r1": dict(rank=1), "lora_r2": dict(rank=2), "lora_r4": dict(rank=4),
            "full_nuclear": dict(finetune="full_nuclear"), "full_ridge": dict(finetune="full_ridge")}
# The variants of a rank-one shift (r* = 1); a shift of rank r* > 1 adds rank-4 LoRA.
DEFAULT_VARIANTS = ("lora_r1", "lora_r2", "full_nuclear", "full_ridge")
METRICS = ("test_error", "test_error_baseline", "update_alignment", "update_rank", "update_norm")


def full_point(D, seed, activation, alpha, alpha_prime, delta, lam, lam_prime, lam_ridge, n_test=5000,
               shift_rank=1, variants=None) -> dict:
    """One pre-training fine-tuned by every variant of :data:`VARIANTS`: ``{variant: {metric: value}}``.

    Args:
        D: the dimension.
        seed: the seed.
        activation: ``"softmax"`` or ``"identity"``.
        alpha: ``α``.
        alpha_prime: ``α'``.
        delta: ``Δ``.
        lam: ``λ``.
        lam_prime: ``λ'`` of the LoRA and nuclear variants.
        lam_ridge: ``λ'_F`` of the ridge variant.
        n_test: test samples.
        shift_rank: ``r*``, the rank of the teacher's shift.
        variants: names of :data:`VARIANTS` to run (default :data:`DEFAULT_VARIANTS`).

    Returns:
        ``{"variants": {name: {metric: value, "converged": bool}}, "rho_v": ρ_v}``.
    """
    from simulations import simulate_variants

    names = list(DEFAULT_VARIANTS if variants is None else variants)
    specs = [dict(VARIANTS[n], lam_prime=lam_ridge if VARIANTS[n].get("finetune") == "full_ridge" else lam_prime)
             for n in names]
    res = simulate_variants(D, alpha, alpha_prime, delta, lam, variants=specs, seed=seed, activation=activation,
                            n_test=n_test, shift_rank=shift_rank)
    out = {}
    for name, r in zip(names, res):
        f = r.finetune
        out[name] = {m: float(getattr(f, m)) for m in METRICS}
        out[name]["converged"] = bool(r.converged)
    return {"variants": out, "rho_v": float(res[0].finetune.rho_v)}


def _fit_inverse_D(Ds, means, ses):
    """Weighted least squares of ``y = a + b/D``: ``(a, se_a, b)``."""
    x, y, w = 1.0 / np.asarray(Ds, float), np.asarray(means, float), 1.0 / np.maximum(np.asarray(ses, float), 1e-12) ** 2
    A = np.stack([np.ones_like(x), x], 1)
    cov = np.linalg.inv(A.T @ (A * w[:, None]))
    a, b = cov @ (A.T @ (w * y))
    return float(a), float(np.sqrt(cov[0, 0])), float(b)


def report(records, Ds) -> tuple[str, dict]:
    """The Markdown report and its data from the records (see the module docstring).

    Args:
        records: the records of :func:`full_point` (``run_points``).
        Ds: the dimensions, in order.

    Returns:
        ``(markdown, {activation: {variant: {metric: {"D", "mean", "se", "fit"}, "gain_log_slope"?}}})``.
    """
    lines, data = [], {}
    groups = sorted({(r["point"]["activation"], r["point"].get("shift_rank", 1)) for r in records})
    for act, r_star in groups:
        group = [r for r in records if r["point"]["activation"] == act and r["point"].get("shift_rank", 1) == r_star]
        names = [n for n in VARIANTS if n in group[0]["result"]["variants"]]
        key = act if r_star == 1 else f"{act}, shift_rank={r_star}"
        lines += [f"### activation = {act}, shift rank r* = {r_star}", "",
                  "| variant | metric | " + " | ".join(f"D={D}" for D in Ds) + " | fit a + b/D: a (D → ∞) |",
                  "|---|---|" + "---|" * len(Ds) + "---|"]
        data[key] = {}
        for name in names:
            rows = {}
            for metric in ("test_error", "gain", "update_alignment", "update_rank"):
                cells, means, ses, used = [], [], [], []
                for D in Ds:
                    vals = []
                    for r in group:
                        p, v = r["point"], r["result"]["variants"][name]
                        if p["D"] == D:
                            vals.append(v["test_error_baseline"] - v["test_error"] if metric == "gain" else v[metric])
                    if not vals:
                        cells.append("—")
                        continue
                    m = mean_se(vals)
                    cells.append(f"{m.mean:.4g} ± {m.se:.2g} (n={m.n})")
                    means.append(m.mean)
                    ses.append(m.se)
                    used.append(D)
                fit = _fit_inverse_D(used, means, ses) if len(used) >= 3 and metric != "update_rank" else None
                rows[metric] = {"D": used, "mean": means, "se": ses, "fit": fit}
                fit_cell = f"{fit[0]:.4g} ± {fit[1]:.2g}" if fit else "—"
                lines.append(f"| {name} | {metric} | " + " | ".join(cells) + f" | {fit_cell} |")
            rank = rows["update_rank"]
            if len(rank["D"]) >= 3 and min(rank["mean"]) > 0 and max(rank["mean"]) > min(rank["mean"]):
                rows["rank_log_slope"] = float(np.polyfit(np.log(rank["D"]), np.log(rank["mean"]), 1)[0])
                lines.append(f"| {name} | rank ∝ D^p: p | " + " | ".join("" for _ in Ds)
                             + f" | {rows['rank_log_slope']:.2f} |")
            gain = rows["gain"]
            if len(gain["D"]) >= 3 and all(g > 0 for g in gain["mean"]):
                slope = np.polyfit(np.log(gain["D"]), np.log(gain["mean"]), 1)[0]
                rows["gain_log_slope"] = float(slope)
                lines.append(f"| {name} | gain ∝ D^p: p | " + " | ".join("" for _ in Ds) + f" | {slope:.2f} |")
            data[key][name] = rows
        lines.append("")
    return "\n".join(lines), data


def main(argv=None) -> int:
    """Run the campaign and write the report.

    Args:
        argv: command-line arguments (default ``sys.argv``).

    Returns:
        0.
    """
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--Ds", type=int, nargs="+", default=[50, 100, 150, 200])
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--activations", nargs="+", default=["identity", "softmax"])
    ap.add_argument("--shift-rank", type=int, default=1, help="rank r* of the teacher's shift (default 1)")
    ap.add_argument("--lam", type=float, default=0.05, help="pre-training λ (default 0.05)")
    ap.add_argument("--lam-prime", type=float, default=1.0, help="LoRA and nuclear λ' (default 1)")
    ap.add_argument("--lam-ridge", type=float, default=1.0, help="ridge λ'_F (default 1)")
    ap.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=None,
                    help="the variants to run (default: r* = 1: lora_r1 lora_r2 full_nuclear full_ridge; r* > 1: all)")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--out", default="results/full_finetuning")
    ap.add_argument("--report", default="docs/full_finetuning_scaling.md")
    args = ap.parse_args(argv)
    setting = dict(alpha=0.1, alpha_prime=3.0, delta=0.5, lam=args.lam, lam_prime=args.lam_prime,
                   lam_ridge=args.lam_ridge)
    extra = {} if args.shift_rank == 1 else {"shift_rank": args.shift_rank, "variants": list(VARIANTS)}
    if args.variants is not None:
        extra["variants"] = list(args.variants)
        if args.shift_rank != 1:
            extra["shift_rank"] = args.shift_rank
    points = [dict(setting, D=D, seed=s, activation=act, **extra) for act in args.activations for D in args.Ds
              for s in range(args.seeds)]
    records = run_points(full_point, points, args.out, executor=Executor(workers=args.workers), desc="full fine-tuning")
    text, data = report(records, args.Ds)
    head = (f"Setting: {setting}; D = {args.Ds}, {args.seeds} seeds per D; one pre-training per (D, seed), "
            f"fine-tuned by each variant on the same data. Generated by `python -m "
            f"simulations.campaigns.full_finetuning_scaling`.\n\n")
    write_file_atomic(args.report, lambda tmp: Path(tmp).write_text(head + text))
    write_json_atomic(Path(args.report).with_suffix(".json"), {"setting": setting, "Ds": args.Ds, "seeds": args.seeds,
                                                                "data": data, **run_metadata()})
    print(head + text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
