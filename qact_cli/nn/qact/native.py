"""QAct's opt-in fused CPU kernels (native.c): compiled on first use, loaded with ctypes.

The default path is plain PyTorch ops and needs no compiler. `QACT_KERNEL=native` (or
`set_kernel("native")`) makes QAct's CPU float32 forward and backward use the kernels in native.c,
which do in one pass over an activation what the torch ops do in several (docs/qact-layer.md, "The
native kernels"). The first use compiles them with the system C compiler (`$CC`, else `cc`; about a
second) into `$XDG_CACHE_HOME/qact/kernels` (else ~/.cache/qact/kernels), keyed by the source, the
compiler and the CPU, since they are built for the CPU they run on (-march=native). Without a compiler
QAct warns once and keeps the default path. ctypes releases the GIL for the duration of a call.
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

import torch
from torch import Tensor

SOURCE = Path(__file__).with_name("native.c")
KERNELS = ("torch", "native")
_FLAGS = ("-O3", "-march=native", "-fno-math-errno", "-shared", "-fPIC")
_LOCK = threading.Lock()
_state: dict = {"kernel": None, "lib": None, "failed": None}

_F, _I32, _D, _N = ctypes.POINTER(ctypes.c_float), ctypes.POINTER(ctypes.c_int32), ctypes.POINTER(ctypes.c_double), \
    ctypes.c_int64
_SIGNATURES = {
    "qact_row_moments": (_F, _N, _N, _D, _D),
    "qact_lookup": (_F, _F, _N, _N, _N, _F, _F, _F, _N),
    "qact_table_moments": (_F, _F, _N, _N, _N, _F, _F, _F, _N, _D, _D),
    "qact_gz_moments": (_F, _F, _N, _N, _N, _F, _F, _F, _F, _N, _D, _D),
    "qact_grad_input": (_F, _F, _F, _N, _N, _N, _F, _F, _F, _F, _N, _F, _F, _F),
    "qact_histograms": (_F, _N, _N, _F, _F, _N, _N, _F, _F, _F),
}


def set_kernel(name: str | None) -> None:
    """"native": QAct's CPU float32 passes use the compiled kernels; "torch": plain torch ops (the
    default); None: whatever QACT_KERNEL says."""
    if name is not None and name not in KERNELS:
        raise ValueError(f"unknown QAct kernel {name!r}; choose one of {', '.join(KERNELS)}")
    _state["kernel"] = name


def kernel() -> str:
    """The kernel QAct's CPU passes use now: "native" or "torch" (an unknown QACT_KERNEL warns once and
    means "torch": the kernels change speed, never results beyond float rounding)."""
    name = _state["kernel"] or (os.environ.get("QACT_KERNEL") or "torch").strip().lower()
    if name not in KERNELS:
        if _state.get("warned") != name:
            _state["warned"] = name
            warnings.warn(f"QACT_KERNEL={name!r} is not a QAct kernel (choose {' or '.join(KERNELS)}); "
                          "using the default torch kernels", RuntimeWarning, stacklevel=3)
        return "torch"
    return name


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "qact" / "kernels"


def _cpu_key() -> bytes:
    try:
        flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "")
    except OSError:
        flags = ""
    return f"{platform.machine()} {platform.processor()} {flags}".encode()


def build() -> Path:
    """Compile native.c for this CPU (once: the result is cached); returns the shared library's path."""
    cc = os.environ.get("CC", "cc")
    source = SOURCE.read_bytes()
    key = hashlib.sha256(source + " ".join((cc,) + _FLAGS).encode() + _cpu_key()).hexdigest()[:16]
    target = cache_dir() / f"qact_native_{key}.so"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
        try:
            subprocess.run([cc, *_FLAGS, "-o", str(tmp), str(SOURCE)], check=True, capture_output=True, text=True)
            os.replace(tmp, target)  # whole or not at all, also with concurrent builds
        finally:
            tmp.unlink(missing_ok=True)
    return target


def _load() -> ctypes.CDLL | None:
    with _LOCK:
        if _state["lib"] is None and _state["failed"] is None:
            try:
                lib = ctypes.CDLL(str(build()))
                for name, args in _SIGNATURES.items():
                    getattr(lib, name).argtypes = args
                    getattr(lib, name).restype = None
                _state["lib"] = lib
            except (OSError, subprocess.CalledProcessError) as err:
                detail = getattr(err, "stderr", "") or str(err)
                _state["failed"] = detail.strip().splitlines()[-1] if detail.strip() else type(err).__name__
                warnings.warn(f"QACT_KERNEL=native: could not compile qact_cli/nn/qact/native.c "
                              f"({_state['failed']}); QAct keeps its default torch kernels. Install a C compiler "
                              f"(gcc) or set CC, or unset QACT_KERNEL.", RuntimeWarning, stacklevel=3)
    return _state["lib"]


def active(*tensors: Tensor) -> bool:
    """Whether the native kernels are selected, compiled, and apply to these tensors (CPU float32)."""
    if kernel() != "native" or any(t.device.type != "cpu" or t.dtype != torch.float32 for t in tensors):
        return False
    return _load() is not None


def _lib() -> ctypes.CDLL:
    return _state["lib"]


def available() -> bool:
    """Whether the kernels compile and load here (compiling them if need be), whatever is selected."""
    return _load() is not None


def f32(t: Tensor) -> Tensor:
    """A detached contiguous float32 tensor, as the kernels read it."""
    return t.detach().float().contiguous()


def _p(t: Tensor, kind, offset: int = 0):
    return ctypes.cast(t.data_ptr() + offset * t.element_size(), kind)


_POOL: dict = {}
_MIN_PARALLEL = 1 << 16  # values per thread below which one thread does it all


def _by_images(n: int, per_image: int, work) -> None:
    """work(i0, i1) over images [0, n), split across torch.get_num_threads() threads (ctypes calls
    release the GIL); every image's values are computed the same way whatever the split."""
    threads = min(torch.get_num_threads(), n, max(1, n * per_image // _MIN_PARALLEL))
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


def _row_sums(n: int, c: int, like: Tensor) -> tuple[Tensor, Tensor]:
    return like.new_empty(n * c, dtype=torch.float64), like.new_empty(n * c, dtype=torch.float64)


def _per_channel(*rows: Tensor, n: int, c: int) -> tuple[Tensor, ...]:
    return tuple(r.view(n, c).sum(0) for r in rows)


def moments(x3: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel sum and sum of squares of contiguous (N, C, L) float32, in float64."""
    n, c, length = x3.shape
    s, q = _row_sums(n, c, x3)

    def work(i0, i1):
        r0 = i0 * c
        _lib().qact_row_moments(_p(x3, _F, r0 * length), (i1 - i0) * c, length, _p(s, _D, r0), _p(q, _D, r0))
    _by_images(n, c * length, work)
    return _per_channel(s, q, n=n, c=c)


def lookup(x3: Tensor, out: Tensor, scale: Tensor, bias: Tensor, table: Tensor) -> Tensor:
    """out = table[c, cell(x * scale + bias)], everything contiguous float32; out may be x3."""
    n, c, length = x3.shape

    def work(i0, i1):
        at = i0 * c * length
        _lib().qact_lookup(_p(x3, _F, at), _p(out, _F, at), (i1 - i0) * c, length, c, _p(scale, _F), _p(bias, _F),
                           _p(table, _F), table.shape[1])
    _by_images(n, c * length, work)
    return out


def table_moments(x3: Tensor, scale: Tensor, bias: Tensor, table: Tensor, g: Tensor | None = None
                  ) -> tuple[Tensor, Tensor]:
    """Per-channel sum(w) and sum(w * y), y = table[c, cell(x * scale + bias)], w = g (same shape as x3)
    or y itself when g is None (then: sum and sum of squares of y); float64."""
    n, c, length = x3.shape
    s, q = _row_sums(n, c, x3)

    def work(i0, i1):
        r0, at = i0 * c, i0 * c * length
        _lib().qact_table_moments(_p(g, _F, at) if g is not None else None, _p(x3, _F, at), (i1 - i0) * c, length,
                                  c, _p(scale, _F), _p(bias, _F), _p(table, _F), table.shape[1], _p(s, _D, r0),
                                  _p(q, _D, r0))
    _by_images(n, c * length, work)
    return _per_channel(s, q, n=n, c=c)


def gz_moments(g: Tensor, x3: Tensor, scale: Tensor, bias: Tensor, u: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel sum(gz) and sum(gz * x) for gz = u[c, cell(x)] * g + v[c, cell(x)], float64."""
    n, c, length = g.shape
    s, q = _row_sums(n, c, g)

    def work(i0, i1):
        r0, at = i0 * c, i0 * c * length
        _lib().qact_gz_moments(_p(g, _F, at), _p(x3, _F, at), (i1 - i0) * c, length, c, _p(scale, _F),
                               _p(bias, _F), _p(u, _F), _p(v, _F), u.shape[1], _p(s, _D, r0), _p(q, _D, r0))
    _by_images(n, c * length, work)
    return _per_channel(s, q, n=n, c=c)


def grad_input(g: Tensor, x3: Tensor, scale: Tensor, bias: Tensor, u: Tensor, v: Tensor, a: Tensor, p: Tensor,
               q: Tensor) -> Tensor:
    """dx = a * gz + p * x + q per channel, gz = u[c, cell(x)] * g + v[c, cell(x)]."""
    n, c, length = g.shape
    dx = torch.empty_like(x3)

    def work(i0, i1):
        at = i0 * c * length
        _lib().qact_grad_input(_p(g, _F, at), _p(x3, _F, at), _p(dx, _F, at), (i1 - i0) * c, length, c,
                               _p(scale, _F), _p(bias, _F), _p(u, _F), _p(v, _F), u.shape[1], _p(a, _F), _p(p, _F),
                               _p(q, _F))
    _by_images(n, c * length, work)
    return dx


def histograms(ctx: Tensor, inv_step: Tensor, zero_node: Tensor, nodes: int, kde_stride: int | None
               ) -> tuple[Tensor, Tensor | None, Tensor]:
    """For a context sample (C, k): per-channel cell counts on the table's grid (C, nodes), the same
    over every kde_stride-th value (None: not wanted), and the count of exact zeros (C, 1); float32."""
    c, k = ctx.shape
    ctx = ctx.contiguous()
    inv_step, zero_node = f32(inv_step), f32(zero_node)
    counts = ctx.new_empty(c, nodes)
    kde = ctx.new_empty(c, nodes) if kde_stride else None
    zeros = ctx.new_empty(c, 1)

    def work(c0, c1):
        _lib().qact_histograms(_p(ctx, _F, c0 * k), c1 - c0, k, _p(inv_step, _F, c0), _p(zero_node, _F, c0), nodes,
                               kde_stride or 1, _p(counts, _F, c0 * nodes),
                               _p(kde, _F, c0 * nodes) if kde is not None else None, _p(zeros, _F, c0))
    _by_images(c, k, work)
    return counts, kde, zeros
