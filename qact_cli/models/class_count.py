"""How many classes a model from elsewhere has when nobody says (docs/reference.md, "Classes").

In order: the user's `num_classes` (flag, card, keyword) or class names; what the weights know (a
torchvision weights enum's categories; a weights file whose classifier head is the one thing that
differs from the model built with the dataset's count); else, in an evaluation, the dataset's count.
Builders that take `num_classes` (torchvision, timm, a callable with that parameter) are given it,
so they build the head the dataset needs. Whatever the count, the model's output width is checked on
the first batch (eval/protocol.py), so a wrong guess is exit 3 naming both counts, never a score.
"""

from __future__ import annotations

import torch
from torch import nn

# where meta["model"]["num_classes"] came from (class_count_source), for the messages of a mismatch
SOURCES = ("argument", "card", "weights", "model", "dataset")


def given_classes(values: dict) -> int | None:
    """The count the user gave: num_classes, else one per class name."""
    return values.get("num_classes") or len(values.get("class_names") or []) or None


def for_builder(values: dict, dataset_classes: int | None) -> dict:
    """The values a builder gets: with the dataset's count as num_classes when the user gave none."""
    if given_classes(values) or not dataset_classes:
        return values
    return {**values, "num_classes": int(dataset_classes)}


def head_width(model: nn.Module, state_dict: dict[str, torch.Tensor], built: int | None) -> int | None:
    """The output width of the weights' classifier head, when the head is all that differs from `model`
    (built with `built` outputs): every differing tensor has `built` rows in the model and the same
    other number of rows in the file, and the same trailing shape. None when nothing or more differs."""
    if not built:
        return None
    own = model.state_dict()
    sd = state_dict  # read_state_dict has stripped DDP / torch.compile prefixes
    candidates = [sd]
    heads = {k.split(".", 1)[0] for k in sd}
    if len(heads) == 1 and all("." in k for k in sd):  # Lightning's `model.` in front of every key
        candidates.append({k.split(".", 1)[1]: v for k, v in sd.items()})
    for cand in candidates:
        if set(cand) - set(own) or {k for k in own if k not in cand and not k.endswith("num_batches_tracked")}:
            continue  # other layers: fit_weights names them
        differ = [(tuple(cand[k].shape), tuple(v.shape)) for k, v in own.items() if k in cand and cand[k].shape != v.shape]
        if not differ or any(len(f) != len(m) or m[0] != built or f[1:] != m[1:] for f, m in differ):
            continue
        rows = {f[0] for f, _ in differ}
        if len(rows) == 1:
            return rows.pop()
    return None


def count_source(values: dict, sources: dict, defaults: dict, dataset_classes: int | None) -> str:
    """Where the count in use came from (one of SOURCES)."""
    for key in ("num_classes", "class_names"):
        if values.get(key):
            return "card" if sources.get(key) == "card" else "argument"
    if defaults.get("class_count_source") or defaults.get("class_source") == "weights":
        return defaults.get("class_count_source") or "weights"
    if dataset_classes and defaults.get("num_classes") in (None, dataset_classes):
        return "dataset"
    return "model"
