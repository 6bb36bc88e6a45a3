"""Reliability diagrams (Guo et al. 2017, Figure 1): per model and severity, the accuracy of each of
the 15 equal-width confidence bins of the top-label ECE against the diagonal, the gap to the bin's
mean confidence shaded, the ECE in the title, and under it the share of samples per bin. Bars below
the diagonal are over-confidence, above it under-confidence. A severity's bins are those of all its
corruptions pooled (or one chosen corruption's); severity 0 is the clean test set.

Rendered with matplotlib's Agg canvas directly, like the severity curves (compare/plot.py).
"""

from __future__ import annotations

import textwrap
import warnings
from pathlib import Path
from typing import Iterable

from ..eval.metrics import ece_from_bins
from ..eval.reliability import N_BINS, no_bins_reason, severity_bins
from .figures import DPI, save_figure
from .table import Comparison, column_label

PANEL_SIZE = (3.6, 3.3)  # inches: diagram above, histogram below
HIST_RATIO = 0.3  # histogram height relative to the diagram's
BAR_COLOR = "#3b6fb6"
GAP_COLOR = "#d9534f"


def severity_label(severity: int, corruption: str | None, n_corruptions: int) -> str:
    if severity == 0:
        return "clean"
    what = corruption or (f"{n_corruptions} corruptions pooled" if n_corruptions != 1 else "pooled")
    return f"severity {severity} ({what})"


def pick_severities(present: Iterable[int], severities: Iterable[int] | str | None) -> list[int]:
    """None: the lowest and the highest present (clean and severity 5 side by side); "all": every one;
    else the given ones that are present."""
    present = sorted(set(present))
    if not present:
        return []
    if severities is None:
        return sorted({present[0], present[-1]})
    if severities == "all":
        return present
    return [s for s in sorted(set(int(s) for s in severities)) if s in present]


def draw_reliability(ax, hist_ax, bins: dict, title: str) -> None:
    """One diagram on `ax` and its confidence histogram on `hist_ax`."""
    width = 1.0 / N_BINS
    left = [m * width for m in range(N_BINS)]
    full = [m for m in range(N_BINS) if bins["count"][m]]
    acc = [bins["acc"][m] for m in full]
    conf = [bins["conf"][m] for m in full]
    x = [left[m] for m in full]
    ax.bar(x, acc, width=width, align="edge", color=BAR_COLOR, edgecolor="white", linewidth=0.6, label="accuracy")
    # hatched, not filled: over a bar (under-confidence) the gap stays red instead of mixing with the blue
    ax.bar(x, [abs(c - a) for a, c in zip(acc, conf)], bottom=[min(a, c) for a, c in zip(acc, conf)], width=width,
           align="edge", facecolor="none", edgecolor=GAP_COLOR, linewidth=0.8, hatch="////",
           label="gap to mean confidence")
    ax.plot([0, 1], [0, 1], linestyle="--", color="0.35", linewidth=1.2, label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy", fontsize=9)
    ax.tick_params(labelsize=8, labelbottom=False)
    ax.set_title(f"{title}, ECE {ece_from_bins(bins):.4f}", fontsize=9.5)
    ax.set_aspect("auto")
    n = sum(bins["count"])
    hist_ax.bar(left, [k / n for k in bins["count"]], width=width, align="edge", color="0.55", edgecolor="white",
                linewidth=0.6)
    hist_ax.set_xlim(0, 1)
    hist_ax.set_xlabel("confidence", fontsize=9)
    hist_ax.set_ylabel("share", fontsize=9)
    hist_ax.tick_params(labelsize=8)


def _say(ax, hist_ax, title: str, reason: str) -> None:
    ax.set_title(title, fontsize=9.5)
    ax.text(0.5, 0.5, "\n".join(textwrap.wrap(reason, 34)), ha="center", va="center", fontsize=8.5, color="0.25",
            transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])
    hist_ax.axis("off")


def plot_reliability(cmp: Comparison, path: str | Path, severities: Iterable[int] | str | None = None,
                     corruption: str | None = None) -> Path:
    """Write the reliability diagrams of every evaluated model of `cmp` to `path` (.png, .pdf or .svg):
    one row per model, one column per severity (default: clean and the highest, side by side), pooled
    over corruptions or for `corruption` alone. A model whose result has no bins gets a panel saying
    why (and a warning). Returns the path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    models = [cmp.entries[i] for i in cmp.evaluated]
    binned = [severity_bins(e.result, corruption) for e in models]
    present = {int(c["severity"]) for e in models for c in e.result["cells"]}
    cols = pick_severities(present, severities) or [0]
    rows = max(1, len(models))
    fig = Figure(figsize=(PANEL_SIZE[0] * len(cols), PANEL_SIZE[1] * rows + 0.8), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    outer = fig.add_gridspec(rows, len(cols))

    def pair(r: int, k: int):  # a diagram with its histogram right under it
        sub = outer[r, k].subgridspec(2, 1, height_ratios=[1, HIST_RATIO], hspace=0.04)
        ax = fig.add_subplot(sub[0])
        return ax, fig.add_subplot(sub[1], sharex=ax)

    for r, (e, by_sev) in enumerate(zip(models, binned)):
        reason = no_bins_reason(e.result)
        if reason:
            warnings.warn(f"{column_label(e)}: {reason}", stacklevel=2)
        n_corr = len({c["corruption"] for c in e.result["cells"] if int(c["severity"]) >= 1})
        for k, sev in enumerate(cols):
            ax, hist_ax = pair(r, k)
            head = f"{column_label(e)}\n{severity_label(sev, corruption, n_corr)}"
            if reason:
                _say(ax, hist_ax, head, reason)
            elif sev not in by_sev:
                _say(ax, hist_ax, head, f"no cells of severity {sev} in this result")
            else:
                draw_reliability(ax, hist_ax, by_sev[sev], head)
    if not models:
        _say(*pair(0, 0), "reliability", "no model was evaluated")
    handles = next((a.get_legend_handles_labels() for a in fig.axes if a.get_legend_handles_labels()[0]), None)
    if handles:
        fig.legend(*handles, loc="outside lower center", ncol=3, fontsize=8.5, frameon=False)
    dataset = models[0].result["dataset"] if models else ""
    fig.suptitle(f"Reliability on {dataset}: 15 equal-width confidence bins of the top-label ECE"
                 + (f", {corruption} only" if corruption else ""), fontsize=11)
    return save_figure(fig, path)
