"""Reading arrays from disk safely: memory-mapped `.npy` and the CIFAR pickles without pickle's risks."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import numpy as np

from ..errors import InputError


def load_npy(path: Path, what: str = "array", hint: str = "") -> np.ndarray:
    """Memory-map a `.npy` file (never loads it whole); bad files are an InputError naming the path."""
    if not path.is_file():
        raise InputError(f"{what} not found: {path}" + (f"; {hint}" if hint else ""))
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror}; check the file's permissions") from None
    if magic != b"\x93NUMPY" and not magic.startswith(b"PK"):  # .npy magic (an .npz is a zip)
        raise InputError(f"{path} is not a .npy array file (no NumPy header); save the {what} with numpy.save")
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:  # a damaged .npz raises BadZipFile
        raise InputError(f"cannot read {path} as a .npy array ({e}); the file is truncated or not a .npy file, fetch it again") from None
    if not isinstance(arr, np.ndarray):
        if hasattr(arr, "close"):
            arr.close()
        raise InputError(f"{path} is not a single .npy array; expected a .npy file")
    return arr


class _CifarUnpickler(pickle.Unpickler):
    """The CIFAR batches are pickled dicts of numpy arrays: allow exactly what they need, nothing else."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),
    }

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def load_cifar_batch(path: Path) -> dict:
    if not path.is_file():
        raise InputError(f"CIFAR file not found: {path}")
    try:
        with open(path, "rb") as f:
            return _CifarUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
        raise InputError(f"cannot read CIFAR batch {path} ({e}); the file is corrupt, fetch it again with --download") from None
