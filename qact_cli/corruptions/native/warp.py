"""The geometric family's C kernels (warp.c): elastic_transform's two resamplings and spatter's capped distance
transform and water blend. Bytes identical to the default
torch path (corruptions/warp.py, docs/corruption-fidelity.md "Native kernels: warp")."""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ... import native
from ...native import D, F, I32, N, U8, by_items, ptr
from . import selected

SOURCE = Path(__file__).with_name("warp.c")
_SIGNATURES = {
    "elastic_warp": (U8, N, N, N, N, D, F, U8, D),
    "chamfer_capped": (U8, N, N, N, ctypes.c_int32, I32, I32),
    "water_blend": (U8, N, N, N, F, F, F, U8),
}


def _lib():
    return native.library(SOURCE, _SIGNATURES)


def ready(x: Tensor) -> bool:
    """Whether the kernels are selected and built, and take x (uint8 images on the CPU)."""
    return selected(x) and x.dtype == torch.uint8 and x.dim() == 4 and _lib() is not None


def elastic(x: Tensor, inv: np.ndarray, d: Tensor | None) -> Tensor | None:
    """elastic_transform's sampling of uint8 images x (N, C, H, W): the affine warp whose output (x, y) reads the
    source at inv (N, 2, 3) float64 @ (x, y, 1), then (unless d is None) the displacements d (N, 2, H, W) float32
    (dx, dy). None where the kernel does not apply."""
    if not ready(x) or x.shape[1] > 4 or (d is not None and (d.dtype != torch.float32 or not selected(d))):
        return None
    n, c, h, w = x.shape
    src = x.contiguous()
    scaled = np.ascontiguousarray(inv * 32.0, dtype=np.float64).reshape(n, 6)  # the 1/32 grid, as warp.affine_grid
    field = None if d is None else d.contiguous()
    out = torch.empty_like(src)
    lib, k = _lib(), h * w

    def work(i0, i1):
        scratch = torch.empty(2 * (h + w) + 4 * (k + w + 1) + 5 * w, dtype=torch.float64)
        fp = None if field is None else ptr(field, F, i0 * 2 * k)
        lib.elastic_warp(ptr(src, U8, i0 * c * k), i1 - i0, c, h, w, scaled[i0:].ctypes.data_as(D), fp,
                         ptr(out, U8, i0 * c * k), ptr(scratch, D))
    by_items(n, c * k * 8, work)
    return out


def chamfer_capped(edges: Tensor, cap: int) -> Tensor | None:
    """imgproc's capped chamfer distances for (H, W, N) uint8 `edges` (nonzero: the zero pixels of the transform):
    (H + 2, W + 2, N) int32 with the core filled, min(distance, cap) in 16.16 fixed point. None where the kernel
    does not apply."""
    if not ready(edges.unsqueeze(0)) or cap * 65536 >= 2**31 - 2 * 143976:
        return None
    h, w, n = edges.shape
    seeds = edges.contiguous()
    out = torch.empty((h + 2, w + 2, n), dtype=torch.int32)
    buf = torch.empty((h + 4) * (w + 4) * n, dtype=torch.int32)
    _lib().chamfer_capped(ptr(seeds, U8), h, w, n, int(cap) * 65536, ptr(out, I32), ptr(buf, I32))
    return out


def water_blend(x: Tensor, m: Tensor, factor: Tensor, color: tuple[float, ...]) -> Tensor | None:
    """spatter's np.uint8(clip(x + (m * factor) * color, 0, 255)) for uint8 images x (N, C, H, W), m (N, H, W)
    float32 and factor (N, 1, 1) float32; None where the kernel does not apply."""
    if not ready(x) or not selected(m, factor) or m.dtype != torch.float32 or factor.dtype != torch.float32:
        return None
    n, c, h, w = x.shape
    src, mask, f = x.contiguous(), m.contiguous(), factor.reshape(n).contiguous()
    col = torch.tensor(color, dtype=torch.float32)
    out = torch.empty_like(src)
    lib, k = _lib(), h * w

    def work(i0, i1):
        lib.water_blend(ptr(src, U8, i0 * c * k), i1 - i0, c, k, ptr(mask, F, i0 * k), ptr(f, F, i0), ptr(col, F),
                        ptr(out, U8, i0 * c * k))
    by_items(n, c * k, work)
    return out
