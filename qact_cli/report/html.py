"""`--html FILE`: one self-contained HTML report of result documents (`qact.eval/1`,
`qact.eval-multi/1`, a compare document), which opens offline: the styles, the small script (model
toggles, sortable tables) and the charts (inline SVG from report/svg.py) are all inside the file,
and nothing is fetched. Rendered with Jinja2 (autoescaping on) from report/templates/report.html.j2.

Sections: title and protocol, data identity and versions, the summary tables (one per metric,
models x severities), heat maps of accuracy and ECE per (corruption, severity) per model, the
severity curves, the reliability diagrams of every severity (pooled over corruptions), and each
model's spec and preprocessing. docs/report.md describes it.
"""

from __future__ import annotations

import datetime as _dt
from importlib import resources
from pathlib import Path
from typing import Iterable, Mapping

from .. import __version__
from ..compare.documents import comparison_of
from ..compare.reliability import severity_label
from ..compare.table import METRICS, MEAN_ROW, Comparison, column_label, notes, row_label, title
from ..eval.reliability import no_bins_reason, severity_bins
from ..utils import write_text_atomic
from .svg import LINE_COLORS, curves_svg, heat_color, reliability_svg

TEMPLATE = "report.html.j2"
HEAT_METRICS = ("acc", "ece")
# ECE colours saturate here or at the largest ECE shown, whichever is larger: small ECEs stay green
ECE_SCALE_MIN = 0.05
ENV_KEYS = ("qact", "torch", "numpy", "python", "device", "platform")


def _summary_tables(cmp: Comparison) -> list[dict]:
    tables = []
    for key in cmp.metrics:
        rows = []
        for i in cmp.evaluated:
            cells = []
            for row in cmp.rows:
                v = cmp.values.get((row, i))
                val = None if v is None else v.get(key)
                std = None if v is None else v.get(f"{key}_std")
                delta = None if v is None else v.get(f"{key}_delta")
                cells.append({"value": val, "std": std, "delta": delta, "best": i in cmp.best.get((row, key), set())})
            rows.append({"model": cmp.entries[i].name, "label": column_label(cmp.entries[i]), "cells": cells})
        tables.append({"key": key, "label": METRICS[key].label, "higher_is_better": METRICS[key].higher_is_better,
                       "columns": ["clean" if r == "0" else ("mean corruption" if r == MEAN_ROW else f"sev {r}")
                                   for r in cmp.rows], "rows": rows})
    return tables


def _heat_maps(result: Mapping, name: str, ece_top: float) -> list[dict]:
    cells = result["cells"]
    severities = sorted({int(c["severity"]) for c in cells})
    corruptions = list(dict.fromkeys(c["corruption"] for c in cells))
    index = {(c["corruption"], int(c["severity"])): c for c in cells}
    maps = []
    for key in HEAT_METRICS:
        label = METRICS[key].label
        rows = []
        for corr in corruptions:
            row = []
            for s in severities:
                c = index.get((corr, s))
                if c is None or c.get(key) is None:
                    row.append(None)
                    continue
                v = float(c[key])
                bad = 1 - v if key == "acc" else v / ece_top
                row.append({"value": v, "color": heat_color(bad), "severity": s,
                            "tip": f"{name} · {corr} severity {s}: {label} {v:.4f} (n {c.get('n', '?')})"})
            rows.append({"corruption": corr, "cells": row})
        maps.append({"key": key, "label": label, "severities": severities, "rows": rows})
    return maps


def _reliability(result: Mapping) -> dict:
    reason = no_bins_reason(result)
    if reason:
        return {"reason": reason, "diagrams": []}
    n_corr = len({c["corruption"] for c in result["cells"] if int(c["severity"]) >= 1})
    return {"reason": None, "diagrams": [reliability_svg(b, severity_label(s, None, n_corr))
                                         for s, b in severity_bins(result).items()]}


def _spec(result: Mapping) -> list[tuple[str, str]]:
    return [(k, ", ".join(map(str, v)) if isinstance(v, list) else str(v))
            for k, v in result["model"].items() if v is not None and v != []]


def _report_title(documents: list[Mapping], cmp: Comparison) -> str:
    for d in documents:
        exp = (d.get("comparison") or {}).get("experiment") if isinstance(d.get("comparison"), Mapping) else None
        if isinstance(exp, Mapping) and exp.get("title"):
            return str(exp["title"])
    names = [cmp.entries[i].name for i in cmp.evaluated]
    return f"qact robustness report: {', '.join(names)}" if names else "qact robustness report"


def render_html(documents: Mapping | Iterable[Mapping], report_title: str | None = None) -> str:
    """The report of `documents` (one document or several, as `eval` and `compare` produce them) as HTML text."""
    import jinja2

    docs = [documents] if isinstance(documents, Mapping) else list(documents)
    cmp = comparison_of(docs)
    evaluated = [cmp.entries[i] for i in cmp.evaluated]
    ece_top = max([ECE_SCALE_MIN] + [float(c["ece"]) for e in evaluated for c in e.result["cells"]
                                     if c.get("ece") is not None])
    models = []
    for n, e in enumerate(evaluated):
        r = e.result
        env = r.get("environment") or {}
        models.append({
            "name": e.name, "label": column_label(e), "color": LINE_COLORS[n % len(LINE_COLORS)],
            "dataset": r["dataset"], "data": r["protocol"].get("data") or {},
            "versions": [(k, env[k]) for k in ENV_KEYS if env.get(k) is not None],
            "qact_version": r.get("qact_version"), "elapsed_s": r.get("elapsed_s"),
            "protocol": [(k, ", ".join(map(str, v)) if isinstance(v, list) else str(v))
                         for k, v in r["protocol"].items() if k != "data"],
            "heat_maps": _heat_maps(r, e.name, ece_top),
            "reliability": _reliability(r),
            "spec": _spec(r), "mixed": e.mixed, "note": e.note,
        })
    template = resources.files(__package__).joinpath("templates", TEMPLATE).read_text(encoding="utf-8")
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    return env.from_string(template).render(
        title=report_title or _report_title(docs, cmp), subtitle=title(cmp), notes=notes(cmp),
        summary=_summary_tables(cmp), models=models, skipped=[e for e in cmp.entries if e.result is None],
        curves=[curves_svg(cmp, key) for key in cmp.metrics], rows=[row_label(r) for r in cmp.rows],
        ece_top=ece_top, qact_version=__version__,
        generated=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))


def write_html(documents: Mapping | Iterable[Mapping], path: str | Path, report_title: str | None = None) -> Path:
    """`--html FILE`: write the report of `documents` to `path` (temp name, then renamed). Returns the path."""
    path = Path(path)
    write_text_atomic(path, render_html(documents, report_title))
    return path
