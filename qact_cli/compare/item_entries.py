"""Command-line items of `qact compare`: result JSONs (single, multi, or an earlier compare document)
and MODELs (qact checkpoints, specs like torchvision:resnet18, model cards, archives), which are
evaluated first with the eval options given."""

from __future__ import annotations

from pathlib import Path
from ..errors import InputError
from ..eval.gates import load_result
from ..eval.options import EvalOptions
from ..eval.run import Hooks, plan, run_jobs
from ..models.kinds import ARCHIVE_SUFFIXES, CARD_SUFFIXES
from .documents import entries_from_document
from .table import Entry

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt")


def item_kind(item: str) -> str:
    """'json' or 'model': a result document, or anything `qact eval` takes (a qact checkpoint, a spec
    string, a card, an archive); a checkpoint is told from JSON by its first bytes (a zip archive)."""
    path = Path(item)
    if not path.exists():
        if ":" in item and not item.lower().endswith(".json"):
            return "model"  # a spec (torchvision:NAME, pkg.module:callable): resolved when it is evaluated
        raise InputError(f"compare item not found: {item}; pass result JSONs (`qact eval --json`), checkpoints "
                         "or model specs (torchvision:resnet18)")
    if not path.is_file():
        raise InputError(f"compare item {item} is not a file; pass result JSONs or models")
    suffix = path.suffix.lower()
    if suffix in CARD_SUFFIXES + ARCHIVE_SUFFIXES:
        return "model"
    with open(path, "rb") as f:
        head = f.read(64)
    if head.startswith(b"PK\x03\x04") or suffix in CHECKPOINT_SUFFIXES:
        return "model"
    if head.lstrip()[:1] in (b"{", b"[") or suffix == ".json":
        return "json"
    raise InputError(f"compare item {item} is neither a result JSON nor a model "
                     "(write results with `qact eval --json`, checkpoints with `qact train`)")


def _entries_from_json(item: str) -> list[Entry]:
    import json

    load_result(item)  # validated first: a bad file is exit 3
    return entries_from_document(json.loads(Path(item).read_text()), source=item)


def load_items(items: list[str], opts: EvalOptions, model_flags: dict | None = None,
               hooks: Hooks | None = None) -> list[Entry]:
    """Entries in the order given; every model is evaluated on the same cells. `model_flags`: the
    single-model flags (they describe the one non-checkpoint model among the items)."""
    kinds = [item_kind(it) for it in items]
    # bad JSON items fail before any model is evaluated
    from_json = {i: _entries_from_json(it) for i, (it, k) in enumerate(zip(items, kinds)) if k == "json"}
    models = [it for it, k in zip(items, kinds) if k == "model"]
    jobs, backbone = plan(models, **(model_flags or {}))
    evaluated = iter(run_jobs(jobs, opts, hooks, backbone_weights=backbone))
    entries: list[Entry] = []
    for i, (it, kind) in enumerate(zip(items, kinds)):
        if kind == "model":
            r = next(evaluated)
            entries.append(Entry(r["model"].get("name") or Path(it).stem, r, source=it))
        else:
            entries += from_json[i]
    return entries
