"""The theory's side of a campaign point: a setting dict → the flat metric dict of the state evolution.

Every ``theory_fn(setting, seed)`` of the campaigns (:func:`simulations.campaigns.validation.replicate_theory`)
and the theory points of the selection figures reduce to these: :func:`pretraining_point` (pre-training
only), :func:`two_stage_point` (both stages, :func:`state_evolution.solve_state_evolution`) and
:func:`variants_point` (one pre-training fixed point, fine-tuned with every variant). Metric names follow
the results (``m_abs = |m'|``: the sign of ``û`` is arbitrary); :func:`variant_metrics` reads the same names
from a simulated fine-tuning result, so both sides of a comparison use one list.
"""

from __future__ import annotations

import time

# The validation campaigns' fine-tuning channels draw their Monte Carlo samples from seed + 1000, where
# seed is the pre-training channel's: the replicas r = 0, 1, … of ``--mc-replicas`` pre-train with seed r,
# so an offset of 1 (as in :func:`state_evolution.solve_state_evolution`) would give replica r's fine-tuning
# channel the scrambling of replica r + 1's pre-training channel; 1000 keeps all of them independent for
# up to 1000 replicas. The value is part of the recorded campaign results (do not change it).
CAMPAIGN_FINETUNE_SEED_OFFSET = 1000


def variant_metrics(result, names) -> dict:
    """``{name: value}`` of a fine-tuning result (theory or simulation) for each of ``names``: an
    attribute of ``result``, or ``"m_abs"`` = ``|result.m|``."""
    return {n: abs(result.m) if n == "m_abs" else getattr(result, n) for n in names}


def pretraining_point(setting: dict, seed: int = 0) -> dict:
    """:func:`state_evolution.solve_pretraining` at ``setting`` (its keyword arguments, with ``alpha``,
    ``delta``, ``lam``), Monte Carlo seed ``seed``: the solution's ``to_dict()``."""
    from state_evolution import solve_pretraining

    s = dict(setting)
    return solve_pretraining(s.pop("alpha"), s.pop("delta"), s.pop("lam"), seed=seed, **s).to_dict()


def two_stage_point(setting: dict, seed: int, flatten) -> dict:
    """Both stages at ``setting`` (keyword arguments of :func:`state_evolution.solve_state_evolution`;
    ``n_test`` is ignored): ``flatten(pretrain, finetune)`` plus ``converged``, ``residual``, ``seconds``."""
    from state_evolution import solve_state_evolution

    s = {k: v for k, v in setting.items() if k != "n_test"}
    t0 = time.perf_counter()
    sol = solve_state_evolution(s.pop("alpha"), s.pop("alpha_prime"), s.pop("delta"), s.pop("lam"), seed=seed,
                                warn=False, **s)
    return dict(flatten(sol.pretrain, sol.finetune), converged=bool(sol.converged),
                residual=max(sol.pretrain.residual, sol.finetune.residual), seconds=time.perf_counter() - t0)


def variants_point(setting: dict, seed: int, variants: dict, solve_variant, names, **options) -> dict:
    """The flat metric dict of :func:`solve_variants` (same arguments)."""
    return solve_variants(setting, seed, variants, solve_variant, names, **options)[1]


def solve_variants(setting: dict, seed: int, variants: dict, solve_variant, names, *,
                   seed_offset: int = CAMPAIGN_FINETUNE_SEED_OFFSET, **solver_options) -> tuple:
    """Pre-train once at ``setting``, then solve every fine-tuning variant on that fixed point.

    ``setting``: keyword arguments of :func:`state_evolution.solve_pretraining` plus ``alpha_prime`` and
    optionally ``lam_prime`` (both handed to ``solve_variant``); ``variants``: ``{name: options}``;
    ``solve_variant(pre, alpha_prime, lam_prime, options, seed=..., **solver_options)`` returns a
    fine-tuning solution, solved with Monte Carlo seed ``seed + seed_offset``; ``solver_options`` go to
    both stages. Returns ``(pre, metrics)``: the pre-training solution and ``{f"{metric}[{name}]": value}``
    for the ``names`` (:func:`variant_metrics`) with the status: ``converged`` (all), ``iterations``
    (pre-training), ``residual`` (largest), ``seconds`` (total).
    """
    from state_evolution import solve_pretraining

    s = dict(setting)
    alpha_prime, lam_prime = s.pop("alpha_prime", None), s.pop("lam_prime", None)
    pre = solve_pretraining(s.pop("alpha"), s.pop("delta"), s.pop("lam"), seed=seed, **solver_options, **s)
    out = {"converged": pre.converged, "iterations": pre.iterations, "residual": pre.residual,
           "seconds": pre.seconds}
    for name, options in variants.items():
        f = solve_variant(pre, alpha_prime, lam_prime, options, seed=seed + seed_offset, **solver_options)
        out.update({f"{k}[{name}]": val for k, val in variant_metrics(f, names).items()})
        out["converged"] = out["converged"] and f.converged
        out["seconds"] += f.seconds
        out["residual"] = max(out["residual"], f.residual)
    return pre, out
