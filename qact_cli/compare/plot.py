"""`--plot FILE`: the severity curves in FILE and the reliability diagrams beside it in
FILE.reliability.EXT (`plot_paths`, `write_plots`; compare/reliability.py draws those).

Accuracy-vs-severity and ECE-vs-severity curves, one line per model, with a band of ± the std
over corruptions (the paper's error bars, arXiv 2405.11573, are taken across the 15 kinds of
distortion). Rendered with matplotlib's Agg canvas directly, so no GUI backend or global pyplot
state is touched."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable

from .figures import DPI, plot_format, save_figure  # noqa: F401 (plot_format: compare/command.py checks --plot with it)
from .table import METRICS, Comparison, MEAN_ROW, column_label, title

FIGSIZE = (12.0, 4.8)  # inches, for two panels; each further metric adds PANEL_WIDTH
PANEL_WIDTH = 5.0  # at DPI 100: a 1200 x 480 PNG for two panels
MARKERS = "osD^vP*Xh<>"
LINESTYLES = ("-", "--", "-.", ":")  # identical curves (e.g. an adaptation that changes nothing) stay visible


PANEL_TITLES = {"acc": "accuracy", "ece": "ECE (top-label, 15 bins)", "ce": "CE-L2 (marginal, Kumar et al.)",
                "nll": "NLL (nats)", "brier": "Brier score"}


def _figsize(n_panels: int = 2) -> tuple[float, float]:
    return FIGSIZE[0] + PANEL_WIDTH * max(0, n_panels - 2), FIGSIZE[1]


def plot_size(n_panels: int = 2) -> tuple[int, int]:
    """(width, height) in pixels of the PNG that `plot_curves` writes for `n_panels` metrics."""
    w, h = _figsize(n_panels)
    return round(w * DPI), round(h * DPI)


def plot_curves(cmp: Comparison, path: str | Path) -> Path:
    """Write one panel per metric of `cmp` to `path` (PNG; the folder is created). Returns the path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=_figsize(len(cmp.metrics)), dpi=DPI)
    FigureCanvasAgg(fig)
    axes = dict(zip(cmp.metrics, fig.subplots(1, len(cmp.metrics), squeeze=False)[0]))
    severities = [int(r) for r in cmp.rows if r != MEAN_ROW]
    colors = [f"C{k % 10}" for k in range(len(cmp.entries))]
    lowest = 1.0
    for k, i in enumerate(cmp.evaluated):
        e = cmp.entries[i]
        sev = [s for s in severities if (str(s), i) in cmp.values]
        for key, ax in axes.items():
            sev_k = [s for s in sev if cmp.values[str(s), i][key] is not None]
            mean = [cmp.values[str(s), i][key] for s in sev_k]
            std = [cmp.values[str(s), i][f"{key}_std"] or 0.0 for s in sev_k]
            ax.plot(sev_k, mean, marker=MARKERS[k % len(MARKERS)], linestyle=LINESTYLES[k % len(LINESTYLES)],
                    color=colors[i], linewidth=2, markersize=6, label=column_label(e))
            ax.fill_between(sev_k, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                            color=colors[i], alpha=0.15, linewidth=0)
            if key == "acc" and mean:
                lowest = min(lowest, min(m - s for m, s in zip(mean, std)))
    for key, ax in axes.items():
        what = PANEL_TITLES.get(key, METRICS[key].label)
        ax.set_xlabel("severity (0 = clean)", fontsize=11)
        ax.set_ylabel(what, fontsize=11)
        ax.set_xticks(severities)
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelsize=10)
        ax.set_title(f"{what.split(' (')[0]} (mean ± std over corruptions)", fontsize=12)
        if key != "acc":
            ax.set_ylim(bottom=0)
    if "acc" in axes:  # from a round tenth below the lowest band to 1: near-equal models stay distinguishable
        axes["acc"].set_ylim(max(0.0, math.floor(lowest * 10 - 0.5) / 10), 1.005)
    if cmp.evaluated:
        next(iter(axes.values())).legend(loc="best", fontsize=10, framealpha=0.9)
    fig.suptitle(title(cmp), fontsize=13)
    footer = [f"{e.name}: {e.skipped}" for e in cmp.entries if e.skipped]
    footer += [f"{column_label(e)}: other protocol ({'; '.join(e.mixed)})" for e in cmp.entries if e.mixed]
    if footer:
        fig.text(0.01, 0.01, "\n".join(footer), fontsize=8, va="bottom", ha="left", color="0.3")
    fig.tight_layout(rect=(0, min(0.3, 0.035 * len(footer)), 1, 0.95))
    return save_figure(fig, path)



def reliability_path(path: str | Path) -> Path:
    """Where `--plot curves.png` puts the reliability diagrams: curves.reliability.png (same format)."""
    path = Path(path)
    return path.with_name(f"{path.stem}.reliability{path.suffix}")


def plot_paths(path: str | Path) -> list[Path]:
    """Every file `write_plots(cmp, path)` writes, for checking them before any work."""
    plot_format(path)
    return [Path(path), reliability_path(path)]


def write_plots(cmp: Comparison, path: str | Path, corruption: str | None = None,
                severities: Iterable[int] | str | None = None) -> list[Path]:
    """`--plot FILE`: the severity curves to FILE and the reliability diagrams (clean and the highest
    severity by default, pooled over corruptions or `corruption`'s) to FILE.reliability.EXT."""
    from .reliability import plot_reliability

    return [plot_curves(cmp, path), plot_reliability(cmp, reliability_path(path), severities, corruption)]
