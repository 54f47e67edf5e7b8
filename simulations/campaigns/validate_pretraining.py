"""Finite-size validation of the pre-training state evolution (issue: pre-training SE).

    python -m simulations.campaigns.validate_pretraining [--out results/validation_pretrain] [--workers 2]
           [--D 50 100 150 200] [--seeds 6] [--quick] [--report docs/validation_pretraining.md]

Runs :func:`simulations.simulate` (pre-training only: ``λ' = inf``) at every ``(setting, D, seed)``
through the crash-safe sweep runner, solves the state evolution at each setting, and writes a
Markdown table (theory, simulation mean ± s.e. per D, gap, z, the 1/D and 1/√D extrapolations)
plus one plot per activation in ``docs/figures/``.
"""

from __future__ import annotations

import math

from .theory_points import pretraining_point
from .validation import run_campaign

METRICS = ("m", "q", "mse_S", "test_error", "train_loss", "rank_fraction")

SETTINGS = [
    dict(activation="identity", alpha=0.1, delta=0.5, lam=0.01, T=3),
    dict(activation="identity", alpha=0.1, delta=0.5, lam=0.1, T=3),
    dict(activation="identity", alpha=0.1, delta=2.0, lam=0.1, T=3),
    dict(activation="identity", alpha=0.2, delta=0.5, lam=0.05, T=2, kappa0=0.5),
    dict(activation="softmax", alpha=0.1, delta=0.5, lam=0.01, T=3),
    dict(activation="softmax", alpha=0.1, delta=0.5, lam=0.1, T=3),
    dict(activation="softmax", alpha=0.1, delta=2.0, lam=0.03, T=3),
    dict(activation="softmax", alpha=0.2, delta=0.5, lam=0.05, T=2),
    dict(activation="softmax", alpha=0.1, delta=0.5, lam=0.05, T=3, kappa0=2.0),
    dict(activation="softmax", alpha=0.1, delta=0.5, lam=0.05, T=3, kappa0=1.0, kappa=0.5),
]


def pretrain_point(D, seed, n_test=5000, **setting) -> dict:
    """One simulation of the pre-training stage (module-level: picklable for process pools)."""
    from simulations import simulate

    r = simulate(D, setting.pop("alpha"), 1.0, setting.pop("delta"), setting.pop("lam"), seed=seed,
                 lam_prime=math.inf, n_test=n_test, **setting)
    return r.pretrain.to_dict() | {"timings": r.timings}


theory_point = pretraining_point


def main(argv=None):
    run_campaign(argv, settings=SETTINGS, quick_settings=[SETTINGS[1], SETTINGS[5]], point_fn=pretrain_point,
                 theory_fn=theory_point, metrics=METRICS, plot_metrics=("m", "q", "mse_S", "test_error"),
                 title="Pre-training: theory vs simulation", default_out="results/validation_pretrain",
                 default_report="docs/validation_pretraining.md", figure_prefix="pretrain",
                 notes="λ' = ∞ (pre-training only), 5000 test samples per seed.")


if __name__ == "__main__":
    main()
