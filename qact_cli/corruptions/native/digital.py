"""The C kernels of brightness, saturate, contrast, pixelate and fog (digital.c): one pass over uint8 images each
(contrast: two, around torch's own channel means; fog: its fractal, then the blend), giving the default path's
bytes. Each function returns None where its kernel does not apply (not selected, not on the CPU, a layout other
than planar or interleaved contiguous, no compiler), and the corruption then runs its default path. The callers
hand in their own tables and random draws (this module imports no corruption module)."""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ... import native
from ...native import F, I32 as _I32, N, SCALAR, U8, by_items, ptr
from . import selected

SOURCE = Path(__file__).with_name("digital.c")
_U32 = ctypes.POINTER(ctypes.c_uint32)
_U16 = ctypes.POINTER(ctypes.c_uint16)
_SIGNATURES = {
    "dig_brightness": (U8, U8, N, N, N, F),
    "dig_saturate": (U8, U8, N, N, N, SCALAR, SCALAR, N, U8),
    "dig_unit": (U8, F, N, N, N),
    "dig_contrast": (U8, U8, N, N, N, F, SCALAR),
    "dig_fog": (U8, U8, N, N, N, N, F, N, N, F, F, F, F),
    "dig_pixelate": (U8, U8, N, N, N, N, N, _I32, _I32, _U32, _I32, _I32, _U32, _I32, _I32, U8, _U32, _U16, _I32),
}


def _lib():
    return native.library(SOURCE, _SIGNATURES)


def available() -> bool:
    """Whether digital.c compiles and loads here (compiling it if need be), whatever kernel is selected."""
    return _lib() is not None


def _interleaved(x: Tensor) -> bool | None:
    """True for a channels-last (N, 3, H, W) uint8 view of contiguous (N, H, W, 3) pixels, False for contiguous
    (N, 3, H, W), None for anything else (a broadcast grey channel, a strided slice)."""
    if x.dtype != torch.uint8 or x.dim() != 4 or x.shape[1] != 3:
        return None
    if x.is_contiguous():
        return False
    if x.is_contiguous(memory_format=torch.channels_last):
        return True
    return None


def _ready(x: Tensor):
    """(library, interleaved) where the kernels apply to x, else None."""
    if not selected(x):
        return None
    layout = _interleaved(x)
    if layout is None:
        return None
    lib = _lib()
    return None if lib is None else (lib, layout)


def _per_image(x: Tensor, call) -> Tensor:
    """out (x's layout) with call(lib, interleaved, x_ptr, out_ptr, i0, count, hw) run over the images, split
    across torch's threads."""
    lib, layout = _ready(x)
    n, _, h, w = x.shape
    hw = h * w
    out = torch.empty_like(x)  # keeps x's strides: planar or channels-last

    def work(i0: int, i1: int) -> None:
        at = i0 * 3 * hw
        call(lib, int(layout), ptr(x, U8, at), ptr(out, U8, at), i0, i1 - i0, hw)
    by_items(n, 3 * hw, work)
    return out


def brightness(x: Tensor, factor: np.ndarray) -> Tensor | None:
    """out = trunc(x * factor[M]) per channel in float32, M the pixel's max channel (factor: 256 float32);
    black pixels (M = 0) become factor[0]."""
    if _ready(x) is None:
        return None
    table = torch.from_numpy(np.ascontiguousarray(factor, dtype=np.float32))
    return _per_image(x, lambda lib, il, xp, yp, i0, k, hw: lib.dig_brightness(xp, yp, k, hw, il, ptr(table, F)))


def saturate(x: Tensor, c0: float, c1: float, clamp_only: bool, tint: np.ndarray | None) -> Tensor | None:
    """hsv.saturate's closed form; `tint` (256 uint8) is grey pixels' green and blue, None to leave them."""
    if _ready(x) is None:
        return None
    table = None if tint is None else torch.from_numpy(tint)
    c0f, c1f = float(np.float32(c0)), float(np.float32(c1))

    def call(lib, il, xp, yp, i0, k, hw):
        lib.dig_saturate(xp, yp, k, hw, il, c0f, c1f, int(clamp_only), None if table is None else ptr(table, U8))
    return _per_image(x, call)


def contrast(x: Tensor, c: float) -> Tensor | None:
    """(x / 255 - m) * c + m, clipped, * 255, truncated; m each channel's mean of x / 255 as torch sums it on
    contiguous (N, 3, H, W) float32 (so the same float32 means as the default path)."""
    ready = _ready(x)
    if ready is None:
        return None
    lib, layout = ready
    n, _, h, w = x.shape
    hw = h * w
    v = torch.empty((n, 3, h, w), dtype=torch.float32)
    by_items(n, 3 * hw, lambda i0, i1: lib.dig_unit(ptr(x, U8, i0 * 3 * hw), ptr(v, F, i0 * 3 * hw), i1 - i0, hw,
                                                     int(layout)))
    means = v.mean((2, 3)).contiguous()
    del v
    cf = float(np.float32(c))
    return _per_image(x, lambda lib, il, xp, yp, i0, k, hw: lib.dig_contrast(xp, yp, k, hw, il,
                                                                              ptr(means, F, 3 * i0), cf))


_PIXELATE_TABLES: dict = {}


def _pixelate_tables(key: tuple, tables):
    """The kernel's run and gather tables for (h, w, sh, sw) as int32 / uint32 tensors and their pointers, kept per
    size (they depend on the sizes alone; ~12 conversions and casts a call otherwise)."""
    if key not in _PIXELATE_TABLES:
        across, down, rows, cols = tables()
        none = (np.zeros(1, np.int32),) * 3  # a size that stays: the kernel skips that pass
        across, down = across or none, down or none
        ints = [torch.from_numpy(np.ascontiguousarray(a, dtype=np.int32)) for a in (*across[:2], *down[:2], rows, cols)]
        weights = [torch.from_numpy(np.ascontiguousarray(a[2], dtype=np.uint32)) for a in (across, down)]
        hs, hc, vs, vc, rt, ct = (ptr(t, _I32) for t in ints)
        hwt, vwt = (ptr(t, _U32) for t in weights)
        if len(_PIXELATE_TABLES) >= 16:
            _PIXELATE_TABLES.clear()
        _PIXELATE_TABLES[key] = (int(across[1].max()), (hs, hc, hwt, vs, vc, vwt, rt, ct), ints + weights)
    return _PIXELATE_TABLES[key]


def pixelate(x: Tensor, sh: int, sw: int, tables) -> Tensor | None:
    """Pillow's BOX reduction to (sh, sw) and the enlargement's gather back, on interleaved pixels. tables():
    (across, down, rows, cols): the (start, count, weight) runs of the horizontal / vertical reduction (None where
    the size stays) and the enlargement's source pixel per output row / column; called once per size."""
    ready = _ready(x)
    if ready is None:
        return None
    lib, layout = ready
    n, _, h, w = x.shape
    taps, pointers, keep = _pixelate_tables((h, w, sh, sw), tables)  # keep: the tables behind the pointers
    if sw != w and taps > 257:  # the horizontal running sums would pass uint16 (a reduction > 257x)
        return None
    if not layout:  # the kernel reads interleaved pixels: the default path transposes the same way
        x = x.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
    out = torch.empty_like(x)

    def work(i0: int, i1: int) -> None:
        scratch = np.empty(h * sw * 3 + sh * sw * 3 + 4 * (sw * 3 + sw) + 2 * max(taps, 1) * w * 3 + 16, np.uint8)
        base = scratch.ctypes.data
        acc = base + h * sw * 3 + sh * sw * 3
        acc += -acc % 4
        pick = acc + 4 * sw * 3
        sums = pick + 4 * sw
        at = i0 * 3 * h * w
        lib.dig_pixelate(ptr(x, U8, at), ptr(out, U8, at), i1 - i0, h, w, sh, sw, *pointers, ctypes.cast(base, U8),
                         ctypes.cast(acc, _U32), ctypes.cast(sums, _U16), ctypes.cast(pick, _I32))
    by_items(n, 3 * h * w, work)
    del keep
    return out


def fog(x: Tensor, draw, size: int, scales: np.ndarray, a: Tensor, b: Tensor) -> Tensor | None:
    """fog: the plasma fractal (size x size) from the draws `draw()` returns ((N, K) float32 U(-1, 1), level after
    level; called only where the kernel applies, so the random streams are read exactly once), each level's noise
    times scales[level], then trunc(clip(x * a + map * b, 0, 255)) with a, b per image ((N, 1, 1, 1) float32)."""
    ready = _ready(x)
    if ready is None:
        return None
    lib, layout = ready
    n, _, h, w = x.shape
    noise = draw().contiguous()
    per_image = noise.shape[1]
    scale = torch.from_numpy(np.ascontiguousarray(scales, dtype=np.float32))
    a, b = (t.reshape(n).contiguous() for t in (a, b))
    out = torch.empty_like(x)

    def work(i0: int, i1: int) -> None:
        scratch = torch.empty(3 * size * size, dtype=torch.float32)
        at = i0 * 3 * h * w
        lib.dig_fog(ptr(x, U8, at), ptr(out, U8, at), i1 - i0, h, w, int(layout), ptr(noise, F, i0 * per_image),
                    per_image, size, ptr(scale, F), ptr(a, F, i0), ptr(b, F, i0), ptr(scratch, F))
    by_items(n, 3 * h * w, work)
    return out
