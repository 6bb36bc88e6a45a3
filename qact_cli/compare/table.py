"""The comparison grid: models side by side, one row per severity plus the mean corruption row.

`build(entries, metrics)` computes the grid once (values, the best value per row, differences to
the first model); `layouts`, `markdown` and `document` render that same grid, so the terminal, the
Markdown for CI comments and the JSON never disagree.

Row values: for severity s, the mean (and population std) over corruptions of each metric: accuracy
and ECE straight from each result's `summary.by_severity`, the other metrics (CE-L2, NLL, Brier) from
its cells the same way. The "mean corruption" row holds RobustBench's mean corruption accuracy
(`summary.mean_corruption_acc`: mean over all cells with severity >= 1) and, by the same
convention, the mean of every other metric over those cells.

On a terminal the grid is drawn in the first layout that fits whole (docs/screens.md shows them):
models x metrics side by side; the same with each difference on its own line; one table per
metric with models as rows and severities as columns. Piped output and Markdown keep the first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from rich import box
from rich.console import Console, RenderableType
from rich.table import Table
from rich.text import Text

from ..version import __version__
from ..errors import InputError, UsageError
from ..eval.comparability import protocol_differences
from ..eval.report import limit_words
from ..suggest import unknown

COMPARE_SCHEMA = "qact.compare/1"
MEAN_ROW = "mean"
DIGITS = 4  # shown precision; ties at this precision are all highlighted
MIXED_MARK = "†"
BEST_STYLE = "bold green"


@dataclass(frozen=True)
class Metric:
    key: str  # --metrics name and the key in the grid's values
    label: str  # column header
    cell: str  # the result cells' field
    higher_is_better: bool = False


METRICS = {m.key: m for m in (
    Metric("acc", "accuracy", "acc", higher_is_better=True),
    Metric("ece", "ECE", "ece"),
    Metric("ce", "CE-L2", "ce_marginal_l2"),  # Kumar et al. 2019's marginal calibration error, the paper's metric
    Metric("nll", "NLL", "nll"),
    Metric("brier", "Brier", "brier"),
)}
DEFAULT_METRICS = ("acc", "ece")
# how a model is evaluated rather than what on: shown in its label, never a protocol mismatch
EVAL_MODE_KEYS = {"adapt": "none", "context": "batch"}


def parse_metrics(text: str | list | tuple | None) -> list[str]:
    """'acc,ece,ce' -> ['acc', 'ece', 'ce'] (order as written, duplicates dropped); None -> the default."""
    if text is None:
        return list(DEFAULT_METRICS)
    parts = text if isinstance(text, (list, tuple)) else str(text).split(",")
    out = []
    for part in (str(p).strip().lower() for p in parts):
        if not part:
            continue
        if part not in METRICS:
            raise UsageError(unknown("--metrics name", part, METRICS))
        out.append(part)
    if not out:
        raise UsageError(f"--metrics is empty; choose from {', '.join(METRICS)}")
    return list(dict.fromkeys(out))


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
    values: dict[tuple[str, int], dict]  # (row, entry index) -> {m, m_std, m_delta for each metric m}
    best: dict[tuple[str, str], set[int]]  # (row, metric) -> entry indices holding the best value
    reference: int | None  # index of the first evaluated entry: differences are to it
    metrics: list[str] = field(default_factory=lambda: list(DEFAULT_METRICS))
    data_root: str | None = None  # named in the title when it is not the default

    @property
    def evaluated(self) -> list[int]:
        return [i for i, e in enumerate(self.entries) if e.result is not None]


# ---------------------------------------------------------------------------------------------- protocol


def protocol_diffs(ref: Entry, other: Entry) -> list[str]:
    """Protocol fields on which two results differ, ignoring those either model set on purpose.
    `adapt` and `context` are part of the model's label (how it is evaluated), never a difference."""
    on_purpose = set(ref.declared) | set(other.declared) | set(EVAL_MODE_KEYS)
    # the images scored too (content fingerprint); results written before qact recorded it are taken as they are
    return protocol_differences(ref.result, other.result, ignore=on_purpose, model_classes=False, data=True)


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


def _mean_std(vals: list[float]) -> tuple[float | None, float | None]:
    if not vals:
        return None, None
    mean = math.fsum(vals) / len(vals)
    return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in vals) / len(vals))


def _cell_values(result: dict, field_name: str, keep) -> list[float]:
    return [float(c[field_name]) for c in result.get("cells", [])
            if keep(int(c["severity"])) and c.get(field_name) is not None]


def mean_corruption_ece(result: dict) -> float | None:
    """Mean ECE over all cells with severity >= 1 (the ECE counterpart of the mean corruption accuracy)."""
    return _mean_std(_cell_values(result, "ece", lambda s: s >= 1))[0]


def _row_value(result: dict, row: str, metrics: list[str]) -> dict | None:
    if row == MEAN_ROW:
        acc = result["summary"].get("mean_corruption_acc")
        if acc is None:
            return None
        out = {}
        for m in metrics:
            mean = acc if m == "acc" else _mean_std(_cell_values(result, METRICS[m].cell, lambda s: s >= 1))[0]
            out |= {m: mean, f"{m}_std": None}
        return out
    s = result["summary"]["by_severity"].get(row)
    if s is None:
        return None
    out = {}
    for m in metrics:
        if m in ("acc", "ece"):  # the summary's numbers, as `qact eval` printed them
            out |= {m: s[f"{m}_mean"], f"{m}_std": s[f"{m}_std"]}
        else:
            mean, std = _mean_std(_cell_values(result, METRICS[m].cell, lambda sev: sev == int(row)))
            out |= {m: mean, f"{m}_std": std}
    return out


def build(entries: list[Entry], metrics: list[str] | tuple[str, ...] | None = None, data_root: str | None = None) -> Comparison:
    metrics = list(metrics or DEFAULT_METRICS)
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
            v = _row_value(entries[i].result, row, metrics)
            if v is not None:
                values[row, i] = v
        base = values.get((row, ref)) if ref is not None else None
        for i in evaluated:
            v = values.get((row, i))
            if v is None:
                continue
            for key in metrics:
                v[f"{key}_delta"] = (v[key] - base[key] if i != ref and base and base[key] is not None and v[key] is not None
                                     else None)
        for key in metrics:
            pick = max if METRICS[key].higher_is_better else min
            present = {i: round(values[row, i][key], DIGITS) for i in evaluated
                       if (row, i) in values and values[row, i][key] is not None}
            # highlighting one value is noise: only when at least two models have one
            best[row, key] = {i for i, v in present.items() if v == pick(present.values())} if len(present) >= 2 else set()
    return Comparison(entries, rows, values, best, ref, metrics, data_root)


def row_label(row: str) -> str:
    if row == MEAN_ROW:
        return "mean corruption"
    return "0 (clean)" if row == "0" else row


def eval_mode(e: Entry) -> str:
    """' +adapt bn', ' +context stored' for a model evaluated other than the default way, else ''."""
    if e.result is None:
        return ""
    p = e.result.get("protocol", {})
    return "".join(f" +{k} {p[k]}" for k, default in EVAL_MODE_KEYS.items() if p.get(k, default) != default)


def column_label(e: Entry) -> str:
    label = e.name + eval_mode(e)
    return f"{label} {MIXED_MARK}" if e.mixed else label


def _num(v: float | None) -> str:
    return "—" if v is None else f"{v:.{DIGITS}f}"


def _signed(d: float | None) -> str:
    return "" if d is None else f"{d:+.{DIGITS}f}"


def _delta(d: float | None) -> str:
    return "" if d is None else f" ({d:+.{DIGITS}f})"


def _metric_words(metrics: list[str]) -> str:
    names = [METRICS[m].label for m in metrics]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _dataset_words(cmp: Comparison, r: dict) -> str:
    return f"{r['dataset']} ({cmp.data_root})" if cmp.data_root else str(r["dataset"])


def title(cmp: Comparison) -> str:
    evaluated = [cmp.entries[i].result for i in cmp.evaluated]
    if not evaluated:
        return "comparison (no model was evaluated)"
    r = evaluated[0]
    n = len(r["protocol"].get("corruptions") or [])
    over = f", mean over {n} corruptions" if n else ""
    return f"{_dataset_words(cmp, r)}: {_metric_words(cmp.metrics)} per severity{over}"


def notes(cmp: Comparison) -> list[str]:
    """The lines under the table: what the numbers are, differences, skipped and mixed columns."""
    lines = []
    if cmp.reference is not None:
        ref = cmp.entries[cmp.reference]
        p = ref.result["protocol"]
        defined = ref.result.get("metrics", {})
        what = [f"ECE: {defined.get('ece', 'top-label L1')}"]
        if "ce" in cmp.metrics:
            what.append(f"CE-L2: {defined.get('ce_marginal_l2', 'marginal debiased L2 (Kumar et al. 2019)')}")
        lines.append(f"protocol: {_dataset_words(cmp, ref.result)}, severities {','.join(map(str, p.get('severities', [])))}, "
                     f"batch {p.get('batch_size')}, {limit_words(p.get('limit'))}, seed {p.get('seed')}; "
                     f"context {p.get('context')} and adapt {p.get('adapt')} unless a label says +context / +adapt; "
                     + "; ".join(what))
        lines.append("mean corruption: mean over all corruption x severity cells >= 1 (RobustBench); "
                     f"best value per row in bold; (+/-x) = difference to {column_label(ref)}")
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


# ---------------------------------------------------------------------------------------------- terminal layouts


def _value_text(cmp: Comparison, row: str, i: int, key: str, stacked: bool) -> Text:
    """One number, highlighted when best, with its difference to the reference inline or on its own line."""
    v = cmp.values.get((row, i))
    if v is None or v[key] is None:
        return Text("—")
    text = Text(_num(v[key]), style=BEST_STYLE if i in cmp.best[row, key] else "")
    d = v[f"{key}_delta"]
    if d is not None:
        text.append(f"\n{_signed(d)}" if stacked else _delta(d), style="dim")
    return text


def rich_table(cmp: Comparison, with_title: bool = True) -> Table:
    """Models x metrics side by side, rows = severities, each difference to the reference beside its value."""
    t = Table(title=title(cmp) if with_title else None, title_justify="left")
    t.add_column("severity", no_wrap=True)
    for e in cmp.entries:
        if e.result is None:
            t.add_column(e.name, overflow="fold")
            continue
        for m in cmp.metrics:
            # the evaluation mode on a line of its own: the header is no wider than the name
            head = [e.name + (f" {MIXED_MARK}" if e.mixed else ""), eval_mode(e).strip(), METRICS[m].label]
            t.add_column("\n".join(h for h in head if h), justify="right", no_wrap=True)
    for row in cmp.rows:
        if row == MEAN_ROW:
            t.add_section()
        cells: list = [Text(row_label(row), style="bold" if row == MEAN_ROW else "")]
        for i, e in enumerate(cmp.entries):
            if e.result is None:
                cells.append(Text("skipped", style="dim"))
                continue
            cells += [_value_text(cmp, row, i, m, stacked=False) for m in cmp.metrics]
        t.add_row(*cells)
    return t


def metric_table(cmp: Comparison, key: str) -> Table:
    """One metric: models as rows, severities (and the mean) as columns, differences on their own line."""
    m = METRICS[key]
    t = Table(title=f"{m.label}, mean over corruptions", 
              title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, collapse_padding=True, padding=(0,0))
    t.add_column("model", overflow="fold")
    for row in cmp.rows:
        head = "clean" if row == "0" else ("mean" if row == MEAN_ROW else f"sev {row}")
        t.add_column(head, justify="right", no_wrap=True)
    for i, e in enumerate(cmp.entries):
        if e.result is None:
            t.add_row(Text(e.name), Text("skipped", style="dim"), *[""] * (len(cmp.rows) - 1))
            continue
        t.add_row(Text(column_label(e)), *[_value_text(cmp, row, i, key, stacked=True) for row in cmp.rows])
    return t


def layouts(cmp: Comparison) -> list[list[RenderableType]]:
    """The terminal layouts, widest first: models x metrics side by side with inline differences;
    then one table per metric, models as rows and severities as columns, each difference to the
    reference on its own line (7 numbers of 7 characters: fits 80 columns whatever the models).
    A middle form (the side-by-side table with differences under the values) was tried: at 100-120
    columns its model names break into 5-6 header lines, harder to read than the per-metric tables."""
    per_metric: list[RenderableType] = []
    for key in cmp.metrics:
        per_metric += [metric_table(cmp, key), Text("")]
    return [[rich_table(cmp, with_title=False)], per_metric[:-1]]


# ---------------------------------------------------------------------------------------------- Markdown and JSON


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
            header += [f"{name} {'acc' if m == 'acc' else METRICS[m].label}" for m in cmp.metrics]
            align += ["--:"] * len(cmp.metrics)
    lines = [f"**{_md_escape(title(cmp))}**", "", "| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    for row in cmp.rows:
        label = f"**{row_label(row)}**" if row == MEAN_ROW else row_label(row)
        cells = [label]
        for i, e in enumerate(cmp.entries):
            if e.result is None:
                cells.append("skipped")
                continue
            v = cmp.values.get((row, i))
            for key in cmp.metrics:
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
        col = {"name": e.name, "label": column_label(e), "source": e.source or None,
               "status": "skipped" if e.result is None else "ok", "result": None, "reason": e.skipped, "note": e.note,
               "overrides": dict(e.declared), "protocol_differences": list(e.mixed)}
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
                     "best": {k: [cmp.entries[i].name for i in sorted(cmp.best[row, k])] for k in cmp.metrics}})
    return {
        "schema": "qact.eval-multi/1",
        "qact_version": __version__,
        "results": results,
        "comparison": {
            "schema": COMPARE_SCHEMA,
            "title": title(cmp),
            "metrics": list(cmp.metrics),
            "reference": cmp.entries[cmp.reference].name if cmp.reference is not None else None,
            "columns": columns,
            "rows": rows,
            "notes": notes(cmp),
        },
    }


def print_comparison(cmp: Comparison, to_stderr: bool = False, console: Console | None = None) -> None:
    """Print the title, the table in the first layout that fits the terminal, and the notes.
    Piped output gets the widest layout at its natural width, so no number is ever cut."""
    from ..ui import print_layouts, stderr_console, stdout_console

    console = console or (stderr_console() if to_stderr else stdout_console())
    if not console.is_terminal and to_stderr:  # a wide console, like stdout's when piped
        console = Console(stderr=True, width=stdout_console().width, soft_wrap=False)
    wrap = not console.is_terminal  # on a terminal Rich wraps the notes at spaces; a pipe gets whole lines
    console.print(Text(title(cmp), style="bold"), soft_wrap=wrap)
    print_layouts(console, layouts(cmp))
    for line in notes(cmp):
        console.print(line, highlight=False, markup=False, soft_wrap=wrap)
