"""The blur family's opt-in C kernels (blur.c beside this file; docs/corruption-fidelity.md, "Native kernels:
blur"): the separable Gaussian filter (gaussian_blur, glass_blur and every caller of filters.gaussian_filter),
ImageMagick's motion blur (motion_blur, snow) and the anti-aliased disk of defocus_blur.

Each filter returns None where its kernel does not apply (not selected, not on the CPU, a dtype it does not
take, no compiler); the caller then runs its default torch path (glass_shuffle runs where gaussian_filter
applied, between its two calls). The taps and weights are planned by the
callers exactly as their torch paths plan them and handed over as arrays: this module imports no corruption
module. A call covers a whole batch (split over torch's threads by images), so its ~5 us of ctypes overhead
is paid once per batch, not per image or row.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ... import native
from ...native import F, I32, N, VOID, ptr
from . import selected

SOURCE = Path(__file__).with_name("blur.c")
_SIGNATURES = {
    "blur_gaussian": (VOID, N, VOID, N, N, N, N, F, N, F, N, N, N),
    "blur_motion": (VOID, N, VOID, N, N, N, N, N, VOID, VOID, VOID, N),
    "blur_defocus": (VOID, VOID, N, N, N, native.SCALAR, I32, N, native.SCALAR),
    "blur_glass_shuffle": (VOID, N, N, N, N, N, N, VOID),
}
MODES = {"nearest": 0, "symmetric": 1, "reflect101": 2}
_TYPES = (torch.uint8, torch.float32)


def _lib():
    return native.library(SOURCE, _SIGNATURES)


def available() -> bool:
    """Whether blur.c compiles and loads here (compiling it if need be), whatever kernel is selected."""
    return _lib() is not None


def _applies(x: Tensor) -> bool:
    return (selected(x) and x.dtype in _TYPES and x.dim() >= 2 and x.numel() > 0 and not x.requires_grad
            and _lib() is not None)


def _half(weights: tuple[float, ...]) -> Tensor:
    """Symmetric taps (w_-r .. w_r) as float32 (w_0, w_1, .., w_r): the kernel folds each pair."""
    r = len(weights) // 2
    return torch.tensor(weights[r:], dtype=torch.float32)


def gaussian_filter(x: Tensor, weights: tuple[float, ...], mode: str, out_dtype: torch.dtype = torch.float32,
                    unit: bool = False):
    """correlate1d along H then W (..., H, W) with the symmetric taps `weights` and border `mode`, on uint8 or
    float32 x; float32 out, or uint8 (clip to 0..255 and truncate) with out_dtype=torch.uint8. `unit`: uint8
    in and out on the 0..1 scale, the bytes of unit_to_uint8(gaussian_filter(unit(x))). None where the kernel
    does not apply."""
    if (not _applies(x) or mode not in MODES or out_dtype not in _TYPES or len(weights) % 2 != 1
            or tuple(weights) != tuple(weights[::-1])):  # the kernel folds symmetric pairs of taps
        return None
    if unit and (x.dtype != torch.uint8 or out_dtype != torch.uint8):
        raise ValueError("unit=True takes uint8 in and gives uint8 out")
    h, w = x.shape[-2:]
    planes = x.numel() // (h * w)
    src = x.contiguous()
    out = torch.empty(x.shape, dtype=out_dtype)
    half = _half(weights)
    r = len(weights) // 2

    def work(p0, p1):
        at = p0 * h * w
        _lib().blur_gaussian(ptr(src, VOID, at), int(src.dtype == torch.uint8), ptr(out, VOID, at),
                             int(out_dtype == torch.uint8), p1 - p0, h, w, ptr(half, F), r, ptr(half, F), r,
                             MODES[mode], int(unit))
    native.by_items(planes, h * w, work)
    return out


def motion_blur(x: Tensor, dy: np.ndarray, dx: np.ndarray, weights: np.ndarray, out_dtype: torch.dtype = torch.float32):
    """ImageMagick's motion blur of (N, C, H, W) uint8 or float32 images (filters.motion_blur): image i's tap t
    reads (y + dy[i, t], x + dx[i, t]) (int64 (N, T); tap 0 is (0, 0)) with weight weights[t] (float64 (T,)),
    borders replicated; the kernel drops the taps that reach the image size and merges repeated offsets as the
    torch path does. float32 out, or truncated uint8 with out_dtype=torch.uint8. None where it does not apply."""
    if not _applies(x) or x.dim() != 4 or out_dtype not in _TYPES:
        return None
    n, c, h, w = x.shape
    dy, dx = np.ascontiguousarray(dy, dtype=np.int64), np.ascontiguousarray(dx, dtype=np.int64)
    weights = np.ascontiguousarray(weights, dtype=np.float64)
    taps = dy.shape[1]
    src = x.contiguous()
    out = torch.empty(x.shape, dtype=out_dtype)

    def work(i0, i1):
        at = i0 * c * h * w
        _lib().blur_motion(ptr(src, VOID, at), int(src.dtype == torch.uint8), ptr(out, VOID, at),
                           int(out_dtype == torch.uint8), i1 - i0, c, h, w, dy.ctypes.data + 8 * i0 * taps,
                           dx.ctypes.data + 8 * i0 * taps, weights.ctypes.data, taps)
    native.by_items(n, c * h * w, work)
    return out


def defocus_blur(x: Tensor, blur: tuple[float, float], halves: tuple[int, ...], scale: float):
    """blur.py's `_defocus_columns` of uint8 (..., H, W) planes, truncated to uint8 (its to_uint8): the 3-tap
    anti-aliasing blur (g0, g1) along both axes, the disk's column half-heights `halves` at |dx| = 0, 1, ..,
    and 1 / its taps. None where the kernel does not apply."""
    if not _applies(x) or x.dtype != torch.uint8:
        return None
    g0, g1 = blur
    h, w = x.shape[-2:]
    planes = x.numel() // (h * w)
    src = x.contiguous()
    out = torch.empty(x.shape, dtype=torch.uint8)
    table = torch.tensor(halves, dtype=torch.int32)

    def work(p0, p1):
        _lib().blur_defocus(ptr(src, VOID, p0 * h * w), ptr(out, VOID, p0 * h * w), p1 - p0, h, w, g0 / g1,
                            ptr(table, I32), len(halves) - 1, scale * g1 * g1)
    native.by_items(planes, h * w, work)
    return out


def glass_shuffle(levels: Tensor, codes: Tensor, d: int) -> Tensor:
    """glass_blur's pixel "swaps" in place on contiguous uint8 CPU (N, C, H, W) levels: the reference's visiting
    loop, codes (N, iters, H - 2d, W - 2d) as blur.py's _glass_shuffle_map draws them. Returns levels. Called
    where this module's gaussian_filter applied (so the library is there)."""
    n, c, h, w = levels.shape
    iters = codes.shape[1]
    if levels.dtype != torch.uint8 or not levels.is_contiguous() or levels.device.type != "cpu":
        raise ValueError("glass_shuffle takes contiguous uint8 CPU levels")
    if tuple(codes.shape) != (n, iters, h - 2 * d, w - 2 * d):
        raise ValueError(f"glass codes of shape {tuple(codes.shape)} for images {tuple(levels.shape)}, d = {d}")
    table = codes.to("cpu", torch.int32).contiguous()
    per = iters * (h - 2 * d) * (w - 2 * d)

    def work(i0, i1):
        _lib().blur_glass_shuffle(ptr(levels, VOID, i0 * c * h * w), i1 - i0, c, h, w, d, iters,
                                  ptr(table, VOID, i0 * per))
    native.by_items(n, c * h * w, work)
    return levels
