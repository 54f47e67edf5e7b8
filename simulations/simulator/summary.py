"""Mean ± standard error over seeds of finite-``D`` simulation results.

:func:`summarize` takes the per-seed outcomes of :func:`simulations.simulate` (the
:class:`~simulations.simulator.two_stage.SimulationResult` objects, their ``to_dict()``, or the
same dicts read back from a JSON file) and returns, for every numeric metric, its
mean over seeds and the standard error of that mean, ``s.e. = std(ddof=1)/√n``
(``nan`` with a single seed). Keys are dotted paths such as ``"pretrain.m"``,
``"finetune.alignment"`` or ``"timings.pretrain"``; ``"finetune.m_abs"`` (``|m'|``, whose mean is meaningful
where the signed ``m'`` averages to noise: the sign of ``û`` is arbitrary) is added.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping

import numpy as np

from solvable_attention.averages import MeanSE, mean_se

SECTIONS = ("pretrain", "finetune", "timings")


def flatten_numeric(tree: Mapping, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a nested mapping as ``{"a.b": value}`` (booleans and non-numbers skipped).

    Args:
        tree: a nested mapping.
        prefix: prepended to every key.

    Returns:
        ``{dotted path: float}``.
    """
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_numeric(value, name + "."))
        elif _is_number(value):
            flat[name] = float(value)
    return flat


def _is_number(value) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return False
    if isinstance(value, numbers.Real):
        return True
    return isinstance(value, np.ndarray) and value.ndim == 0 and np.issubdtype(value.dtype, np.number)


def summarize(results, sections: Iterable[str] = SECTIONS) -> dict[str, dict[str, float]]:
    """Mean and standard error over ``results`` of every numeric metric in ``sections``.

    ``results``: sequence of ``SimulationResult`` or of (nested) dicts with the same layout.
    A metric missing from some results is summarised over those that have it. Non-finite values are
    kept (a ``nan`` metric gives a ``nan`` mean).

    Args:
        results: sequence of ``SimulationResult`` or of (nested) dicts with the same layout.
        sections: the top-level sections to summarise (default ``pretrain, finetune, timings``).

    Returns:
        ``{"<section>.<metric>": {"mean": ..., "se": ..., "n": ...}}`` (:func:`~solvable_attention.averages.mean_se`).
    """
    flats = [_flat_sections(r, tuple(sections)) for r in results]
    for flat in flats:  # |m'|: the sign of û is arbitrary, so the signed m' averages to noise over seeds
        if "finetune.m" in flat:
            flat["finetune.m_abs"] = abs(flat["finetune.m"])
    names = list(dict.fromkeys(name for flat in flats for name in flat))
    return {name: mean_se([flat[name] for flat in flats if name in flat])._asdict() for name in names}


def _flat_sections(result, sections) -> dict[str, float]:
    tree = result.to_dict() if hasattr(result, "to_dict") else result
    return flatten_numeric({s: tree[s] for s in sections if isinstance(tree.get(s), Mapping)})


def format_mean_se(stats: Mapping[str, float], digits: int = 6) -> str:
    """``"mean ± se"`` of one entry of :func:`summarize` (see :meth:`MeanSE.format`).

    Args:
        stats: ``{"mean", "se"[, "n"]}``.
        digits: significant digits of the mean.

    Returns:
        The formatted text.
    """
    return MeanSE(stats["mean"], stats["se"], stats.get("n", 0)).format(digits)
