"""Cheap identities of data, so a number is never compared with one computed on other data.

- `input_fingerprint(images, labels)`: the input of a `qact corrupt` run (its labels and three rows),
  recorded in the folder's manifest and checked when eval reads those images back as severity 0.
- `data_identity(cells)`: what a result was scored on (each cell's name and size, a hash of its labels and
  of a few of its rows), recorded as `protocol.data` and compared by `--baseline`. Content, not paths:
  the same files under another folder are the same data.
- `source_fingerprint(source)`: a digest of a whole ImageSource (images and labels), the key under
  which a probe's training features are cached on disk.
"""

from __future__ import annotations

import hashlib
import os

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


def source_fingerprint(source) -> str:
    """A short digest that changes whenever the images or labels of an ImageSource do.

    Arrays in memory are hashed whole (digits: 4 MB, CIFAR: 150 MB, ~0.3 s); a memory-mapped
    `.npy` by its path, size and mtime; image files by their paths, sizes and mtimes; a subset
    by its base and indices. Anything else is read and hashed in full (safe, if slow).
    """
    from .base import ArraySource, FolderSource, Subset

    h = hashlib.sha256(type(source).__name__.encode())
    if isinstance(source, Subset):
        h.update(source_fingerprint(source.base).encode())
        h.update(np.ascontiguousarray(source.indices, dtype=np.int64).tobytes())
    elif isinstance(source, ArraySource):
        images = source.images
        filename = getattr(images, "filename", None)
        if filename:
            st = os.stat(filename)
            h.update(f"{os.path.realpath(filename)}|{st.st_size}|{st.st_mtime_ns}|{images.shape}".encode())
        else:
            h.update(f"{images.shape}|{images.dtype}".encode())
            h.update(memoryview(np.ascontiguousarray(images)).cast("B"))
        h.update(np.ascontiguousarray(source.labels, dtype=np.int64).tobytes())
    elif isinstance(source, FolderSource):
        for path, label in source.samples:
            st = os.stat(path)
            h.update(f"{path}|{st.st_size}|{st.st_mtime_ns}|{label}\n".encode())
    else:
        for start in range(0, len(source), 256):
            x, y = source.__getitems__(np.arange(start, min(start + 256, len(source))))
            h.update(x.contiguous().numpy().tobytes())
            h.update(y.numpy().astype(np.int64).tobytes())
    return h.hexdigest()[:16]
