"""Small shared helpers: seeding, device choice, atomic writes, environment records, hashing."""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import random
import stat
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from .errors import InputError, UsageError
from .native import kernel as qact_kernel
from .startup import check_seed


def seed_everything(seed: int) -> None:
    check_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def select_device(spec: str = "auto") -> torch.device:
    """`auto` = CUDA if available, else CPU (docs/protocol.md); explicit devices are checked."""
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


def current_umask() -> int:
    """The process umask, read without changing it where /proc allows (os.umask alone must set it)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def output_mode(path: Path) -> int:
    """The mode `open(path, "w")` would give: an existing file keeps its mode, a new one gets 0o666 & ~umask."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return 0o666 & ~current_umask()


def _copy_into(src: Path, dest: Path) -> None:
    with open(src, "rb") as fin, open(dest, "wb") as fout:
        while block := fin.read(1 << 20):
            fout.write(block)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path; put its content at `path` only if the block succeeds.

    A regular file (or a new name) is replaced atomically: a crash or Ctrl-C leaves the final name
    untouched (either the old file or nothing), and the new file gets the mode open() would give.
    A symlink is written through (its target is replaced, the link stays); a device or named pipe
    (/dev/stdout, /dev/full, a FIFO) is written into, never replaced.
    """
    path = Path(path)
    target = Path(os.path.realpath(path)) if path.is_symlink() else path
    special = target.exists() and not target.is_file()
    if special and target.is_dir():
        raise InputError(f"cannot write {path}: it is a folder; give a file name")
    try:
        if not special:
            target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix or ".tmp",
                                   dir=None if special else target.parent)
        os.close(fd)
    except OSError as e:
        raise InputError(f"cannot write {path}: {e.strerror}; choose a writable folder") from None
    tmp = Path(tmp)
    try:
        yield tmp
        if special:
            _copy_into(tmp, target)
        else:
            os.chmod(tmp, output_mode(target))
            os.replace(tmp, target)
    except OSError as e:
        raise InputError(f"cannot write {path}: {e.strerror}; check the folder's permissions and free space") from None
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def check_output_file(path: str | os.PathLike | None, flag: str) -> None:
    """Before any work: can a file be written at `path`? ('-' is stdout.) One InputError line if not."""
    if path is None or str(path) in ("", "-"):
        return
    p = Path(path)
    target = Path(os.path.realpath(p))
    if target.is_dir():
        raise InputError(f"{flag} {path} is a folder; give a file name")
    if target.exists():
        if not os.access(target, os.W_OK):
            raise InputError(f"{flag} {path} is not writable; check its permissions or choose another path")
        return
    _check_creatable(target.parent, f"{flag} {path}")


def check_output_dir(path: str | os.PathLike | None, flag: str) -> None:
    """Before any work: can `path` be (or become) a writable folder?"""
    if path is None or str(path) == "":
        return
    target = Path(os.path.realpath(path))
    if target.exists():
        if not target.is_dir():
            raise InputError(f"{flag} {path} is an existing file, not a folder; give a folder name")
        if not os.access(target, os.W_OK | os.X_OK):
            raise InputError(f"{flag} {path} is not writable; check its permissions or choose another folder")
        return
    _check_creatable(target.parent, f"{flag} {path}")


def _check_creatable(parent: Path, what: str) -> None:
    while not parent.exists():  # the nearest existing ancestor must be a writable folder (it is created on write)
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"{what}: {parent} is a file, not a folder; choose another path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{what}: folder {parent} is not writable; choose another path")


_SHA256_MEMO: dict[tuple[str, int, int], str] = {}


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20, cached: bool = False) -> str:
    """Hex sha256 of a file. `cached`: memoised per (real path, size, mtime) within the process, for large files
    hashed again and again (pretrained weights); a rewrite within the file system's timestamp granularity
    that keeps the size would go unseen, so files qact itself rewrites are hashed afresh (the default)."""
    if cached:
        real = os.path.realpath(path)
        st = os.stat(real)
        key = (real, st.st_size, st.st_mtime_ns)
        if key not in _SHA256_MEMO:
            _SHA256_MEMO[key] = sha256_file(real, chunk)
        return _SHA256_MEMO[key]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def environment(device: torch.device | str | None = None) -> dict:
    """Versions and hardware, recorded in every result and checkpoint."""
    from .version import __version__

    env = {
        "qact": __version__,
        "torch": str(torch.__version__),
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "qact_kernel": qact_kernel(),  # "native" (QACT_KERNEL=native) or "torch", the default path
    }
    if device is not None:
        device = torch.device(device)
        env["device"] = str(device)
        if device.type == "cuda":
            env["gpu"] = torch.cuda.get_device_name(device)
            env["cuda"] = torch.version.cuda
    return env
