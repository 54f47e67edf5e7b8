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
    """``{name: value}`` of a fine-tuning result (theory or simulation) for each of ``names``.

    Args:
        result: a fine-tuning result, a state-evolution solution or a simulated one; read by attribute.
        names: the metric names: each an attribute of ``result``, or ``"m_abs"`` for ``|result.m|`` (the
            sign of ``û`` is arbitrary).

    Returns:
        ``{name: value}`` for each of ``names``, in their order.
    """
    return {n: abs(result.m) if n == "m_abs" else getattr(result, n) for n in names}


def pretraining_point(setting: dict, seed: int = 0) -> dict:
    """The pre-training state evolution (:func:`state_evolution.solve_pretraining`) at ``setting``.

    Args:
        setting: ``alpha``, ``delta``, ``lam`` (the positional arguments of
            :func:`state_evolution.solve_pretraining`) plus any of its keyword arguments; not modified.
        seed: Monte Carlo seed of the softmax channel.

    Returns:
        The pre-training solution's ``to_dict()``: its flat metric dict.
    """
    from state_evolution import solve_pretraining

    s = dict(setting)
    return solve_pretraining(s.pop("alpha"), s.pop("delta"), s.pop("lam"), seed=seed, **s).to_dict()


def two_stage_point(setting: dict, seed: int, flatten) -> dict:
    """Both stages (:func:`state_evolution.solve_state_evolution`, ``warn=False``) at ``setting``.

    Args:
        setting: ``alpha``, ``alpha_prime``, ``delta``, ``lam`` plus any keyword arguments of
            :func:`state_evolution.solve_state_evolution`; a key ``n_test`` is ignored; not modified.
        seed: Monte Carlo seed of the state evolution.
        flatten: ``flatten(pretrain, finetune)`` → the flat metric dict of the two stages' solutions.

    Returns:
        ``flatten(pretrain, finetune)`` plus ``converged`` (both stages, a ``bool``), ``residual`` (the
        larger of the two stages') and ``seconds`` (wall-clock time of the solve).
    """
    from state_evolution import solve_state_evolution

    s = {k: v for k, v in setting.items() if k != "n_test"}
    t0 = time.perf_counter()
    sol = solve_state_evolution(s.pop("alpha"), s.pop("alpha_prime"), s.pop("delta"), s.pop("lam"), seed=seed,
                                warn=False, **s)
    return dict(flatten(sol.pretrain, sol.finetune), converged=bool(sol.converged),
                residual=max(sol.pretrain.residual, sol.finetune.residual), seconds=time.perf_counter() - t0)


def variants_point(setting: dict, seed: int, variants: dict, solve_variant, names, **options) -> dict:
    """The flat metric dict of :func:`solve_variants`: one pre-training fixed point, every variant.

    Args:
        setting: as for :func:`solve_variants`.
        seed: as for :func:`solve_variants`.
        variants: ``{name: options}``, as for :func:`solve_variants`.
        solve_variant: the fine-tuning solver, as for :func:`solve_variants`.
        names: the metric names read from each variant (:func:`variant_metrics`).
        **options: ``seed_offset`` and the solver options of :func:`solve_variants`.

    Returns:
        The ``metrics`` dict of :func:`solve_variants` (the pre-training solution is dropped).
    """
    return solve_variants(setting, seed, variants, solve_variant, names, **options)[1]


def solve_variants(setting: dict, seed: int, variants: dict, solve_variant, names, *,
                   seed_offset: int = CAMPAIGN_FINETUNE_SEED_OFFSET, **solver_options) -> tuple:
    """Pre-train once at ``setting``, then solve every fine-tuning variant on that fixed point.

    Args:
        setting: ``alpha``, ``delta``, ``lam`` plus keyword arguments of
            :func:`state_evolution.solve_pretraining`, and ``alpha_prime`` and optionally ``lam_prime``
            (``None`` when absent), both handed to ``solve_variant``; not modified.
        seed: Monte Carlo seed of the pre-training channel.
        variants: ``{name: options}``: each variant's name and the options handed to ``solve_variant``.
        solve_variant: ``solve_variant(pre, alpha_prime, lam_prime, options, seed=..., **solver_options)``
            → a fine-tuning solution (with ``converged``, ``seconds``, ``residual`` and the ``names``),
            called with Monte Carlo seed ``seed + seed_offset``.
        names: the metric names read from each fine-tuning solution (:func:`variant_metrics`).
        seed_offset: offset of the fine-tuning channels' seed from ``seed``
            (:data:`CAMPAIGN_FINETUNE_SEED_OFFSET` keeps the replicas' channels independent).
        **solver_options: keyword arguments handed to both stages' solvers.

    Returns:
        ``(pre, metrics)``: the pre-training solution and ``{f"{metric}[{name}]": value}`` for each of
        the ``names`` and ``variants``, with the status ``converged`` (all stages), ``iterations``
        (pre-training), ``residual`` (the largest) and ``seconds`` (total).
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
