"""Rich tables for eval results: the per-severity summary and the full per-corruption grid."""

from __future__ import annotations

from rich.table import Table

from .metrics import METRIC_NAMES


def _pm(mean, std) -> str:
    return "—" if mean is None else f"{mean:.4f} ± {std:.4f}"


def _cell_means(cells: list[dict], severity: int, key: str) -> float | None:
    vals = [c[key] for c in cells if c["severity"] == severity and c.get(key) is not None]
    return sum(vals) / len(vals) if vals else None


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
    by = result["summary"]["by_severity"]
    for s in sorted(by, key=int):
        row = by[s]
        cells = result["cells"]
        n = sum(1 for c in cells if c["severity"] == int(s))
        t.add_row(s, str(n), _pm(row["acc_mean"], row["acc_std"]), _pm(row["ece_mean"], row["ece_std"]),
                  f"{_cell_means(cells, int(s), 'ce_marginal_l2'):.4f}", f"{_cell_means(cells, int(s), 'nll'):.4f}",
                  f"{_cell_means(cells, int(s), 'brier'):.4f}")
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
