"""Result documents (`qact.eval/1`, `qact.eval-multi/1`, a compare document) as comparison entries,
so every output (table, plot, HTML, LaTeX) renders the documents that `eval` and `compare` produce."""

from __future__ import annotations

from typing import Iterable, Mapping

from .table import METRICS, Comparison, Entry, build, check_protocols, unique_names


def results_of(doc: Mapping) -> list[dict]:
    """The single results of one document (a `qact.eval/1` document is its own single result)."""
    return list(doc["results"]) if doc.get("schema") == "qact.eval-multi/1" else [dict(doc)]


def _name(r: Mapping) -> str:
    return r["model"].get("name") or r["model"].get("arch", "model")


def entries_from_document(doc: Mapping, source: str = "") -> list[Entry]:
    """One entry per result; a compare document gives its columns again (skipped models, the overrides
    its experiment declared, notes)."""
    results = results_of(doc)
    comparison = doc.get("comparison") if isinstance(doc.get("comparison"), Mapping) else {}
    columns = [c for c in comparison.get("columns", []) if isinstance(c, Mapping) and c.get("name")]
    ok = [c for c in columns if c.get("status") == "ok" and isinstance(c.get("result"), int)]
    if not columns or len(ok) != len(results):  # a plain result document
        return [Entry(_name(r), r, source=source) for r in results]
    entries = []
    for c in columns:
        if c.get("status") == "skipped":
            entries.append(Entry(c["name"], None, source=source, skipped=c.get("reason") or "skipped"))
        elif c in ok:
            entries.append(Entry(c["name"], results[c["result"]], source=source, declared=dict(c.get("overrides") or {}),
                                 note=c.get("note")))
    return entries


def comparison_of(documents: Mapping | Iterable[Mapping], metrics: Iterable[str] | None = None,
                  data_root: str | None = None) -> Comparison:
    """The comparison grid of one or several documents, in order; results under other protocols are
    marked (as `compare --allow-mixed` does), never refused: the documents were already produced.
    `metrics`: the grid's metrics; None takes a compare document's own, else accuracy and ECE."""
    docs = [documents] if isinstance(documents, Mapping) else list(documents)
    entries = [e for d in docs for e in entries_from_document(d)]
    unique_names(entries)
    check_protocols(entries, allow_mixed=True)
    if metrics is None:  # those a compare document was shown with (`--metrics`), else the default
        shown = [(d.get("comparison") or {}).get("metrics") for d in docs if isinstance(d.get("comparison"), Mapping)]
        metrics = next((m for m in shown if isinstance(m, list) and m and all(k in METRICS for k in m)), None)
    return build(entries, list(metrics) if metrics else None, data_root=data_root)
