"""Which model output is which dataset class: by name when both sides know their names, else by
index (docs/reference.md, "Classes").

`label_map(...)` returns None when dataset label i is model output i, else an int64 array `m` with
`m[dataset_label] = model_output`; the evaluation scores `softmax(model(x))` against `m[y]`.

ImageNet-C and Tiny-ImageNet folders are named by WordNet ids. A 1000-class model that does not name
its classes by wnid (torchvision's categories are words) is an ImageNet model in the standard index
order, the sorted ILSVRC-2012 wnids: each folder's wnid maps to its index there, so a tree holding
only some of the classes is scored against the right outputs.
"""

from __future__ import annotations

import re

import numpy as np

from ..errors import InputError
from ..models.classnames import imagenet_wnids

_WNID = re.compile(r"n\d{8}")
SHOWN = 5


def _wnids(names) -> bool:
    return bool(names) and all(_WNID.fullmatch(str(n)) for n in names)


def label_map(model_info: dict, dataset, path: str) -> np.ndarray | None:
    k = int(model_info["num_classes"])
    model_names = model_info.get("classes")
    data_names = getattr(dataset, "classes", None)
    wnid_folders = _wnids(data_names) and not _wnids(model_names)
    if wnid_folders and k == len(imagenet_wnids()):
        return _by_name(list(imagenet_wnids()), [str(n) for n in data_names], dataset, path)
    if model_names and data_names and not wnid_folders:
        return _by_name([str(n) for n in model_names], [str(n) for n in data_names], dataset, path)
    if dataset.num_classes != k and (dataset.num_classes > k or dataset.exact_classes):
        raise InputError(f"{path} is a {k}-class model but dataset {dataset.name} has {dataset.num_classes} classes; "
                         "evaluate it on a dataset with the same classes")
    return None


def width_mismatch(model_info: dict, dataset, name: str, got: int) -> str:
    """Why a model's `got` scores per image differ from its class count, and what to pass: the count's
    source (models/class_count.py) decides which flag or card key fixes it."""
    k = int(model_info["num_classes"])
    source = model_info.get("class_count_source")
    if source == "dataset":
        head = f"model {name} outputs {got} scores per image but dataset {dataset.name} has {k} classes"
        if got > k:  # the dataset may hold some of the model's classes
            return (f"{head}; pass --num-classes {got} (with --class-names to match its classes to the dataset's "
                    "by name), or evaluate it on a dataset of its classes")
        return f"{head}; evaluate it on a dataset of its {got} classes"
    said = {"argument": f"num_classes is {k} (--num-classes)", "card": f"its model card says num_classes: {k}",
            "weights": f"its weights describe {k} classes"}.get(source, f"it was built for {k} classes")
    fix = "set num_classes: {got} in the card" if source == "card" else f"pass --num-classes {got}"
    return f"model {name} outputs {got} scores per image but {said}; {fix.format(got=got)}"


def _by_name(model_names: list[str], data_names: list[str], dataset, path: str) -> np.ndarray | None:
    index = {n: i for i, n in enumerate(model_names)}
    unknown = [n for n in data_names if n not in index]
    if unknown:
        raise InputError(f"dataset {dataset.name} has classes the model {path} does not know: {_few(unknown)} "
                         f"(dataset classes: {_few(data_names)}; model classes: {_few(model_names)}); "
                         "evaluate on a dataset with the model's classes, or give the model's class names")
    m = np.array([index[n] for n in data_names], dtype=np.int64)
    return None if np.array_equal(m, np.arange(len(m))) else m


def _few(names: list[str]) -> str:
    more = f", ... ({len(names)} in all)" if len(names) > SHOWN else ""
    return ", ".join(names[:SHOWN]) + more
