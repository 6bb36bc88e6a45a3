"""Rich tables for eval results: the per-severity summary and the full per-corruption grid.

Each table comes with narrower layouts of the same numbers; `print_table` draws the first that fits
the terminal whole (numbers are never wrapped or cut, see qact_cli/ui.py) and piped output gets the
widest. Summary: std beside the mean, else under it. Grid (corruptions as rows, severities as
columns): "acc / ECE" in each cell, else one grid per metric (15 x 6 numbers fit 80 columns).
"""

from __future__ import annotations

from pathlib import Path

from rich import box
from rich.console import Console, RenderableType
from rich.table import Table
from rich.text import Text

from .metrics import METRIC_NAMES


class Layouts(Table):
    """A table (its widest layout) that also carries narrower layouts of the same numbers."""

    narrower: list[list[RenderableType]]


def _layouts(wide: Table, *narrower: list[RenderableType]) -> Layouts:
    wide.__class__ = Layouts
    wide.narrower = list(narrower)
    return wide


def named_root(data_root: str | None) -> str | None:
    """The data root to name in titles: one the user chose that is not the default one."""
    from ..data import default_root

    if not data_root or Path(default_root(data_root)).resolve() == Path(default_root(None)).resolve():
        return None
    return str(data_root)


def _pm(mean, std, stacked: bool = False) -> str:
    return "—" if mean is None else f"{mean:.4f}{chr(10) if stacked else ' '}± {std:.4f}"


def _cell_mean(cells: list[dict], severity: int, key: str) -> str:
    vals = [c[key] for c in cells if c["severity"] == severity and c.get(key) is not None]
    return f"{sum(vals) / len(vals):.4f}" if vals else "—"


def print_table(console: Console, table: Table) -> None:
    """Print `table` in the first of its layouts that fits the console, never truncating a number."""
    from ..ui import print_layouts

    print_layouts(console, [[table], *getattr(table, "narrower", [])])


def _model_name(result: dict) -> str:
    m = result["model"]
    return m.get("name") or m.get("arch", "model")


def _on(result: dict, data_root: str | None) -> str:
    return f"{result['dataset']} ({data_root})" if data_root else str(result["dataset"])


def limit_words(limit) -> str:
    """How a protocol's `limit` reads in a caption."""
    return "all images" if limit is None else f"limit {limit}"


def _sources(values: list[str], source: dict | None) -> str:
    """`values` with where each came from; one "(all from X)" when they share a source."""
    if not source:
        return ", ".join(values)
    names = [source.get(k) or "?" for k in ("input_size", "resize", "mean", "std")]
    if len(set(names)) == 1:
        return f"{', '.join(values)} ({'all defaults' if names[0] == 'default' else 'all from ' + names[0]})"
    return ", ".join(f"{v} ({n})" for v, n in zip(values, names))


def preprocessing_words(model: dict) -> str:
    """The model's input size, resize, mean and std, and where each came from (the result's optional
    `preprocessing_source`: argument, card, weights, checkpoint or default)."""
    if model.get("mean") is None:
        return ""
    size = model.get("input_size")
    values = ["input " + ("any size" if not size else "x".join(str(v) for v in size)),
              f"resize {model['resize']}" if model.get("resize") else "no resize",
              "mean " + ",".join(f"{v:.4g}" for v in model["mean"]),
              "std " + ",".join(f"{v:.4g}" for v in model.get("std") or [])]
    return "preprocessing: " + _sources(values, model.get("preprocessing_source"))


def calibration_words(result: dict) -> str:
    """With a fitted temperature (train --calibrate): the calibrated ECE and NLL beside the raw ones."""
    cal = [c for c in result["cells"] if c.get("calibrated")]
    if not cal:
        return ""

    def mean(key: str, clean: bool, raw: bool) -> str:
        vals = [(c if raw else c["calibrated"])[key] for c in cal if (c["severity"] == 0) == clean]
        return f"{sum(vals) / len(vals):.4f}" if vals else "—"

    parts = [f"{name} {mean(key, clean, True)} -> {mean(key, clean, False)} {where}"
             for key, name in (("ece", "ECE"), ("nll", "NLL")) for clean, where in ((True, "clean"), (False, "corrupted"))
             if any((c["severity"] == 0) == clean for c in cal)]
    return f"temperature T = {cal[0]['calibrated']['temperature']:.4f}, raw -> calibrated: " + ", ".join(parts)


def _summary(result: dict, data_root: str | None, stacked: bool) -> Table:
    m = result["model"]
    # a model from elsewhere has no qact act/head: its spec's arch alone
    what = ", ".join([str(m.get("arch"))] + ([str(m["act"]), f"{m.get('head')} head"] if m.get("act") else []))
    title = f"{_model_name(result)} ({what}) on {_on(result, data_root)}"
    p = result["protocol"]
    caption = (f"batch {p['batch_size']}, context {p['context']}, adapt {p['adapt']}, {limit_words(p.get('limit'))}, "
               f"seed {p['seed']}; ECE: {METRIC_NAMES['ece']}; CE-L2: {METRIC_NAMES['ce_marginal_l2']}"
               + "".join(f"\n{line}" for line in (preprocessing_words(m), calibration_words(result)) if line))
    t = Table(title=title, caption=caption)
    t.add_column("severity", justify="right", no_wrap=not stacked)
    t.add_column("cells", justify="right", no_wrap=True)
    t.add_column("accuracy\n± std" if stacked else "accuracy (mean ± std)", justify="right", no_wrap=True)
    t.add_column("ECE\n± std" if stacked else "ECE (mean ± std)", justify="right", no_wrap=True)
    for name in ("CE-L2", "NLL", "Brier"):
        t.add_column(name, justify="right", no_wrap=True)
    by, cells = result["summary"]["by_severity"], result["cells"]
    for s in sorted(by, key=int):
        row, sev = by[s], int(s)
        n = sum(1 for c in cells if c["severity"] == sev)
        t.add_row(s, str(n), _pm(row["acc_mean"], row["acc_std"], stacked), _pm(row["ece_mean"], row["ece_std"], stacked),
                  *(_cell_mean(cells, sev, k) for k in ("ce_marginal_l2", "nll", "brier")))
    mca = result["summary"].get("mean_corruption_acc")
    t.add_section()
    t.add_row("mean corruption acc", "", "—" if mca is None else f"{mca:.4f}", "", "", "", "", style="bold")
    if result["summary"].get("mce") is not None:
        t.add_row("mCE (AlexNet-normalised)", "", f"{result['summary']['mce']:.4f}", "", "", "", "", style="bold")
    return t


def summary_table(result: dict, data_root: str | None = None) -> Table:
    """Per severity: accuracy and ECE (mean ± std over corruptions), CE-L2, NLL, Brier (means)."""
    return _layouts(_summary(result, data_root, stacked=False), [_summary(result, data_root, stacked=True)])


def _grid(result: dict, keys: tuple[str, ...], data_root: str | None) -> Table:
    cells = result["cells"]
    severities = sorted({c["severity"] for c in cells})
    corruptions = list(dict.fromkeys(c["corruption"] for c in cells))
    index = {(c["corruption"], c["severity"]): c for c in cells}
    what = " / ".join("accuracy" if k == "acc" else "ECE" for k in keys)
    root = f" ({data_root})" if data_root else ""
    t = Table(title=f"{_model_name(result)}{root}: {what} per cell", title_justify="left",
              box=box.SIMPLE_HEAD if len(keys) == 1 else box.HEAVY_HEAD, show_edge=len(keys) > 1)
    t.add_column("corruption", no_wrap=True)
    for s in severities:
        t.add_column(f"s{s}", justify="right", no_wrap=True)
    for name in corruptions:
        t.add_row(name, *[(" / ".join(f"{index[name, s][k]:.4f}" for k in keys) if (name, s) in index else "")
                          for s in severities])
    return t


def grid_table(result: dict, data_root: str | None = None) -> Table:
    """Every (corruption, severity) cell: accuracy / ECE; narrower: an accuracy grid, then an ECE grid."""
    return _layouts(_grid(result, ("acc", "ece"), data_root),
                    [_grid(result, ("acc",), data_root), Text(""), _grid(result, ("ece",), data_root)])
