"""Reproductions of the paper's figures (docs/model.md §7), one module per figure.

Each module ``simulations.figures.figN`` exposes
``reproduce(out: Path, *, quick=False, executor=None, progress=True, **overrides) -> dict``, which writes
``figN.png``, ``figN.pdf``, ``figN.csv`` (the tidy data behind it, theory and simulation rows) and
``figN.json`` (configuration, seeds, versions, timings) under ``out``, with the simulations cached
point by point under ``out/cache/figN/``; it returns ``{"paths": ..., "timings": ...}``.
``overrides`` are fields of the module's ``Config`` (e.g. ``D=30, seeds=1``).

Modules are imported lazily (:func:`load`), so a figure whose module is missing is reported when
asked for, and nothing heavy is imported with this package.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

FIGURES = {
    "fig1": "simulations.figures.fig1",
    "fig2": "simulations.figures.fig2",
    "fig3": "simulations.figures.fig3",
    "fig4": "simulations.figures.fig4",
    "fig5": "simulations.figures.fig5",
    "fig6": "simulations.figures.fig6",
}
# Figures beyond the paper: reproduced by name (``reproduce rank``), not part of ``reproduce all``.
EXTRA_FIGURES = {
    "rank": "simulations.figures.rank",
}


class FigureUnavailable(LookupError):
    """A figure name that is unknown, or registered but whose module is not installed (yet)."""


def load(name: str):
    """The module of figure ``name`` (a key of :data:`FIGURES`).

    Args:
        name: ``"fig1"`` … ``"fig6"``, or a key of :data:`EXTRA_FIGURES` (``"rank"``).

    Returns:
        The imported module.

    Raises:
        FigureUnavailable: an unknown name, or a registered figure whose module is missing.
        ModuleNotFoundError: a dependency missing inside an existing figure module.
    """
    known = {**FIGURES, **EXTRA_FIGURES}
    if name not in known:
        raise FigureUnavailable(f"unknown figure {name!r}; known: {', '.join(known)}")
    module = known[name]
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != module:  # a missing dependency inside an existing module: not ours to hide
            raise
        raise FigureUnavailable(f"figure {name!r} is registered but its module {module} is not available "
                                "(not implemented in this version)") from None


def available() -> list[str]:
    """The registered figures whose module exists.

    Returns:
        Their names, in registration order.
    """
    return [n for n, m in FIGURES.items() if importlib.util.find_spec(m) is not None]


def reproduce(name: str, out, *, quick: bool = False, executor=None, progress: bool = True, **overrides) -> dict:
    """Reproduce figure ``name`` into ``out`` (see the module docstring).

    Args:
        name: ``"fig1"`` … ``"fig6"``.
        out: output folder.
        quick: the figure's small configuration.
        executor: where the simulations run (:class:`~simulations.campaigns.resumable.Executor`).
        progress: show progress bars.
        **overrides: fields of the figure's ``Config``.

    Returns:
        ``{"paths": ..., "timings": ...}`` of the figure's ``reproduce``.

    Raises:
        FigureUnavailable: an unknown or unavailable figure.
        ValueError: an unknown override or ``D < 2``.
    """
    return load(name).reproduce(Path(out), quick=quick, executor=executor, progress=progress, **overrides)
