"""Bilinear resampling for elastic_transform: cv2.warpAffine's affine step and scipy map_coordinates' displacement
step (Hendrycks' make_imagenet_c.py, `elastic_transform`), batched over images.

Both steps blend four taps per output pixel as lerp(lerp(p[i], p[i+1], fx), lerp(p[i+W], p[i+W+1], fx), fy), where
i is the flat index of the top-left tap after the border fold. Two choices keep this cheap and exact:
- Images live in flat planes with W + 1 spare zeros at the end (`spare_planes`). A tap right of the last column
  or below the last row then lands on a finite value with weight exactly 0, and lerp(a, b, 0) is a, so no
  neighbour index needs clamping (the clamp only ever selected such zero-weight taps).
- Coordinates are folded where they leave the image, in their own exact arithmetic: the affine step on OpenCV's
  1/32-pixel grid in integers, the displacement step in float32 with the same roundings as the
  fold `remainder(c + 0.5, 2n) - 0.5`, mirror, clamp. Folding cannot be replaced by padding the image: the
  mirrored pair is blended in the other order, and torch.lerp(a, b, 0.5) != torch.lerp(b, a, 0.5) in the last bit.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def spare_planes(n: int, c: int, h: int, w: int, device: torch.device) -> torch.Tensor:
    """Uninitialised (n, c, h*w + w + 1) float32 image planes whose last w + 1 values are zero."""
    planes = torch.empty(n, c, h * w + w + 1, device=device)
    planes[..., h * w:].zero_()
    return planes


def bilinear_taps(planes: torch.Tensor, idx: torch.Tensor, fx: torch.Tensor, fy: torch.Tensor, w: int,
                  out: torch.Tensor | None = None) -> torch.Tensor:
    """planes (N, C, L) from `spare_planes`; idx (N, K) int64 top-left taps; fx, fy (N, K) weights -> (N, C, K).
    One index per output pixel is shared by the channels; three buffers hold the gathered taps."""
    n, c, _ = planes.shape
    k = idx.shape[-1]
    index = idx.reshape(n, 1, k).expand(n, c, k)
    fx, fy = fx.reshape(n, 1, k), fy.reshape(n, 1, k)
    top, bottom, right = torch.empty(3, n, c, k, device=planes.device)
    torch.gather(planes, 2, index, out=top)
    torch.gather(planes[..., 1:], 2, index, out=right)
    top.lerp_(right, fx)
    torch.gather(planes[..., w:], 2, index, out=bottom)
    torch.gather(planes[..., w + 1:], 2, index, out=right)
    bottom.lerp_(right, fx)
    return torch.lerp(top, bottom, fy, out=out)


def _border_bands(t: torch.Tensor, dim: int, before: int, after: int) -> list[torch.Tensor]:
    """Views of the first `before` and last `after` lines of t along dim (all of t when they meet): the only
    places where a coordinate = line index + a displacement in [-before, after] can leave the image."""
    size = t.shape[dim]
    # column bands are strided: once they are a sizeable part of each row, one pass over everything is cheaper
    if before + after >= (size if dim % t.dim() != t.dim() - 1 else size // 4):
        return [t]
    return [b for b in (t.narrow(dim, 0, before), t.narrow(dim, size - after, after)) if b.numel()]


def _band_widths(dmin: float, dmax: float) -> tuple[int, int]:
    return max(0, math.ceil(-dmin) + 1), max(0, math.ceil(dmax) + 1)


def _fold_reflect101(q: torch.Tensor, size: int, lo: float, hi: float) -> None:
    """Fold integer coordinates q (1/32 px, lo <= q <= hi) in place into [0, 32 (size-1)], mirroring about the
    first and last pixel (BORDER_REFLECT_101)."""
    edge = 32 * (size - 1)
    if edge == 0:
        q.zero_()
    elif -edge <= lo and hi <= 2 * edge:  # one mirror at most: edge - | |q| - edge |
        torch.sub(edge, q.abs_().sub_(edge).abs_(), out=q)
    else:
        r = torch.remainder(q, 2 * edge)
        torch.minimum(r, 2 * edge - r, out=q)


def affine_grid(inv: np.ndarray, h: int, w: int, device: torch.device):
    """Where cv2.warpAffine samples an (h, w) output: source (x, y) = inv @ (x, y, 1) per image (inv (N, 2, 3)
    float64), rounded to 1/32 px (OpenCV's INTER_BITS = 5 grid) as floor(32 s + 0.5), folded reflect-101.
    Returns the top-left flat index (N, h*w) int64 and the weights fx, fy (N, h*w) float32 (multiples of 1/32).

    s = (inv[0] x + inv[1] y) + inv[2] is summed in float64 in that order; scaling every term by 32 (exact)
    first leaves each rounding unchanged, so only the sum itself runs per pixel and the products per row or column."""
    n = inv.shape[0]
    scaled = torch.as_tensor(inv * 32.0, dtype=torch.float64, device=device)
    cols = torch.arange(w, device=device, dtype=torch.float64)
    rows = torch.arange(h, device=device, dtype=torch.float64)
    # s - (x, y) is affine too, so the corners bound every displacement (1/16 px of margin covers the roundings)
    cx, cy = np.array([0.0, w - 1, 0.0, w - 1]), np.array([0.0, 0.0, h - 1, h - 1])
    shift = inv[:, :, 0, None] * cx + inv[:, :, 1, None] * cy + inv[:, :, 2, None] - np.stack([cx, cy])  # (N, 2, 4)
    dmin, dmax = shift.min(axis=(0, 2)) - 1 / 16, shift.max(axis=(0, 2)) + 1 / 16

    def grid_32ths(axis: int, size: int) -> torch.Tensor:
        m = scaled[:, axis]
        s = torch.add((cols * m[:, 0, None])[:, None, :], (rows * m[:, 1, None])[:, :, None])
        q = s.add_(m[:, 2, None, None]).add_(0.5).floor_().to(torch.int32)
        lo, hi = 32 * dmin[axis], 32 * (size - 1 + dmax[axis])
        for band in _border_bands(q, -1 - axis, *_band_widths(dmin[axis], dmax[axis])):
            _fold_reflect101(band, size, lo, hi)
        return q

    qx, qy = grid_32ths(0, w), grid_32ths(1, h)
    fx = (qx & 31).to(torch.float32).mul_(1 / 32)
    fy = (qy & 31).to(torch.float32).mul_(1 / 32)
    idx = torch.empty(n, h * w, dtype=torch.int64, device=device)
    torch.add(qx >> 5, qy >> 5, alpha=w, out=idx.view(n, h, w))
    return idx, fx.reshape(n, -1), fy.reshape(n, -1)


def _fold_symmetric(c: torch.Tensor, size: int, dmin: float, dmax: float, dim: int) -> torch.Tensor:
    """scipy mode 'reflect' in place for coordinates c = line index along dim + d (dmin <= d <= dmax), rounded
    exactly like clamp(mirror(remainder(c + 0.5, 2 size) - 0.5), 0, size - 1) in float32: the +0.5/-0.5 round
    trip drops low bits everywhere; the rest only changes the border bands, and the remainder is skipped where
    it is the identity."""
    period = 2.0 * size
    bands = _border_bands(c, dim, *_band_widths(dmin, dmax))
    c.add_(0.5)
    if dmin < -size or dmax >= size - 1:
        for b in bands:
            torch.remainder(b, period, out=b)
    elif dmin < -0.5:  # b in [-period, period): fmod is exact, so remainder adds one period to negatives
        for b in bands:
            b.copy_(torch.where(b < 0, b + period, b))
    c.sub_(0.5)
    for b in bands:
        # mirror about size - 0.5: where(b > size - 0.5, 2 size - 1 - b, b) is this minimum (rounding is monotone)
        torch.minimum(b, (period - 1.0) - b, out=b).clamp_(0.0, size - 1.0)
    return c


def displaced_grid(d: torch.Tensor):
    """Where scipy map_coordinates(order=1, mode='reflect') samples at (y + dy, x + dx) for the displacements
    d = (dx, dy) (N, 2, H, W) float32: the top-left flat index (N, H*W) int64 and the weights fx, fy (N, H*W)."""
    n, _, h, w = d.shape
    dev = d.device
    lo, hi = (float(v) for v in torch.aminmax(d))
    xs = _fold_symmetric(torch.add(d[:, 0], torch.arange(w, device=dev, dtype=torch.float32)), w, lo, hi, -1)
    ys = _fold_symmetric(torch.add(d[:, 1], torch.arange(h, device=dev, dtype=torch.float32)[:, None]), h, lo, hi, -2)
    x0, y0 = xs.to(torch.int32), ys.to(torch.int32)  # truncation is floor: both are >= 0 now
    fx, fy = xs.sub_(x0), ys.sub_(y0)
    idx = torch.empty(n, h * w, dtype=torch.int64, device=dev)
    torch.add(x0, y0, alpha=w, out=idx.view(n, h, w))
    return idx, fx.reshape(n, -1), fy.reshape(n, -1)
