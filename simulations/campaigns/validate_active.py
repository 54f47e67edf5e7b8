"""Finite-size validation of the reuse variant and of active selection (docs/theory.md §5).

    python -m simulations.campaigns.validate_active [--out results/validation_active] [--workers 2]
           [--D 50 100 150] [--seeds 8] [--quick] [--report docs/validation_active.md]

Each simulated point pre-trains once and fine-tunes the same ``Ŝ`` with every variant of
:data:`VARIANTS`: fresh samples (no selection), fresh candidates selected by each label-free
strategy, reused pre-training samples (random), and reused samples selected by the pre-training
residual. ``α' = 2`` out of a pool of ``α_pool = 4`` (``φ = 1/2``): the reuse pool
``α_pool·D`` must fit in the ``αD²`` pre-training samples already at ``D = 50`` (200 ≤ 250).
Besides each variant's metrics, ``gain[v] = E'[fresh] − E'[v]`` per seed (common random numbers:
the same teacher, pre-training and test inputs for all variants) is compared with the theory's
difference.
"""

from __future__ import annotations

from .theory_points import variant_metrics, variants_point
from .validation import run_campaign

POOL = 4.0
VARIANTS = {
    "fresh": dict(),
    "entropy": dict(strategy="entropy", pool_ratio=POOL),
    "low_logit_norm": dict(strategy="low_logit_norm", pool_ratio=POOL),
    "logit_norm": dict(strategy="logit_norm", pool_ratio=POOL),
    "reuse": dict(reuse=True),
    "reuse,residual": dict(reuse=True, strategy="residual", pool_ratio=POOL),
    "reuse,low_residual": dict(reuse=True, strategy="low_residual", pool_ratio=POOL),
}
VARIANT_METRICS = ("m_abs", "q", "alignment", "test_error")
METRICS = tuple(f"{m}[{v}]" for v in VARIANTS for m in VARIANT_METRICS) + tuple(
    f"gain[{v}]" for v in VARIANTS if v != "fresh")

SETTINGS = [
    dict(activation="identity", alpha=0.1, alpha_prime=2.0, delta=0.5, lam=0.1, T=3, lam_prime=1.0),
    dict(activation="softmax", alpha=0.1, alpha_prime=2.0, delta=0.5, lam=0.05, T=3, lam_prime=1.0),
]


def simulation_variant(v: dict, lam_prime: float) -> dict:
    """A :data:`VARIANTS` entry as a :func:`simulations.simulate_variants` variant."""
    out = dict(lam_prime=lam_prime, reuse=v.get("reuse", False))
    if "strategy" in v:
        out["select"] = dict(strategy=v["strategy"], pool_ratio=v["pool_ratio"])
    return out


def with_gains(out: dict) -> dict:
    """Add ``gain[v] = E'[fresh] − E'[v]``."""
    for v in VARIANTS:
        if v != "fresh":
            out[f"gain[{v}]"] = out["test_error[fresh]"] - out[f"test_error[{v}]"]
    return out


def active_point(D, seed, n_test=5000, **setting) -> dict:
    """Pre-train once, fine-tune with every variant; flat dict ``metric[variant]``."""
    from simulations import simulate_variants

    s = dict(setting)
    lam_prime = s.pop("lam_prime")
    results = simulate_variants(D, s.pop("alpha"), s.pop("alpha_prime"), s.pop("delta"), s.pop("lam"),
                                variants=[simulation_variant(v, lam_prime) for v in VARIANTS.values()],
                                seed=seed, n_test=n_test, **s)
    out = {"rho_v": results[0].finetune.rho_v, "pretrain_mse_S": results[0].pretrain.mse_S}
    for name, r in zip(VARIANTS, results):
        f = r.finetune
        vals = variant_metrics(f, VARIANT_METRICS + ("converged",))
        out.update({f"{k}[{name}]": val for k, val in vals.items()})
    return with_gains(out)


def _solve_variant(pre, alpha_prime, lam_prime, variant, seed):
    from state_evolution.selection import solve_active_finetuning

    return solve_active_finetuning(pre, alpha_prime, lam_prime, seed=seed, **variant)


def theory_point(setting: dict, seed: int = 0) -> dict:
    """The pre-training fixed point at ``setting`` fine-tuned with every variant, plus the gains."""
    return with_gains(variants_point(setting, seed, VARIANTS, _solve_variant, VARIANT_METRICS))


def main(argv=None):
    run_campaign(argv, settings=SETTINGS, quick_settings=[SETTINGS[0]], point_fn=active_point,
                 theory_fn=theory_point, metrics=METRICS,
                 plot_metrics=("test_error[fresh]", "gain[entropy]", "gain[low_logit_norm]", "gain[reuse]",
                               "gain[reuse,low_residual]"),
                 title="Reuse and active selection: theory vs simulation",
                 default_out="results/validation_active", default_report="docs/validation_active.md",
                 figure_prefix="active", default_D=(50, 100, 150), default_seeds=8, quick_D=(50, 60),
                 control=("rho_v", 1.0),
                 notes=f"α' = 2 of a pool α_pool = {POOL} (φ = 1/2), λ' = 1; variants on the same pre-trained Ŝ "
                       "and test inputs; gain[v] = E'[fresh] − E'[v]; 5000 test samples per seed. Rows 'adj. "
                       "rho_v': per-D means with ρ_v = ‖v‖²/D (known mean 1) as a control variate.")


if __name__ == "__main__":
    main()
