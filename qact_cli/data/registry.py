"""Datasets by name: `get_dataset("cifar10c", root=..., download=False)`.

Names are plain (`digits`, `cifar10`) or prefixed with an argument (`npy:DIR`, `folder:DIR`,
`gen:NAME`). A dataset registers its factory where it is defined, with
`@register_dataset("digits")` (`factory(root, download) -> Dataset`) or
`@register_dataset("npy", prefixed=True)` (`factory(arg, root, download) -> Dataset`); the CLI
needs no change.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from ..errors import UsageError
from ..registry import Registry
from ..suggest import closest

DATASETS: Registry[Callable] = Registry("dataset")  # name -> factory(root, download)
PREFIXED: Registry[Callable] = Registry("dataset prefix")  # prefix -> factory(arg, root, download)


def register_dataset(name: str, prefixed: bool = False) -> Callable[[Callable], Callable]:
    """Decorator: register a dataset factory under `name` (`name:ARG` when `prefixed`)."""
    return (PREFIXED if prefixed else DATASETS).register(name)


def default_root(root: str | os.PathLike | None = None) -> Path:
    """`--data-root`, else `$QACT_DATA`, else `~/.cache/qact/data`."""
    if root:
        return Path(root).expanduser()
    if os.environ.get("QACT_DATA"):
        return Path(os.environ["QACT_DATA"]).expanduser()
    return Path("~/.cache/qact/data").expanduser()


def dataset_names() -> list[str]:
    return sorted(DATASETS) + [f"{p}:..." for p in sorted(PREFIXED)]


def get_dataset(name, root: str | os.PathLike | None = None, download: bool = False):
    """The Dataset for a name (`digits`, `npy:DIR`, ...); a Dataset passed in is returned as it is."""
    if not isinstance(name, str):
        return name
    root = default_root(root)
    if ":" in name:
        prefix, arg = name.split(":", 1)
        if prefix in PREFIXED and arg:
            return PREFIXED.get(prefix)(arg, root, download)
    elif name in DATASETS:
        return DATASETS.get(name)(root, download)
    hint = closest(name, [*DATASETS, *(f"{p}:" for p in PREFIXED)])
    hint = f"; did you mean {hint!r}?" if hint else ""
    raise UsageError(f"unknown dataset {name!r}{hint}; choose one of: {', '.join(dataset_names())}")
