"""Plots of a theory-vs-simulation :class:`~simulations.campaigns.statistics.ComparisonTable`."""

from __future__ import annotations

import numpy as np

from .records import new_figure, write_file_atomic
from .statistics import ComparisonTable


def plot_comparison(table: ComparisonTable, path=None, *, metrics=None, title: str = "", per_row: int = 5):
    """Two rows of panels per metric column (``per_row`` metrics per block of two rows): the metric vs ``D`` (simulation mean ± s.e., theory line,
    extrapolated value at the right edge) and the gap ``simulation − theory`` vs ``1/D`` with the
    fitted line ``(a − theory) + b D^{-p}``. Saves to ``path`` (format from its suffix) if given.

    Args:
        table: the :class:`~simulations.campaigns.statistics.ComparisonTable`.
        path: file to save to (closes the figure), or ``None``.
        metrics: the metrics to draw (default: all of the table's).
        title: the figure's title.
        per_row: metric columns per block of two rows.

    Returns:
        The matplotlib figure.
    """
    metrics = list(metrics or table.metrics)
    ncols = min(len(metrics), per_row)
    nblocks = -(-len(metrics) // ncols)
    fig, axes = new_figure(2 * nblocks, ncols, (3.2 * ncols, 5.2 * nblocks))
    for col in range(len(metrics) - (nblocks - 1) * ncols, ncols):  # the empty panels of the last block
        axes[-2, col].set_visible(False)
        axes[-1, col].set_visible(False)
    for i, metric in enumerate(metrics):
        block, col = divmod(i, ncols)
        rows, ex = table.rows_of(metric), table.extrapolation_of(metric)
        Ds = np.array([r.D for r in rows], float)
        ax = axes[2 * block, col]
        ax.errorbar(Ds, [r.mean for r in rows], yerr=[r.se for r in rows], fmt="o", label="simulation")
        ax.axhline(rows[0].theory, color="k", lw=1, label="theory (D → ∞)")
        ax.set_xlabel("D")
        ax.set_title(metric, fontsize=9)
        ax = axes[2 * block + 1, col]
        x = Ds ** -(ex.power if ex else 1.0)
        ax.errorbar(x, [r.gap for r in rows], yerr=[r.se for r in rows], fmt="o")
        ax.axhline(0.0, color="k", lw=1)
        if ex is not None:
            xs = np.linspace(0.0, x.max(), 30)
            ax.plot(xs, ex.value - ex.theory + ex.slope * xs, "--", color="C1", lw=1,
                    label=f"fit, D→∞ gap {ex.value - ex.theory:+.3g} ± {ex.se:.2g}")
            ax.errorbar([0.0], [ex.value - ex.theory], yerr=[ex.combined_se], fmt="s", color="C1")
            ax.legend(fontsize=6)
        ax.set_xlabel("1/D" if not ex or ex.power == 1.0 else f"D^-{ex.power:g}")
        ax.set_ylabel("simulation − theory" if col == 0 else "")
    axes[0, 0].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    if path is not None:
        write_file_atomic(path, lambda tmp: fig.savefig(tmp, dpi=110))
    return fig
