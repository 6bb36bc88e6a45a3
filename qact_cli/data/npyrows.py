"""A `.npy` array read lazily by rows with plain file reads (the published -C sets are 3 GB each).

Why not keep the `np.load(mmap_mode="r")` memory map: every page of a map that has been read stays
in the process's resident set until the kernel wants it back, so streaming a whole CIFAR-10-C file
through a memory map shows its full size in peak RSS, and a memmap pickled to a spawned DataLoader
worker is copied whole. Reading each batch's rows with one `readinto` at the computed offset keeps
memory at one batch; the page cache still makes repeated reads cheap. The header is parsed (and
the file's length checked) by numpy, through `arrays.load_npy`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError
from .arrays import load_npy


class NpyRows:
    """Rows [start, stop) of a C-ordered `.npy` file: `shape`, `dtype`, `ndim`, `len`, and indexing
    by int, slice or integer array, each returning a fresh numpy array read from disk."""

    def __init__(self, path: Path, shape: tuple, dtype: np.dtype, offset: int, start: int = 0, stop: int | None = None):
        self.path, self.row_shape, self.dtype, self.offset = Path(path), tuple(shape[1:]), np.dtype(dtype), int(offset)
        self.start, self.stop = start, shape[0] if stop is None else stop
        self.row_bytes = int(np.prod(self.row_shape, dtype=np.int64)) * self.dtype.itemsize

    @classmethod
    def open(cls, path: Path, what: str = "array", hint: str = "") -> "NpyRows":
        """Validate the header and length of `path` (InputError naming it) without reading the data."""
        path = Path(path)
        if path.is_file():
            with open(path, "rb") as f:
                magic = f.read(6)
            if magic != b"\x93NUMPY":  # np.load would try anything else as a pickle or a zip (.npz)
                raise InputError(f"{path} is not a .npy file (it starts with {magic!r}); fetch it again or pass the right file")
        arr = load_npy(path, what, hint)
        if arr.ndim == 0:
            raise InputError(f"{path}: {what} holds a single value, expected an array of rows")
        if not arr.flags.c_contiguous:
            raise InputError(f"{path}: {what} is stored in Fortran order; re-save it with np.save(np.ascontiguousarray(a))")
        shape, dtype, offset = arr.shape, arr.dtype, int(arr.offset)
        del arr  # drop the map: only the header was needed
        return cls(path, shape, dtype, offset)

    @property
    def shape(self) -> tuple:
        return (self.stop - self.start,) + self.row_shape

    @property
    def ndim(self) -> int:
        return 1 + len(self.row_shape)

    def __len__(self) -> int:
        return self.stop - self.start

    def rows(self, start: int, stop: int) -> "NpyRows":
        """A lazy view of rows [start, stop) of this view (nothing is read)."""
        start, stop = max(0, start), min(len(self), stop)
        return NpyRows(self.path, (0,) + self.row_shape, self.dtype, self.offset, self.start + start, self.start + max(start, stop))

    def _read_into(self, out: np.ndarray, first: int) -> None:
        """Fill `out` (rows, *row_shape) with rows first.. of this view: one seek and one read.
        The file is opened per read (microseconds next to a batch's forward pass), so a view holds
        no handle: it pickles to a DataLoader worker as a few numbers and never leaks one."""
        buf = memoryview(out.reshape(-1).view(np.uint8))
        with open(self.path, "rb", buffering=0) as fh:
            fh.seek(self.offset + (self.start + first) * self.row_bytes)
            got = 0
            while got < len(buf):
                n = fh.readinto(buf[got:])
                if not n:
                    raise InputError(f"{self.path} ended early while reading rows; the file is truncated or was "
                                     "replaced during the run, fetch it again")
                got += n

    def read(self, start: int, stop: int) -> np.ndarray:
        start, stop = max(0, start), min(len(self), stop)
        out = np.empty((max(0, stop - start),) + self.row_shape, self.dtype)
        if len(out):
            self._read_into(out, start)
        return out

    def take(self, indices) -> np.ndarray:
        """Rows at `indices` (any order, repeats allowed): contiguous runs are read in one go."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        idx = np.where(idx < 0, idx + len(self), idx)
        if len(idx) and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"row index out of range for {len(self)} rows")
        if not len(idx):
            return np.empty((0,) + self.row_shape, self.dtype)
        lo, hi = int(idx.min()), int(idx.max()) + 1
        if hi - lo <= 8 * len(idx):  # dense enough (e.g. an evenly spaced --limit): one read of the span
            return self.read(lo, hi)[idx - lo]
        order = np.argsort(idx, kind="stable")
        sorted_idx = idx[order]
        out = np.empty((len(idx),) + self.row_shape, self.dtype)
        breaks = np.flatnonzero(np.diff(sorted_idx) != 1) + 1
        starts, ends = np.r_[0, breaks], np.r_[breaks, len(idx)]
        for a, b in zip(starts.tolist(), ends.tolist()):
            if a < b:
                out[order[a:b]] = self.read(int(sorted_idx[a]), int(sorted_idx[b - 1]) + 1)
        return out

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            i = int(key) + (len(self) if key < 0 else 0)
            if not 0 <= i < len(self):
                raise IndexError(f"row {key} out of range for {len(self)} rows")
            return self.read(i, i + 1)[0]
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            return self.read(start, stop) if step == 1 else self.take(np.arange(start, stop, step))
        return self.take(key)

    def __array__(self, dtype=None, copy=None):
        out = self.read(0, len(self))
        return out if dtype is None else out.astype(dtype, copy=False)

    def __repr__(self) -> str:
        return f"NpyRows({self.path}, rows {self.start}:{self.stop}, {self.dtype}, row shape {self.row_shape})"
