"""Cheap identities of data, so a number is never compared with one computed on other data.

- `input_fingerprint(images, labels)`: the input of a `qact corrupt` run (its labels and three rows),
  recorded in the folder's manifest and checked when eval reads those images back as severity 0.
- `data_identity(cells)`: what a result was scored on (each cell's name and size, a hash of its labels and
  of a few of its rows), recorded as `protocol.data` and compared by `--baseline`. Content, not paths:
  the same files under another folder are the same data.
"""

from __future__ import annotations

import hashlib

import numpy as np

SAMPLE_ROWS = 3


def _sample(n: int) -> list[int]:
    return sorted({0, n // 2, n - 1}) if n else []


def input_fingerprint(images, labels) -> str:
    """sha256 (16 hex) of the labels (int64) and of rows 0, n/2 and n-1 of `images` (any uint8 array-like)."""
    y = np.ascontiguousarray(np.asarray(labels, dtype=np.int64))
    h = hashlib.sha256(y.tobytes())
    for i in _sample(len(y)):
        h.update(np.ascontiguousarray(np.asarray(images[i:i + 1])).tobytes())
    return h.hexdigest()[:16]


def data_identity(cells) -> dict:
    """{"fingerprint": 16 hex, "n_images": total} over `cells` (data.Cell: corruption, severity, source)."""
    h = hashlib.sha256()
    total = 0
    for cell in cells:
        src = cell.source
        n = len(src)
        total += n
        h.update(f"{cell.corruption}/{cell.severity}/{n};".encode())
        labels = getattr(src, "labels", None)
        if labels is not None:
            h.update(np.ascontiguousarray(np.asarray(labels, dtype=np.int64)).tobytes())
        if n:
            x, _ = src.__getitems__(np.asarray(_sample(n), dtype=np.int64))
            h.update(np.ascontiguousarray(np.asarray(x)).tobytes())
    return {"fingerprint": h.hexdigest()[:16], "n_images": total}
