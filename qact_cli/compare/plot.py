"""Accuracy-vs-severity and ECE-vs-severity curves, one line per model, with a band of ± the std
over corruptions (the paper's error bars, qact-method.md §5). Rendered with matplotlib's Agg canvas
directly, so no GUI backend or global pyplot state is touched."""

from __future__ import annotations

import math
from pathlib import Path

from ..errors import UsageError
from ..utils import atomic_path
from .table import Comparison, MEAN_ROW, column_label, title

FIGSIZE = (12.0, 4.8)  # inches
DPI = 100  # -> a 1200 x 480 PNG
MARKERS = "osD^vP*Xh<>"
LINESTYLES = ("-", "--", "-.", ":")  # identical curves (e.g. an adaptation that changes nothing) stay visible


def plot_size() -> tuple[int, int]:
    """(width, height) in pixels of the PNG that `plot_curves` writes."""
    return round(FIGSIZE[0] * DPI), round(FIGSIZE[1] * DPI)


def plot_curves(cmp: Comparison, path: str | Path) -> Path:
    """Write the two panels to `path` (PNG; the folder is created). Returns the path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    FigureCanvasAgg(fig)
    ax_acc, ax_ece = fig.subplots(1, 2)
    severities = [int(r) for r in cmp.rows if r != MEAN_ROW]
    colors = [f"C{k % 10}" for k in range(len(cmp.entries))]
    lowest = 1.0
    for k, i in enumerate(cmp.evaluated):
        e = cmp.entries[i]
        sev = [s for s in severities if (str(s), i) in cmp.values]
        for ax, key in ((ax_acc, "acc"), (ax_ece, "ece")):
            mean = [cmp.values[str(s), i][key] for s in sev]
            std = [cmp.values[str(s), i][f"{key}_std"] or 0.0 for s in sev]
            ax.plot(sev, mean, marker=MARKERS[k % len(MARKERS)], linestyle=LINESTYLES[k % len(LINESTYLES)],
                    color=colors[i], linewidth=2, markersize=6, label=column_label(e))
            ax.fill_between(sev, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                            color=colors[i], alpha=0.15, linewidth=0)
            if key == "acc" and mean:
                lowest = min(lowest, min(m - s for m, s in zip(mean, std)))
    for ax, what in ((ax_acc, "accuracy"), (ax_ece, "ECE (top-label, 15 bins)")):
        ax.set_xlabel("severity (0 = clean)", fontsize=11)
        ax.set_ylabel(what, fontsize=11)
        ax.set_xticks(severities)
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelsize=10)
    # accuracy from a round tenth below the lowest band to 1: near-equal models stay distinguishable
    ax_acc.set_ylim(max(0.0, math.floor(lowest * 10 - 0.5) / 10), 1.005)
    ax_ece.set_ylim(bottom=0)
    ax_acc.set_title("accuracy (mean ± std over corruptions)", fontsize=12)
    ax_ece.set_title("calibration error (mean ± std over corruptions)", fontsize=12)
    if cmp.evaluated:
        ax_acc.legend(loc="best", fontsize=10, framealpha=0.9)
    fig.suptitle(title(cmp), fontsize=13)
    footer = [f"{e.name}: {e.skipped}" for e in cmp.entries if e.skipped]
    footer += [f"{column_label(e)}: other protocol ({'; '.join(e.mixed)})" for e in cmp.entries if e.mixed]
    if footer:
        fig.text(0.01, 0.01, "\n".join(footer), fontsize=8, va="bottom", ha="left", color="0.3")
    fig.tight_layout(rect=(0, min(0.3, 0.035 * len(footer)), 1, 0.95))
    path = Path(path)
    fmt = plot_format(path)
    with atomic_path(path, f".{fmt}") as tmp:
        fig.savefig(tmp, format=fmt, dpi=DPI)
    return path


PLOT_FORMATS = ("png", "pdf", "svg")


def plot_format(path) -> str:
    """The image format named by the file's extension (png, pdf or svg); anything else is a usage error."""
    ext = Path(path).suffix.lower().lstrip(".")
    if ext not in PLOT_FORMATS:
        raise UsageError(f"--plot {path}: unknown image type {('.' + ext) if ext else '(no extension)'}; "
                         "end the name with .png, .pdf or .svg")
    return ext
