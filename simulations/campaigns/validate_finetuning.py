"""Finite-size validation of the fine-tuning (rank-one LoRA) state evolution.

    python -m simulations.campaigns.validate_finetuning [--out results/validation_finetune] [--workers 2]
           [--D 50 100 150 200] [--seeds 6] [--quick] [--report docs/validation_finetuning.md]

Each simulated point pre-trains once and fine-tunes it with every variant of :data:`VARIANTS`
(``λ' ∈ {0.05, 1, ∞}`` and recalibration at ``λ' = 1``, fresh fine-tuning inputs); the theory
solves the pre-training fixed point once and the LoRA fixed point per variant. ``m`` is compared
as ``|m'|`` (the sign of ``û`` is arbitrary).
"""

from __future__ import annotations

import math

from .theory_points import variant_metrics, variants_point
from .validation import run_campaign

VARIANTS = {"lp=0.05": dict(lam_prime=0.05), "lp=1": dict(lam_prime=1.0), "lp=inf": dict(lam_prime=math.inf),
            "lp=1,recal": dict(lam_prime=1.0, recalibrate=True)}
FT_METRICS = ("m_abs", "q", "alignment", "test_error", "test_error_baseline", "train_loss")
METRICS = tuple(f"{m}[{v}]" for v in VARIANTS for m in FT_METRICS if not (v == "lp=inf" and m != "test_error"))

SETTINGS = [
    dict(activation="softmax", alpha=0.1, alpha_prime=3.0, delta=0.5, lam=0.05, T=3),
    dict(activation="softmax", alpha=0.1, alpha_prime=3.0, delta=2.0, lam=0.1, T=3),
    dict(activation="softmax", alpha=0.1, alpha_prime=3.0, delta=0.5, lam=0.01, T=3),
    dict(activation="identity", alpha=0.1, alpha_prime=3.0, delta=0.5, lam=0.1, T=3),
    # the weak-λ, strong-noise regime where the global LoRA prox switches branches often (V̂' by Stein,
    # docs/theory.md §4.3): Figure 1's Δ = 2 curves at small λ
    dict(activation="softmax", alpha=0.1, alpha_prime=3.0, delta=2.0, lam=0.02, T=3),
]


def finetune_point(D, seed, n_test=5000, **setting) -> dict:
    """Pre-train once, fine-tune with every variant; flat dict of metrics ``name[variant]``."""
    from simulations import simulate_variants

    s = dict(setting)
    results = simulate_variants(D, s.pop("alpha"), s.pop("alpha_prime"), s.pop("delta"), s.pop("lam"),
                                variants=list(VARIANTS.values()), seed=seed, n_test=n_test, **s)
    p = results[0].pretrain
    out = {"rho_v": results[0].finetune.rho_v, "pretrain_mse_S": p.mse_S, "pretrain_m": p.m, "pretrain_q": p.q,
           "pretrain_rho0": p.rho0}
    for name, r in zip(VARIANTS, results):
        f = r.finetune
        vals = variant_metrics(f, FT_METRICS + ("c", "converged"))
        out.update({f"{k}[{name}]": v for k, v in vals.items()})
    return out


def _solve_variant(pre, alpha_prime, lam_prime, variant, seed):
    from state_evolution import solve_finetuning

    return solve_finetuning(pre, alpha_prime, variant["lam_prime"], recalibrate=variant.get("recalibrate", False),
                            seed=seed)


def theory_point(setting: dict, seed: int = 0) -> dict:
    """The pre-training fixed point at ``setting`` fine-tuned with every variant (:func:`variants_point`)."""
    return variants_point(setting, seed, VARIANTS, _solve_variant, FT_METRICS)


def main(argv=None):
    run_campaign(argv, settings=SETTINGS, quick_settings=[SETTINGS[0], SETTINGS[3]], point_fn=finetune_point,
                 theory_fn=theory_point, metrics=METRICS,
                 plot_metrics=("m_abs[lp=1]", "alignment[lp=1]", "test_error[lp=1]", "test_error[lp=0.05]",
                               "test_error[lp=inf]"),
                 title="Fine-tuning (rank-one LoRA): theory vs simulation",
                 default_out="results/validation_finetune", default_report="docs/validation_finetuning.md",
                 figure_prefix="finetune", control=("rho_v", 1.0), default_seeds=8,
                 notes="α' = 3, fresh fine-tuning inputs, λ' ∈ {0.05, 1, ∞} and recalibration (λ' = 1) on the "
                       "same pre-trained Ŝ; 5000 test samples per seed. Rows 'adj. rho_v': the per-D mean "
                       "estimated with ρ_v = ‖v‖²/D (known mean 1) as a control variate (regression on the seeds' "
                       "ρ_v, evaluated at ρ_v = 1), which removes the seed spread that ρ_v drives.")


if __name__ == "__main__":
    main()
