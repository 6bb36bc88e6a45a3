"""Command-line items of `qact compare`: result JSONs (single, multi, or an earlier compare document)
and checkpoints, which are evaluated first with the eval options given."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..errors import InputError
from ..eval.gates import load_result
from .evaluation import EvalJob, EvalOptions, evaluate_jobs
from .table import Entry

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")


def item_kind(item: str) -> str:
    """'json' or 'checkpoint', from the file's first bytes (a torch checkpoint is a zip archive)."""
    path = Path(item)
    if not path.exists():
        raise InputError(f"compare item not found: {item}; pass result JSONs (`qact eval --json`) or checkpoints")
    if not path.is_file():
        raise InputError(f"compare item {item} is not a file; pass result JSONs or checkpoints")
    with open(path, "rb") as f:
        head = f.read(64)
    if head.startswith(b"PK\x03\x04") or path.suffix.lower() in CHECKPOINT_SUFFIXES:
        return "checkpoint"
    if head.lstrip()[:1] in (b"{", b"[") or path.suffix.lower() == ".json":
        return "json"
    raise InputError(f"compare item {item} is neither a result JSON nor a qact checkpoint "
                     "(write results with `qact eval --json`, checkpoints with `qact train`)")


def _entries_from_json(item: str) -> list[Entry]:
    import json

    results = load_result(item)
    try:
        comparison = json.loads(Path(item).read_text()).get("comparison") or {}
        columns = [c for c in comparison.get("columns", []) if isinstance(c, dict) and c.get("name")]
    except (ValueError, AttributeError):
        columns = []
    ok = [c for c in columns if c.get("status") == "ok" and isinstance(c.get("result"), int)]
    if not columns or len(ok) != len(results):  # a plain result document
        return [Entry(r["model"].get("name") or r["model"].get("arch", "model"), r, source=item) for r in results]
    # a compare document: its columns again, with the overrides its experiment declared and the models it skipped
    entries = []
    for c in columns:
        if c.get("status") == "skipped":
            entries.append(Entry(c["name"], None, source=item, skipped=c.get("reason") or "skipped"))
        elif c in ok:
            entries.append(Entry(c["name"], results[c["result"]], source=item, declared=dict(c.get("overrides") or {}),
                                 note=c.get("note")))
    return entries


def load_items(items: list[str], opts: EvalOptions, on_start: Callable[[str, int], None] | None = None,
               on_cell: Callable[[dict], None] | None = None) -> list[Entry]:
    """Entries in the order given; every checkpoint is evaluated on the same cells."""
    kinds = [item_kind(it) for it in items]
    # bad JSON items fail before any checkpoint is evaluated
    from_json = {i: _entries_from_json(it) for i, (it, k) in enumerate(zip(items, kinds)) if k == "json"}
    ckpts = [it for it, k in zip(items, kinds) if k == "checkpoint"]
    evaluated = iter(evaluate_jobs([EvalJob(c) for c in ckpts], opts, on_start=on_start, on_cell=on_cell))
    entries: list[Entry] = []
    for i, (it, kind) in enumerate(zip(items, kinds)):
        if kind == "checkpoint":
            r = next(evaluated)
            entries.append(Entry(r["model"].get("name") or Path(it).stem, r, source=it))
        else:
            entries += from_json[i]
    return entries
