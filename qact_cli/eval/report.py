"""Rich tables for eval results: the per-severity summary and the full per-corruption grid.

Print them with `print_table`: Rich squeezes a table into the console's width by cutting cells
to "0.94…", which must never happen to a number, so a table wider than the console is printed at
its natural width instead (a terminal soft-wraps the long lines; a pipe receives them whole).
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from .metrics import METRIC_NAMES


def _pm(mean, std) -> str:
    return "—" if mean is None else f"{mean:.4f} ± {std:.4f}"


def _cell_mean(cells: list[dict], severity: int, key: str) -> str:
    vals = [c[key] for c in cells if c["severity"] == severity and c.get(key) is not None]
    return f"{sum(vals) / len(vals):.4f}" if vals else "—"


def print_table(console: Console, table: Table) -> None:
    """Print `table` without truncating any cell, whatever the console's width."""
    need = console.measure(table, options=console.options.update_width(1 << 16)).maximum
    if need <= console.width:
        console.print(table)
        return
    width = console.width
    console.width = need
    try:
        console.print(table)
    finally:
        console.width = width


def summary_table(result: dict) -> Table:
    m = result["model"]
    title = f"{m.get('name', m['arch'])} ({m['arch']}, {m['act']}, {m['head']} head) on {result['dataset']}"
    p = result["protocol"]
    caption = (f"batch {p['batch_size']}, context {p['context']}, adapt {p['adapt']}, limit {p['limit']}, seed {p['seed']}; "
               f"ECE: {METRIC_NAMES['ece']}; CE-L2: {METRIC_NAMES['ce_marginal_l2']}")
    t = Table(title=title, caption=caption)
    t.add_column("severity", justify="right", no_wrap=True)
    t.add_column("cells", justify="right", no_wrap=True)
    t.add_column("accuracy (mean ± std)", justify="right", no_wrap=True)
    t.add_column("ECE (mean ± std)", justify="right", no_wrap=True)
    t.add_column("CE-L2", justify="right", no_wrap=True)
    t.add_column("NLL", justify="right", no_wrap=True)
    t.add_column("Brier", justify="right", no_wrap=True)
    by, cells = result["summary"]["by_severity"], result["cells"]
    for s in sorted(by, key=int):
        row, sev = by[s], int(s)
        n = sum(1 for c in cells if c["severity"] == sev)
        t.add_row(s, str(n), _pm(row["acc_mean"], row["acc_std"]), _pm(row["ece_mean"], row["ece_std"]),
                  *(_cell_mean(cells, sev, k) for k in ("ce_marginal_l2", "nll", "brier")))
    mca = result["summary"].get("mean_corruption_acc")
    t.add_section()
    t.add_row("mean corruption acc", "", "—" if mca is None else f"{mca:.4f}", "", "", "", "", style="bold")
    if result["summary"].get("mce") is not None:
        t.add_row("mCE (AlexNet-normalised)", "", f"{result['summary']['mce']:.4f}", "", "", "", "", style="bold")
    return t


def grid_table(result: dict) -> Table:
    """Every (corruption, severity) cell: accuracy / ECE."""
    cells = result["cells"]
    severities = sorted({c["severity"] for c in cells})
    corruptions = list(dict.fromkeys(c["corruption"] for c in cells))
    index = {(c["corruption"], c["severity"]): c for c in cells}
    t = Table(title=f"{result['model'].get('name', result['model']['arch'])}: accuracy / ECE per cell")
    t.add_column("corruption", no_wrap=True)
    for s in severities:
        t.add_column(f"s{s}", justify="right", no_wrap=True)
    for name in corruptions:
        t.add_row(name, *[(f"{index[name, s]['acc']:.4f} / {index[name, s]['ece']:.4f}" if (name, s) in index else "")
                          for s in severities])
    return t
