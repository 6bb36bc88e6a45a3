"""Image sources: sized collections of uint8 images with integer labels.

Every dataset in the registry hands out `ImageSource`s. They are torch map-style datasets whose
items are `(uint8 tensor (3, H, W), label)`, and they fetch a whole batch at once through
`__getitems__` (which torch's DataLoader calls when present), so an array-backed source reads a
contiguous slice of a memory-mapped `.npy` file per batch instead of one row at a time.
Conversion to float and normalisation happen later, on the device (`to_model_input`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import InputError


def to_nchw(images: np.ndarray) -> torch.Tensor:
    """uint8 (B, H, W, 3) / (B, H, W) / (B, H, W, 1) -> uint8 tensor (B, 3, H, W); grey is replicated."""
    a = np.asarray(images)
    if a.ndim == 3:
        a = a[..., None]
    # a fresh, writable copy (the source may be a read-only map); numpy's uint8 transpose is ~4x faster than torch's
    t = torch.from_numpy(a.transpose(0, 3, 1, 2).copy())
    return t.expand(-1, 3, -1, -1).contiguous() if t.shape[1] == 1 else t


def limit_indices(n: int, limit: int | None) -> np.ndarray | None:
    """`--limit`: `limit` evenly spaced indices of 0..n-1 in increasing order, (k * n) // limit (None: all of
    them). The one rule of `qact eval --limit` and `qact corrupt --limit`: the first N of an image tree sorted
    by class would hold only its first classes."""
    if limit is None or limit >= n:
        return None
    return (np.arange(limit, dtype=np.int64) * n) // limit


class RowSubset:
    """Read-only view of the rows `index` of an (N, ...) array-like (numpy, memory map, NpyRows), read lazily."""

    def __init__(self, array, index: np.ndarray):
        self.array, self.index = array, np.asarray(index, dtype=np.int64)
        self.shape = (len(self.index), *array.shape[1:])
        self.ndim = len(self.shape)
        self.dtype = array.dtype

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            return self.array[int(self.index[key])]
        return np.asarray(self.array[self.index[key]])

    def __array__(self, dtype=None, copy=None):
        out = self[:]
        return out if dtype is None else out.astype(dtype, copy=False)


class ImageSource(Dataset):
    num_classes: int
    classes: list[str] | None = None
    name: str = ""

    @property
    def image_size(self) -> tuple[int, int]:
        raise TypeError(f"{type(self).__name__} must define image_size")

    def __getitems__(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        items = [self[i] for i in indices]
        return torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items], dtype=torch.long)

    def subset(self, indices: np.ndarray) -> "ImageSource":
        return Subset(self, np.asarray(indices, dtype=np.int64))

    def head(self, n: int | None) -> "ImageSource":
        """The first `n` items (all when n is None): `--limit`."""
        return self if n is None or n >= len(self) else self.subset(np.arange(n))


class WrappedSource(ImageSource):
    """A source that reads through another one (`self.base`): same size, labels and classes."""

    def __init__(self, base: ImageSource, name: str | None = None):
        self.base = base
        self.num_classes, self.classes, self.name = base.num_classes, base.classes, name or base.name

    @property
    def image_size(self):
        return self.base.image_size

    @property
    def labels(self) -> np.ndarray:
        return self.base.labels

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        x, y = self.__getitems__([i])
        return x[0], int(y[0])


class ArraySource(ImageSource):
    """Images in a uint8 array-like (N, H, W, 3) or (N, H, W): numpy array or np.memmap."""

    def __init__(self, images, labels, num_classes: int, classes=None, name: str = "", path=None):
        if images.dtype != np.uint8 or images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] not in (1, 3)):
            raise InputError(
                f"{path or name}: expected uint8 images of shape (N, H, W, 3) or (N, H, W), got {images.dtype} "
                f"{tuple(images.shape)}; convert the array to that layout"
            )
        labels = np.asarray(labels)
        if labels.ndim != 1 or len(labels) != len(images):
            raise InputError(
                f"{path or name}: {len(images)} images but labels of shape {tuple(labels.shape)}; "
                "the labels file must hold one integer per image"
            )
        self.images, self.labels = images, labels.astype(np.int64)
        self.num_classes, self.classes, self.name = num_classes, classes, name

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.images.shape[1]), int(self.images.shape[2])

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return to_nchw(self.images[i : i + 1])[0], int(self.labels[i])

    def __getitems__(self, indices):
        idx = np.asarray(indices, dtype=np.int64)
        if len(idx) and idx[-1] - idx[0] == len(idx) - 1 and np.all(np.diff(idx) == 1):
            block = self.images[idx[0] : idx[-1] + 1]  # one contiguous read of a memory map
        else:
            order = np.argsort(idx)
            block = np.empty((len(idx),) + self.images.shape[1:], np.uint8)
            block[order] = self.images[idx[order]]
        return to_nchw(block), torch.from_numpy(self.labels[idx])


class Subset(ImageSource):
    def __init__(self, base: ImageSource, indices: np.ndarray):
        self.base, self.indices = base, indices
        self.num_classes, self.classes, self.name = base.num_classes, base.classes, base.name

    @property
    def image_size(self):
        return self.base.image_size

    @property
    def labels(self) -> np.ndarray:
        return np.asarray(self.base.labels)[self.indices]

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        return self.base[int(self.indices[i])]

    def __getitems__(self, indices):
        return self.base.__getitems__(self.indices[np.asarray(indices, dtype=np.int64)])


class FolderSource(ImageSource):
    """Image files with labels (ImageFolder-style trees), decoded with PIL in DataLoader workers."""

    def __init__(self, samples: list[tuple[Path, int]], classes: list[str], name: str = "", root=None):
        if not samples:
            raise InputError(f"{root or name}: no image files found; expected <class>/<image> files inside it")
        self.samples, self.classes, self.num_classes, self.name = samples, classes, len(classes), name
        self.labels = np.array([y for _, y in samples], dtype=np.int64)
        self._size = None

    @property
    def image_size(self):
        if self._size is None:
            self._size = tuple(self[0][0].shape[1:])
        return self._size

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        from PIL import Image

        path, label = self.samples[i]
        try:
            with Image.open(path) as im:
                arr = np.asarray(im.convert("RGB"))
        except Exception as e:  # PIL raises many types for a bad file
            raise InputError(f"cannot read image {path}: {e}; remove or replace the file") from None
        return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous(), label

    def __getitems__(self, indices):
        items = [self[i] for i in indices]
        shapes = {x.shape for x, _ in items}
        if len(shapes) > 1:
            bad = self.samples[indices[[x.shape for x, _ in items].index(sorted(shapes)[-1])]][0]
            raise InputError(
                f"images of different sizes in one batch ({sorted(shapes)}), e.g. {bad}; "
                "resize the folder's images to one size first"
            )
        return torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items], dtype=torch.long)


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")


def scan_folder(root: Path, classes: list[str] | None = None) -> tuple[list[tuple[Path, int]], list[str]]:
    """ImageFolder layout: `root/<class>/**/<image>`; classes sorted by name unless given."""
    if not root.is_dir():
        raise InputError(f"image folder not found: {root}; pass an existing folder with <class>/<image> files")
    if classes is None:
        classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    index = {c: i for i, c in enumerate(classes)}
    samples = [
        (p, index[d])
        for d in classes
        if (root / d).is_dir()
        for p in sorted((root / d).rglob("*"))
        if p.suffix.lower() in IMAGE_EXTENSIONS
    ]
    return samples, classes


def _passthrough(batch):
    return batch


def loader_workers(source: ImageSource, workers: int | None) -> int:
    """DataLoader worker processes: `workers` as given, or for None up to 4 on image files (decoding pays for
    the processes), none on in-memory arrays."""
    if workers is not None:
        return workers
    files = isinstance(source, FolderSource) or (isinstance(source, Subset) and isinstance(source.base, FolderSource))
    return min(4, max(1, torch.get_num_threads())) if files else 0


def make_loader(
    source: ImageSource,
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
    workers: int | None = None,
    drop_last: bool = False,
) -> DataLoader:
    """Batches of (uint8 (B, 3, H, W), int64 (B,)); shuffling is seeded, file order otherwise.
    workers: DataLoader worker processes; None: up to 4 for image files (decoding pays), none for arrays."""
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(
        source,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        num_workers=loader_workers(source, workers),
        collate_fn=_passthrough,
        drop_last=drop_last,
        persistent_workers=False,
    )
