"""Datasets by name (docs/data.md; the README's "Data" section).

`get_dataset("cifar10c", root=..., download=False)` returns a `Dataset` whose `split("train"|"test")`
gives `ImageSource`s and whose `cells(corruptions, severities)` gives the evaluation cells. Names
are plain (`digits`, `cifar10`) or prefixed with an argument (`npy:DIR`, `folder:DIR`, `gen:NAME`);
each dataset registers itself with `@register_dataset` (registry.py) where it is defined, and this
package imports those modules so that every registered name is known.
"""

from __future__ import annotations

from . import corrupted  # noqa: F401  (cifar10c, cifar100c, tinyimagenetc, imagenetc, mnistc, gen:)
from . import corrupt_folder  # noqa: F401  (corrupted:DIR, a folder written by `qact corrupt`)
from .base import ArraySource, FolderSource, ImageSource, make_loader
from .clean import Cell, Dataset  # digits, cifar10, cifar100, tinyimagenet, npy:, folder:
from .registry import DATASETS, PREFIXED, dataset_names, default_root, get_dataset, register_dataset

__all__ = [
    "ArraySource", "Cell", "DATASETS", "Dataset", "FolderSource", "ImageSource", "PREFIXED",
    "dataset_names", "default_root", "get_dataset", "make_loader", "register_dataset",
]
