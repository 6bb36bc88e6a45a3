"""The opt-in compiled CPU kernels: one switch, one build cache, one loader, for every C source in qact.

The default path is plain PyTorch (and numpy) ops and needs no compiler. `QACT_KERNEL=native` (or
`set_kernel("native")`) makes the places that have a C kernel use it: QAct's forward and backward
(nn/qact/native.c) and the heaviest corruptions (corruptions/native/*.c). The first use compiles a source
with the system C compiler (`$CC`, else `cc`; about a second) into `$XDG_CACHE_HOME/qact/kernels` (else
~/.cache/qact/kernels), keyed by the source, the compiler and the CPU, since the kernels are built for the
CPU they run on (-march=native). Without a compiler qact warns once per source and keeps the default path.
The libraries are loaded with ctypes, which releases the GIL for the duration of a call, so `by_items` can
split a batch over threads.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import subprocess
import threading
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import Tensor

KERNELS = ("torch", "native")
FLAGS = ("-O3", "-march=native", "-fno-math-errno", "-shared", "-fPIC")
_LOCK = threading.Lock()
_state: dict = {"kernel": None, "warned": None}
_libs: dict[Path, ctypes.CDLL | None] = {}  # source -> its library, None once it failed to build

# argument types of the kernels' signatures
F, I32, D, U8, N = (ctypes.POINTER(ctypes.c_float), ctypes.POINTER(ctypes.c_int32), ctypes.POINTER(ctypes.c_double),
                    ctypes.POINTER(ctypes.c_uint8), ctypes.c_int64)
SCALAR = ctypes.c_float
DOUBLE = ctypes.c_double
VOID = ctypes.c_void_p


def set_kernel(name: str | None) -> None:
    """"native": the CPU passes that have a compiled kernel use it; "torch": plain torch ops (the default);
    None: whatever QACT_KERNEL says."""
    if name is not None and name not in KERNELS:
        raise ValueError(f"unknown qact kernel {name!r}; choose one of {', '.join(KERNELS)}")
    _state["kernel"] = name


def kernel() -> str:
    """The kernels in use now: "native" or "torch" (an unknown QACT_KERNEL warns once and means "torch": the
    kernels change speed, never results beyond float rounding)."""
    name = _state["kernel"] or (os.environ.get("QACT_KERNEL") or "torch").strip().lower()
    if name not in KERNELS:
        if _state["warned"] != name:
            _state["warned"] = name
            warnings.warn(f"QACT_KERNEL={name!r} is not a qact kernel (choose {' or '.join(KERNELS)}); "
                          "using the default torch kernels", RuntimeWarning, stacklevel=3)
        return "torch"
    return name


def recorded(record: dict) -> str:
    """The kernels that a record of generated images names (a `gen:` result's protocol, `qact corrupt`'s
    manifest; the current ones are `kernel()`): the native float filters sum in another order than the default
    path, so the same seed gives images within one grey level of its own, not the same bytes. A record from
    before the key was made by the default kernels."""
    return record.get("kernels", "torch")


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "qact" / "kernels"


def _cpu_key() -> bytes:
    try:
        flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "")
    except OSError:
        flags = ""
    return f"{platform.machine()} {platform.processor()} {flags}".encode()


def build(source: Path) -> Path:
    """Compile one C source for this CPU (once: the result is cached); returns the shared library's path."""
    cc = os.environ.get("CC", "cc")
    text = source.read_bytes()
    key = hashlib.sha256(text + " ".join((cc,) + FLAGS).encode() + _cpu_key()).hexdigest()[:16]
    target = cache_dir() / f"qact_{source.parent.name}_{source.stem}_{key}.so"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
        try:
            subprocess.run([cc, *FLAGS, "-o", str(tmp), str(source), "-lm"], check=True, capture_output=True,
                           text=True)
            os.replace(tmp, target)  # whole or not at all, also with concurrent builds
        finally:
            tmp.unlink(missing_ok=True)
    return target


def library(source: Path, signatures: dict[str, tuple]) -> ctypes.CDLL | None:
    """The compiled `source` with the argument types of `signatures` set (every function returns void), or
    None where it cannot be built here (warned once)."""
    if source in _libs:
        return _libs[source]
    with _LOCK:
        if source not in _libs:
            try:
                lib = ctypes.CDLL(str(build(source)))
                for name, args in signatures.items():
                    getattr(lib, name).argtypes = args
                    getattr(lib, name).restype = None
                _libs[source] = lib
            except (OSError, subprocess.CalledProcessError) as err:
                detail = (getattr(err, "stderr", "") or str(err)).strip()
                why = detail.splitlines()[-1] if detail else type(err).__name__
                _libs[source] = None
                rel = "/".join(source.parts[-3:])
                warnings.warn(f"QACT_KERNEL=native: could not compile {rel} ({why}); qact keeps the default torch "
                              f"kernels there. Install a C compiler (gcc) or set CC, or unset QACT_KERNEL.",
                              RuntimeWarning, stacklevel=3)
    return _libs[source]


def ptr(t: Tensor, kind, offset: int = 0):
    """A ctypes pointer to element `offset` of a contiguous CPU tensor."""
    return ctypes.cast(t.data_ptr() + offset * t.element_size(), kind)


_POOL: dict = {}
MIN_PARALLEL = 1 << 16  # values per thread below which one thread does it all


def by_items(n: int, per_item: int, work) -> None:
    """work(i0, i1) over items (images, channels) [0, n), split across torch.get_num_threads() threads (ctypes
    calls release the GIL); every item's values are computed the same way whatever the split."""
    import torch  # noqa: PLC0415 (qact_cli.native itself stays importable without torch: records use recorded())

    threads = min(torch.get_num_threads(), n, max(1, n * per_item // MIN_PARALLEL))
    if threads <= 1:
        work(0, n)
        return
    pool = _POOL.get(threads)
    if pool is None:
        from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415 (only with several threads)

        pool = _POOL[threads] = ThreadPoolExecutor(threads, thread_name_prefix="qact-native")
    bounds = [n * i // threads for i in range(threads + 1)]
    for f in [pool.submit(work, a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]:
        f.result()
