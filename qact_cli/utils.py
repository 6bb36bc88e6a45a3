"""Small shared helpers: seeding, device choice, atomic writes, environment records, hashing."""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import random
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from .errors import InputError, UsageError


def tune_allocator() -> bool:
    """Let glibc keep freed memory for reuse instead of returning it to the system (what `qact` does at start;
    library users may call it too). Corruptions and activations allocate and free megabyte-sized temporaries
    batch after batch; by default glibc hands blocks of that size back with munmap/trim, so every batch
    page-faults its memory in again (~5 us per 4 KiB page on a VM: 10-15% of a corruption's time). The cost:
    the process keeps its peak heap. `QACT_MALLOC=default` leaves glibc alone. Returns True if applied."""
    if os.environ.get("QACT_MALLOC", "").lower() == "default" or not platform.system() == "Linux":
        return False
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt  # glibc only (musl has none)
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    return bool(mallopt(m_mmap_threshold, 32 << 20)) and bool(mallopt(m_trim_threshold, 1 << 30))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def select_device(spec: str = "auto") -> torch.device:
    """`auto` = CUDA if available, else CPU (interface §1); explicit devices are checked."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise UsageError(f"invalid --device {spec!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {spec} asked for, but CUDA is not available here; use --device cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"--device {spec} asked for, but MPS is not available here; use --device cpu")
    return device


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` only if the block succeeds.

    A crash or Ctrl-C leaves the final name untouched (either the old file or nothing).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or ".tmp", dir=path.parent)
        os.close(fd)
    except OSError as e:
        raise InputError(f"cannot write {path}: {e.strerror}; choose a writable folder") from None
    tmp = Path(tmp)
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as e:
        raise InputError(f"cannot write {path}: {e.strerror}; check the folder's permissions and free space") from None
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def environment(device: torch.device | str | None = None) -> dict:
    """Versions and hardware, recorded in every result and checkpoint."""
    from . import __version__

    env = {
        "qact": __version__,
        "torch": str(torch.__version__),
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
    }
    if device is not None:
        device = torch.device(device)
        env["device"] = str(device)
        if device.type == "cuda":
            env["gpu"] = torch.cuda.get_device_name(device)
            env["cuda"] = torch.version.cuda
    return env
