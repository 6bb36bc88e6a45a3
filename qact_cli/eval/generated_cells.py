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
    """A cell whose images are kept in memory once read: each image is computed at most once.

    Images are stored in the order they are first read, in a buffer allocated once for `capacity` images (the
    cell, or its `--limit` subset) on the first read; an access pattern that reads more grows it by doubling, so
    storing stays linear in the images read (appending with torch.cat per batch copied the store every time)."""

    def __init__(self, source: ImageSource, capacity: int | None = None):
        self.source = source
        self.num_classes, self.classes, self.name = source.num_classes, source.classes, source.name
        self._pos = np.full(len(source), -1, dtype=np.int64)  # row of image i in the store, -1 until read
        self._capacity = len(source) if capacity is None else max(1, min(len(source), capacity))
        self._n = 0  # rows of the store filled so far
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
            start, end = self._n, self._n + len(missing)
            # the store is a normal tensor, written outside inference mode: the first read may happen under
            # torch.inference_mode (scoring) and a later one outside it (adaptation), or the other way round
            with torch.inference_mode(False):
                if self._x is None or end > len(self._x):
                    self._reserve(x, y, end)
                self._x[start:end] = x
                self._y[start:end] = y
            self._pos[missing] = np.arange(start, end)
            self._n = end
        rows = torch.from_numpy(self._pos[idx])
        return self._x[rows], self._y[rows]

    def _reserve(self, x: torch.Tensor, y: torch.Tensor, need: int) -> None:
        """Make room for `need` rows shaped like `x`, `y` (the capacity at first, then at least double)."""
        size = max(need, self._capacity if self._x is None else min(len(self.source), 2 * len(self._x)))
        new_x = torch.empty((size, *x.shape[1:]), dtype=x.dtype, device=x.device)
        new_y = torch.empty((size, *y.shape[1:]), dtype=y.dtype, device=y.device)
        if self._x is not None:
            new_x[:self._n] = self._x[:self._n]
            new_y[:self._n] = self._y[:self._n]
        self._x, self._y = new_x, new_y

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
    return [Cell(c.corruption, c.severity, _KeptSource(c.source, limit)) if isinstance(c.source, GeneratedSource)
            else c for c in cells]
