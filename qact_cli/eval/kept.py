"""Generated corruptions (`gen:NAME`) computed once per cell and kept in memory when they fit, so
that the second model of a comparison (and `--adapt bn`'s extra pass) does not corrupt the same
images again; the corruption is seeded per image index, so this changes no number.
"""

from __future__ import annotations

import numpy as np
import torch

from ..data import Cell, ImageSource

MATERIALIZE_BYTES = 1 << 30  # keep generated cells in memory up to 1 GiB in all


class _KeptSource(ImageSource):
    """A cell whose images are kept in memory once read: each image is computed at most once."""

    def __init__(self, source: ImageSource):
        self.source = source
        self.num_classes, self.classes, self.name = source.num_classes, source.classes, source.name
        self._pos = np.full(len(source), -1, dtype=np.int64)  # row of image i in the store, -1 until read
        self._x: torch.Tensor | None = None
        self._y: torch.Tensor | None = None

    @property
    def image_size(self):
        return self.source.image_size

    @property
    def labels(self):
        return self.source.labels

    def __len__(self):
        return len(self.source)

    def __getitems__(self, indices):
        idx = np.asarray(indices, dtype=np.int64)
        missing = np.unique(idx[self._pos[idx] < 0])
        if len(missing):
            x, y = self.source.__getitems__(missing)
            start = 0 if self._x is None else len(self._x)
            self._x = x if self._x is None else torch.cat([self._x, x])
            self._y = y if self._y is None else torch.cat([self._y, y])
            self._pos[missing] = np.arange(start, start + len(missing))
        rows = torch.from_numpy(self._pos[idx])
        return self._x[rows], self._y[rows]

    def __getitem__(self, i):
        x, y = self.__getitems__([i])
        return x[0], int(y[0])


def keep_generated(cells: list[Cell], limit: int | None) -> list[Cell]:
    """Wrap generated cells so that each image is corrupted once, when the images used fit in memory."""
    from ..data.corrupted import GeneratedSource

    generated = [c for c in cells if isinstance(c.source, GeneratedSource)]
    used = sum(min(len(c.source), limit or len(c.source)) * 3 * c.source.image_size[0] * c.source.image_size[1]
               for c in generated)
    if not generated or used > MATERIALIZE_BYTES:
        return cells
    return [Cell(c.corruption, c.severity, _KeptSource(c.source)) if isinstance(c.source, GeneratedSource) else c
            for c in cells]
