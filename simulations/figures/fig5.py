"""Figure 5: Figure 2 with the rescaled identity activation ``σ(H) = (β/T) H``.

Same design and panels as :mod:`simulations.figures.fig2` (effect of pre-training, varied through
``α`` at a few ``λ``, on the fine-tuning task at ``α' = 3, Δ = 0.5, λ' = 1``). For the identity the
fine-tuning state evolution depends on pre-training only through the effective noise
``Δ' + mse_S`` (docs/theory.md §4.4, a tested identity): panel (c)'s curves of different ``λ`` collapse.
The identity theory is (almost) closed form, so this figure's cost is the simulations'.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from . import fig2

NAME = "fig5"
Config = fig2.Config
FULL = dataclasses.replace(fig2.FULL, activation="identity")
QUICK = dataclasses.replace(fig2.QUICK, activation="identity", D=50, alphas=(0.03, 0.1, 0.3, 1.0, 3.0))
plot = fig2.plot


def reproduce(out: Path, *, quick: bool = False, executor=None, progress: bool = True, **overrides) -> dict:
    """Write ``fig5.png/.pdf/.csv/.json`` under ``out``; ``overrides``: fields of :class:`fig2.Config`.

    Args:
        out: output folder (created); simulations are cached under ``out/cache/fig5/``.
        quick: the small configuration ``QUICK`` instead of ``FULL`` (minutes, not hours).
        executor: where the simulations run (:class:`~simulations.campaigns.resumable.Executor`;
            default in-process).
        progress: show progress bars.
        **overrides: fields of :class:`fig2.Config` (e.g. ``D=30, seeds=1``).

    Returns:
        ``{"paths": {"png", "pdf", "csv", "json"}, "timings": ...}``.

    Raises:
        ValueError: an unknown override or ``D < 2``.
    """
    return fig2.reproduce_as(NAME, FULL, QUICK, out, quick=quick, executor=executor, progress=progress, **overrides)
