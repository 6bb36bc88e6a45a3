"""`corrupted:DIR`: a folder written by `qact corrupt` (npy or image layout), by its own name.

Read through its `manifest.json`: the layout, the corruptions and severities it holds (the defaults
of `eval`, so `--corruptions common` is not needed and never asks for a corruption it lacks), the
class names of the image layout, and where its clean images came from. Severity 0 is, as for
`--dataset cifar10c --data-root DIR`, the input the manifest names (`qact corrupt --input`, checked by
its fingerprint), else the clean test split of the published set it was made from (`qact corrupt
--dataset cifar10|cifar100|tinyimagenet`, all of it) when that is under the data root or next to DIR.
Results record the dataset as `corrupted:DIR` and, as for every dataset, the fingerprint of the cells
scored (`protocol.data`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..constants import IMAGENET_MEAN, IMAGENET_STD
from ..errors import InputError
from .corrupted import (CLEAN_FOLDERS, CleanSplit, FolderCorrupted, NpyCorrupted, _tree_classes, read_manifest)
from .npyrows import NpyRows
from .registry import register_dataset

PREFIX = "corrupted"


class _Held:
    """The corruptions the folder holds: what `eval` scores by default (`--corruptions common|all`)."""

    held: list[str]

    def corruption_names(self) -> list[str]:
        return list(self.held)


class CorruptNpy(_Held, NpyCorrupted):
    pass


class CorruptTree(_Held, FolderCorrupted):
    pass


def held_corruptions(manifest: dict, fmt: str) -> list[str]:
    """The manifest's corruptions whose every cell was finished (an interrupted run holds fewer)."""
    names = manifest.get("corruptions")
    if not isinstance(names, list) or not all(isinstance(c, str) for c in names):
        raise InputError(f"{manifest['_path']}: 'corruptions' must be a list of names, got {names!r}")
    done = set(manifest.get("completed") or [])
    if manifest.get("complete") is True:
        return list(names)
    sev = manifest.get("severities") or []
    return [c for c in names if (c in done if fmt == "npy" else all(f"{c}/{s}" in done for s in sev))]


def _clean_name(manifest: dict) -> str | None:
    """The published clean set the folder was made from (whole test split, no --limit), else None."""
    src = manifest.get("source") or {}
    text = src.get("dataset") if isinstance(src, dict) else None
    if not isinstance(text, str) or src.get("selection"):
        return None
    name, _, split = text.partition(" (")
    return name if name in CLEAN_FOLDERS and split == "test)" else None


@register_dataset(PREFIX, prefixed=True)
def corrupt_folder(directory: str, root: Path, download: bool = False):
    d = Path(directory).expanduser()
    if not d.is_dir():
        raise InputError(f"corrupted folder not found: {d}; give a folder written by `qact corrupt --out DIR`")
    manifest = read_manifest(d)
    if manifest is None:
        raise InputError(f"{d} has no manifest.json, so it was not written by `qact corrupt`; for a published set "
                         f"use its name (e.g. --dataset cifar10c --data-root {d})")
    fmt = manifest.get("format")
    if fmt not in ("npy", "jpeg", "png"):
        raise InputError(f"{manifest['_path']}: unknown format {fmt!r} (npy, jpeg or png); write the folder again "
                         "with `qact corrupt`")
    held = held_corruptions(manifest, fmt)
    if not held:
        raise InputError(f"{d} holds no finished corruption ({manifest['_path']} lists none as completed); "
                         "run the same `qact corrupt` command again to finish it")
    name = f"{PREFIX}:{d}"
    clean = CleanSplit(name, _clean_name(manifest), [root, d.parent], download, manifest)
    if fmt == "npy":
        labels = np.asarray(NpyRows.open(d / "labels.npy", "labels file", "`qact corrupt --format npy` writes it"))
        k = int(labels.max()) + 1 if len(labels) and np.issubdtype(labels.dtype, np.integer) else 1
        ds = CorruptNpy(name, d, k, IMAGENET_MEAN, IMAGENET_STD, clean, manifest)
        ds.exact_classes = False  # the class count is the labels' span, as for npy:DIR
    else:
        classes = manifest.get("classes")
        classes = [str(c) for c in classes] if isinstance(classes, list) and classes else _tree_classes(d)
        ds = CorruptTree(name, d, clean, classes, str(manifest.get("profile") or "cifar"), exact_classes=False)
    ds.profile_hint = str(manifest.get("profile") or ds.profile_hint)
    ds.held = held
    return ds
