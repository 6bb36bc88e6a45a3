"""Datasets by name (docs/data.md; the README's "Data" section).

`get_dataset("cifar10c", root=..., download=False)` returns a `Dataset` whose `split("train"|"test")`
gives `ImageSource`s and whose `cells(corruptions, severities)` gives the evaluation cells. Names
are plain (`digits`, `cifar10`) or prefixed with an argument (`npy:DIR`, `folder:DIR`, `gen:NAME`);
new datasets register themselves in `DATASETS` / `PREFIXED` without touching the CLI.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from ..errors import UsageError
from .base import ArraySource, FolderSource, ImageSource, make_loader
from .clean import Cell, Dataset, cifar10, cifar100, digits, image_folder, npy_dir, tinyimagenet

DATASETS: dict[str, Callable[..., Dataset]] = {
    "digits": digits,
    "cifar10": cifar10,
    "cifar100": cifar100,
    "tinyimagenet": tinyimagenet,
}
PREFIXED: dict[str, Callable[..., Dataset]] = {
    "npy": npy_dir,
    "folder": image_folder,
}


def default_root(root: str | os.PathLike | None = None) -> Path:
    """`--data-root`, else `$QACT_DATA`, else `~/.cache/qact/data`."""
    if root:
        return Path(root).expanduser()
    if os.environ.get("QACT_DATA"):
        return Path(os.environ["QACT_DATA"]).expanduser()
    return Path("~/.cache/qact/data").expanduser()


def dataset_names() -> list[str]:
    return sorted(DATASETS) + [f"{p}:..." for p in sorted(PREFIXED)]


def get_dataset(name: str, root: str | os.PathLike | None = None, download: bool = False) -> Dataset:
    root = default_root(root)
    if ":" in name:
        prefix, arg = name.split(":", 1)
        if prefix in PREFIXED and arg:
            return PREFIXED[prefix](arg, root, download)
    elif name in DATASETS:
        return DATASETS[name](root, download)
    from ..suggest import closest

    hint = closest(name, [*DATASETS, *(f"{p}:" for p in PREFIXED)])
    hint = f"; did you mean {hint!r}?" if hint else ""
    raise UsageError(f"unknown dataset {name!r}{hint}; choose one of: {', '.join(dataset_names())}")


from . import corrupted  # noqa: E402,F401  (registers cifar10c, cifar100c, tinyimagenetc, imagenetc, mnistc, gen:)

__all__ = [
    "ArraySource", "Cell", "DATASETS", "Dataset", "FolderSource", "ImageSource", "PREFIXED",
    "dataset_names", "default_root", "get_dataset", "make_loader",
]
