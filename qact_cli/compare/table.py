"""The comparison grid: models side by side, one row per severity plus the mean corruption row.

`build(entries)` computes the grid once (values, the best value per row, differences to the first
model); `rich_table`, `markdown` and `document` render that same grid, so the terminal, the
Markdown for CI comments and the JSON never disagree.

Row values: for severity s, the mean (and population std) over corruptions of accuracy and ECE,
straight from each result's `summary.by_severity`. The "mean corruption" row holds RobustBench's
mean corruption accuracy (`summary.mean_corruption_acc`: mean over all cells with severity >= 1)
and, by the same convention, the mean ECE over those cells.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from .. import __version__
from ..errors import InputError
from ..eval.gates import PROTOCOL_KEYS

COMPARE_SCHEMA = "qact.compare/1"
MEAN_ROW = "mean"
DIGITS = 4  # shown precision; ties at this precision are all highlighted
MIXED_MARK = "†"
BEST_STYLE = "bold green"


@dataclass
class Entry:
    """One column group of the comparison: a result, or a model that was skipped (and why)."""

    name: str
    result: dict | None = None
    source: str = ""
    skipped: str | None = None
    declared: dict = field(default_factory=dict)  # protocol keys set on purpose for this model (experiment eval overrides)
    mixed: list[str] = field(default_factory=list)  # protocol differences to the reference, accepted by --allow-mixed
    note: str | None = None  # a caveat printed under the table


@dataclass
class Comparison:
    entries: list[Entry]
    rows: list[str]  # "0".."5" (severities present in any result), then MEAN_ROW when defined
    values: dict[tuple[str, int], dict]  # (row, entry index) -> {acc, acc_std, ece, ece_std, acc_delta, ece_delta}
    best: dict[tuple[str, str], set[int]]  # (row, "acc"|"ece") -> entry indices holding the best value
    reference: int | None  # index of the first evaluated entry: differences are to it

    @property
    def evaluated(self) -> list[int]:
        return [i for i, e in enumerate(self.entries) if e.result is not None]


# ---------------------------------------------------------------------------------------------- protocol


def _protocol_view(result: dict) -> dict:
    view = {"dataset": result["dataset"], **{k: result["protocol"].get(k) for k in PROTOCOL_KEYS}}
    if str(result["dataset"]).startswith("gen:"):  # generated corruptions depend on the seed
        view["seed"] = result["protocol"].get("seed")
    return view


def protocol_diffs(ref: Entry, other: Entry) -> list[str]:
    """Protocol fields on which two results differ, ignoring those either model set on purpose."""
    a, b = _protocol_view(ref.result), _protocol_view(other.result)
    on_purpose = set(ref.declared) | set(other.declared)
    return [f"{k} {a.get(k)} vs {b.get(k)}" for k in dict.fromkeys([*a, *b])
            if k not in on_purpose and a.get(k) != b.get(k)]


def check_protocols(entries: list[Entry], allow_mixed: bool = False) -> None:
    """Refuse (exit 3) results evaluated under different protocols, or mark them with --allow-mixed."""
    evaluated = [e for e in entries if e.result is not None]
    if not evaluated:
        return
    ref = evaluated[0]
    for e in evaluated[1:]:
        diffs = protocol_diffs(ref, e)
        if diffs and not allow_mixed:
            raise InputError(f"{e.source or e.name} was evaluated under another protocol than {ref.source or ref.name} "
                             f"({'; '.join(diffs)}); evaluate both with the same options, or pass --allow-mixed "
                             f"to compare them anyway (marked {MIXED_MARK})")
        e.mixed = diffs


def unique_names(entries: list[Entry]) -> None:
    """Two columns never share a name: later duplicates get '#2', '#3'."""
    seen: dict[str, int] = {}
    for e in entries:
        n = seen.get(e.name, 0) + 1
        seen[e.name] = n
        if n > 1:
            e.name = f"{e.name}#{n}"


# ---------------------------------------------------------------------------------------------- the grid


def mean_corruption_ece(result: dict) -> float | None:
    """Mean ECE over all cells with severity >= 1 (the ECE counterpart of the mean corruption accuracy)."""
    vals = [float(c["ece"]) for c in result.get("cells", []) if int(c["severity"]) >= 1 and c.get("ece") is not None]
    return sum(vals) / len(vals) if vals else None


def _row_value(result: dict, row: str) -> dict | None:
    if row == MEAN_ROW:
        acc = result["summary"].get("mean_corruption_acc")
        return None if acc is None else {"acc": acc, "acc_std": None, "ece": mean_corruption_ece(result), "ece_std": None}
    s = result["summary"]["by_severity"].get(row)
    if s is None:
        return None
    return {"acc": s["acc_mean"], "acc_std": s["acc_std"], "ece": s["ece_mean"], "ece_std": s["ece_std"]}


def build(entries: list[Entry]) -> Comparison:
    evaluated = [i for i, e in enumerate(entries) if e.result is not None]
    severities = sorted({int(s) for i in evaluated for s in entries[i].result["summary"]["by_severity"]})
    rows = [str(s) for s in severities]
    if any(entries[i].result["summary"].get("mean_corruption_acc") is not None for i in evaluated):
        rows.append(MEAN_ROW)
    ref = evaluated[0] if evaluated else None
    values: dict[tuple[str, int], dict] = {}
    best: dict[tuple[str, str], set[int]] = {}
    for row in rows:
        for i in evaluated:
            v = _row_value(entries[i].result, row)
            if v is not None:
                values[row, i] = v
        base = values.get((row, ref)) if ref is not None else None
        for i in evaluated:
            v = values.get((row, i))
            if v is None:
                continue
            for key in ("acc", "ece"):
                v[f"{key}_delta"] = (v[key] - base[key] if i != ref and base and base[key] is not None and v[key] is not None
                                     else None)
        for key, pick in (("acc", max), ("ece", min)):
            present = {i: round(values[row, i][key], DIGITS) for i in evaluated
                       if (row, i) in values and values[row, i][key] is not None}
            # highlighting one value is noise: only when at least two models have one
            best[row, key] = {i for i, v in present.items() if v == pick(present.values())} if len(present) >= 2 else set()
    return Comparison(entries, rows, values, best, ref)


def row_label(row: str) -> str:
    if row == MEAN_ROW:
        return "mean corruption"
    return "0 (clean)" if row == "0" else row


def column_label(e: Entry) -> str:
    return f"{e.name} {MIXED_MARK}" if e.mixed else e.name


def _num(v: float | None) -> str:
    return "—" if v is None else f"{v:.{DIGITS}f}"


def _delta(d: float | None) -> str:
    return "" if d is None else f" ({d:+.{DIGITS}f})"


def title(cmp: Comparison) -> str:
    evaluated = [cmp.entries[i].result for i in cmp.evaluated]
    if not evaluated:
        return "comparison (no model was evaluated)"
    r = evaluated[0]
    n = len(r["protocol"].get("corruptions") or [])
    over = f", mean over {n} corruptions" if n else ""
    return f"{r['dataset']}: accuracy and ECE per severity{over}"


def notes(cmp: Comparison) -> list[str]:
    """The lines under the table: what the numbers are, differences, skipped and mixed columns."""
    lines = []
    if cmp.reference is not None:
        ref = cmp.entries[cmp.reference]
        p = ref.result["protocol"]
        lines.append(f"protocol: {ref.result['dataset']}, severities {','.join(map(str, p.get('severities', [])))}, "
                     f"batch {p.get('batch_size')}, context {p.get('context')}, adapt {p.get('adapt')}, "
                     f"limit {p.get('limit')}, seed {p.get('seed')}; ECE: {ref.result.get('metrics', {}).get('ece', 'top-label L1')}")
        lines.append("mean corruption: mean over all corruption x severity cells >= 1 (RobustBench); "
                     f"best value per row in bold; (+/-x) = difference to {ref.name}")
    for e in cmp.entries:
        said = [", ".join(f"{k} {v}" for k, v in e.declared.items())] if e.result is not None and e.declared else []
        said += [e.note] if e.note else []
        if said:
            lines.append(f"{e.name}: {'; '.join(said)}")
        if e.mixed:
            lines.append(f"{MIXED_MARK} {e.name} was evaluated under another protocol: {'; '.join(e.mixed)}")
        if e.skipped:
            lines.append(f"{e.name}: {e.skipped}")
    return lines


# ---------------------------------------------------------------------------------------------- renderings


def rich_table(cmp: Comparison, with_title: bool = True) -> Table:
    t = Table(title=title(cmp) if with_title else None, title_justify="left")
    t.add_column("severity", no_wrap=True)
    for e in cmp.entries:
        if e.result is None:
            t.add_column(e.name, no_wrap=True, overflow="fold")
        else:
            t.add_column(f"{column_label(e)}\naccuracy", justify="right", no_wrap=True, overflow="fold")
            t.add_column(f"{column_label(e)}\nECE", justify="right", no_wrap=True, overflow="fold")
    for row in cmp.rows:
        if row == MEAN_ROW:
            t.add_section()
        cells: list = [Text(row_label(row), style="bold" if row == MEAN_ROW else "")]
        for i, e in enumerate(cmp.entries):
            if e.result is None:
                cells.append(Text("skipped", style="dim"))
                continue
            v = cmp.values.get((row, i))
            for key in ("acc", "ece"):
                if v is None or v[key] is None:
                    cells.append(Text("—"))
                    continue
                text = Text(_num(v[key]), style=BEST_STYLE if i in cmp.best[row, key] else "")
                text.append(_delta(v[f"{key}_delta"]), style="dim")
                cells.append(text)
        t.add_row(*cells)
    return t


def _md_escape(s: str) -> str:
    return s.replace("|", "\\|")


def markdown(cmp: Comparison) -> str:
    """A GitHub-flavoured Markdown table (bold = best per row) with the notes under it."""
    header, align = ["severity"], [":--"]
    for e in cmp.entries:
        name = _md_escape(column_label(e))
        if e.result is None:
            header.append(name)
            align.append(":--")
        else:
            header += [f"{name} acc", f"{name} ECE"]
            align += ["--:", "--:"]
    lines = [f"**{_md_escape(title(cmp))}**", "", "| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    for row in cmp.rows:
        label = f"**{row_label(row)}**" if row == MEAN_ROW else row_label(row)
        cells = [label]
        for i, e in enumerate(cmp.entries):
            if e.result is None:
                cells.append("skipped")
                continue
            v = cmp.values.get((row, i))
            for key in ("acc", "ece"):
                if v is None or v[key] is None:
                    cells.append("—")
                    continue
                num = _num(v[key])
                cells.append((f"**{num}**" if i in cmp.best[row, key] else num) + _delta(v[f"{key}_delta"]))
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines += [f"- {_md_escape(n)}" for n in notes(cmp)]
    return "\n".join(lines) + "\n"


def document(cmp: Comparison) -> dict:
    """The combined JSON: a `qact.eval-multi/1` document (so `qact compare` and `qact eval --baseline`
    read it back) whose extra `comparison` key (schema `qact.compare/1`) holds the grid as shown."""
    results, columns = [], []
    for i, e in enumerate(cmp.entries):
        col = {"name": e.name, "source": e.source or None, "status": "skipped" if e.result is None else "ok",
               "result": None, "reason": e.skipped, "note": e.note, "overrides": dict(e.declared), "protocol_differences": list(e.mixed)}
        if e.result is not None:
            col["result"] = len(results)
            results.append(e.result)
        columns.append(col)
    rows = []
    for row in cmp.rows:
        models = {}
        for i in cmp.evaluated:
            v = cmp.values.get((row, i))
            if v is not None:
                models[cmp.entries[i].name] = dict(v)
        rows.append({"row": row_label(row), "severity": None if row == MEAN_ROW else int(row), "models": models,
                     "best": {k: [cmp.entries[i].name for i in sorted(cmp.best[row, k])] for k in ("acc", "ece")}})
    return {
        "schema": "qact.eval-multi/1",
        "qact_version": __version__,
        "results": results,
        "comparison": {
            "schema": COMPARE_SCHEMA,
            "title": title(cmp),
            "reference": cmp.entries[cmp.reference].name if cmp.reference is not None else None,
            "columns": columns,
            "rows": rows,
            "notes": notes(cmp),
        },
    }


def print_comparison(cmp: Comparison, to_stderr: bool = False) -> None:
    """Print the table and its notes. Piped output gets a console as wide as the table, so no number is cut."""
    table = rich_table(cmp, with_title=False)
    stream = sys.stderr if to_stderr else sys.stdout
    if stream.isatty():
        console = Console(stderr=to_stderr)
    else:
        probe = Console(width=10_000, stderr=to_stderr)
        need = Measurement.get(probe, probe.options, table).maximum
        console = Console(width=max(int(os.environ.get("COLUMNS", 200)), need), stderr=to_stderr, soft_wrap=False)
    console.print(Text(title(cmp), style="bold"), soft_wrap=True)
    console.print(table)
    for line in notes(cmp):
        console.print(line, highlight=False, markup=False, soft_wrap=True)
