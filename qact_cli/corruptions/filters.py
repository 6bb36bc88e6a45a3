"""Batched linear filters, resampling and border handling shared by the corruptions.

Images are float tensors (..., H, W). Border modes are named after what they do:
- "nearest":    a a | a b c d | d d   (scipy/skimage 'nearest', OpenCV BORDER_REPLICATE)
- "symmetric":  b a | a b c d | d c   (scipy/skimage 'reflect')
- "reflect101": c b | a b c d | c b   (OpenCV's default BORDER_REFLECT_101, torch 'reflect')
Padding falls back to index arithmetic, so any pad width works on any image size (>= 1 px).
An image's result must not depend on the other images in its batch (chunked runs give the same bytes):
most operations are elementwise or gathers; the matrix products (long kernels, zoom blur's sparse operator)
treat images as independent columns, and the tests check chunk independence for every corruption.
"""

from __future__ import annotations

import math
import warnings
from functools import lru_cache

import numpy as np
import torch


def fold_index(idx: np.ndarray | torch.Tensor, n: int, mode: str):
    """Map (possibly out-of-range) integer indices into 0..n-1 with the border `mode`."""
    lib = torch if isinstance(idx, torch.Tensor) else np
    if mode == "nearest" or n == 1:
        return lib.clip(idx, 0, n - 1)
    if mode not in ("symmetric", "reflect101"):
        raise ValueError(f"unknown border mode {mode!r}")
    lo, hi = int(idx.min()), int(idx.max())
    if mode == "reflect101":
        if -(n - 1) <= lo and hi <= 2 * (n - 1):  # at most one reflection: no integer division needed
            return (n - 1) - lib.abs((n - 1) - lib.abs(idx))
        period = 2 * n - 2
        i = idx % period
        return lib.where(i >= n, period - i, i)
    if -n <= lo and hi < 2 * n:
        i = lib.where(idx < 0, -1 - idx, idx)
        return lib.where(i >= n, 2 * n - 1 - i, i)
    i = idx % (2 * n)
    return lib.where(i >= n, 2 * n - 1 - i, i)


def gaussian_weights(sigma: float, truncate: float = 4.0) -> tuple[float, ...]:
    """scipy.ndimage.gaussian_filter1d's kernel: radius int(truncate*sigma + 0.5), normalised exp(-x^2/2s^2)."""
    if sigma <= 1e-15:  # scipy skips axes whose sigma is zero
        return (1.0,)
    radius = int(truncate * float(sigma) + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    phi = np.exp(-0.5 / float(sigma) ** 2 * x**2)
    return tuple((phi / phi.sum()).tolist())


@lru_cache(maxsize=256)
def _fold_matrix(n: int, weights: tuple[float, ...], mode: str) -> np.ndarray:
    """The (n, n) matrix of a 1-D correlation with `weights` and border `mode` (pads folded back in)."""
    r = len(weights) // 2
    rows = np.repeat(np.arange(n), len(weights))
    cols = fold_index((np.arange(n)[:, None] + np.arange(-r, r + 1)[None, :]).ravel(), n, mode)
    m = np.zeros((n, n))
    np.add.at(m, (rows, cols), np.tile(np.asarray(weights), n))
    return m


_DEVICE_CACHE: dict = {}


def _on(key, make, device: torch.device, dtype=torch.float32) -> torch.Tensor:
    k = (key, str(device), dtype)
    t = _DEVICE_CACHE.get(k)
    if t is None:
        if len(_DEVICE_CACHE) > 512:
            _DEVICE_CACHE.clear()
        t = _DEVICE_CACHE[k] = torch.as_tensor(make(), dtype=dtype, device=device)
    return t


_TORCH_PAD = {"nearest": "replicate", "reflect101": "reflect"}


def pad_axis(x: torch.Tensor, before: int, after: int, dim: int, mode: str) -> torch.Tensor:
    n = x.shape[dim]
    dim = dim % x.dim()
    if (mode in _TORCH_PAD and x.is_floating_point() and x.dim() in (3, 4) and dim >= x.dim() - 2
            and max(before, after) < n):  # torch's own padding kernels where they apply
        pad = (before, after, 0, 0) if dim == x.dim() - 1 else (0, 0, before, after)
        return torch.nn.functional.pad(x, pad, mode=_TORCH_PAD[mode])
    idx = _on(("pad", n, before, after, mode),
              lambda: fold_index(np.arange(-before, n + after), n, mode), x.device, torch.int64)
    return x.index_select(dim, idx)


def correlate1d(x: torch.Tensor, weights: tuple[float, ...], dim: int, mode: str) -> torch.Tensor:
    """1-D correlation along `dim` with border `mode`: a loop over taps of shifted slices (short kernels),
    or one matrix product with the folded (n, n) matrix when the kernel is long compared to the image."""
    k, n = len(weights), x.shape[dim]
    if k == 1:
        return x * weights[0] if weights[0] != 1.0 else x
    if k > 48 or k > n:
        m = _on(("fold", n, weights, mode), lambda: _fold_matrix(n, weights, mode), x.device, x.dtype)
        return torch.movedim(torch.matmul(torch.movedim(x, dim, -1), m.T), -1, dim)
    r = k // 2
    xp = pad_axis(x, r, r, dim, mode)
    out = xp.narrow(dim, 0, n) * weights[0]
    for i in range(1, k):
        out.add_(xp.narrow(dim, i, n), alpha=weights[i])
    return out


def gaussian_filter(x: torch.Tensor, sigma: float, mode: str = "nearest", truncate: float = 4.0) -> torch.Tensor:
    """skimage.filters.gaussian / scipy gaussian_filter over the last two axes (H, W)."""
    w = gaussian_weights(sigma, truncate)
    return correlate1d(correlate1d(x, w, -2, mode), w, -1, mode)


def correlate2d(x: torch.Tensor, kernel: np.ndarray, mode: str) -> torch.Tensor:
    """2-D correlation (cv2.filter2D semantics, anchor at the centre) over the last two axes: one shifted
    slice per non-zero tap."""
    kh, kw = kernel.shape
    ry, rx = kh // 2, kw // 2
    h, w = x.shape[-2:]
    xp = pad_axis(pad_axis(x, ry, kh - 1 - ry, -2, mode), rx, kw - 1 - rx, -1, mode)
    out = torch.zeros_like(x)
    for (i, j), v in np.ndenumerate(kernel):
        if v != 0:
            out.add_(xp[..., i:i + h, j:j + w], alpha=float(v))
    return out


def _reflect_coordinate(c: torch.Tensor, n: int, mode: str) -> torch.Tensor:
    """Fold float pixel coordinates into [0, n-1]: "reflect101" mirrors about the edge pixels (0, n-1),
    "symmetric" about the image edges (-0.5, n-0.5) and then clamps to the outer pixel centres. Bilinear
    interpolation commutes with these mirrors, so sampling the folded coordinate equals interpolating between
    folded neighbour indices (what cv2.remap / scipy map_coordinates do). The reflect-101 fold is exact; the
    symmetric one may move a coordinate by an ulp."""
    if n == 1:
        return torch.zeros_like(c)
    if mode == "reflect101":
        period = 2.0 * (n - 1)
        c = torch.remainder(c, period)
        return torch.where(c > n - 1, period - c, c)
    c = torch.remainder(c + 0.5, 2.0 * n) - 0.5
    return torch.where(c > n - 0.5, 2.0 * n - 1.0 - c, c).clamp_(0.0, n - 1.0)


def sample_bilinear(img: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor, mode: str) -> torch.Tensor:
    """img (N, C, H, W) sampled at pixel coordinates ys, xs (N, H', W'): bilinear between the four neighbours,
    with `mode` borders (cv2.remap BORDER_REFLECT_101 / scipy map_coordinates order=1 mode='reflect'). The
    weights come from the exact fractional parts, so a whole-pixel coordinate returns the pixel unchanged."""
    n, c, h, w = img.shape
    ys, xs = _reflect_coordinate(ys, h, mode), _reflect_coordinate(xs, w, mode)
    y0f, x0f = torch.floor(ys), torch.floor(xs)
    fy = (ys - y0f).to(img.dtype).reshape(n, 1, -1)
    fx = (xs - x0f).to(img.dtype).reshape(n, 1, -1)
    y0, x0 = y0f.long(), x0f.long()
    r0, r1 = y0 * w, (y0 + 1).clamp_(max=h - 1) * w
    x1 = (x0 + 1).clamp_(max=w - 1)
    planes = img.reshape(n, c, h * w)

    def tap(idx):  # one index per output pixel, shared by the channels
        return planes.gather(2, idx.reshape(n, 1, -1).expand(n, c, -1))

    top = torch.lerp(tap(r0 + x0), tap(r0 + x1), fx)
    bottom = torch.lerp(tap(r1 + x0), tap(r1 + x1), fx)
    return torch.lerp(top, bottom, fy).reshape(n, c, *ys.shape[1:])


def _zoom_axis(n: int, z: float) -> tuple[int, int, int, int]:
    """One axis of the reference `clipped_zoom`: crop ceil(n/z) centred (start `top`), zoom to round(ch*z)
    (scipy.ndimage.zoom's output size), keep the centre n from `trim`."""
    ch = int(math.ceil(n / z))
    return ch, (n - ch) // 2, int(round(ch * z)), (int(round(ch * z)) - n) // 2


def clipped_zoom(x: torch.Tensor, z: float) -> torch.Tensor:
    """The reference `clipped_zoom` of (N, C, H, W) or (N, H, W) by factor z >= 1, each axis with its own size.
    scipy.ndimage.zoom(order=1) maps output o to input o*(in-1)/(out-1): bilinear with aligned corners."""
    h, w = x.shape[-2:]
    ch, top, oh, th = _zoom_axis(h, float(z))
    cw, left, ow, tw = _zoom_axis(w, float(z))
    crop = x[..., top:top + ch, left:left + cw]
    flat = crop.reshape(-1, 1, ch, cw) if x.dim() == 3 else crop
    big = torch.nn.functional.interpolate(flat, size=(oh, ow), mode="bilinear", align_corners=True)
    return big[..., th:th + h, tw:tw + w].reshape(x.shape)


def _zoom_taps(n: int, z: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The two source pixels and weights along one axis for every output pixel of `clipped_zoom`."""
    ch, top, out, trim = _zoom_axis(n, z)
    pos = np.arange(trim, trim + n, dtype=np.float64) * ((ch - 1) / (out - 1) if out > 1 else 0.0)
    i0 = np.clip(np.floor(pos).astype(np.int64), 0, ch - 1)
    return i0 + top, np.minimum(i0 + 1, ch - 1) + top, pos - i0


@lru_cache(maxsize=8)
def _zoom_blur_csr(h: int, w: int, factors: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """zoom_blur as one sparse (H*W, H*W) matrix: (identity + sum of the bilinear clipped zooms) / (n + 1),
    coinciding taps merged. Returns CSR (row pointers, columns, values), values in float64."""
    pix = np.arange(h * w)
    rows, cols, vals = [pix], [pix], [np.ones(h * w)]
    for z in factors:
        (a0, a1, fa), (b0, b1, fb) = _zoom_taps(h, z), _zoom_taps(w, z)
        for ai, wa in ((a0, 1 - fa), (a1, fa)):
            for bj, wb in ((b0, 1 - fb), (b1, fb)):
                rows.append(pix)
                cols.append((ai[:, None] * w + bj[None, :]).ravel())
                vals.append((wa[:, None] * wb[None, :]).ravel())
    key = np.concatenate(rows) * (h * w) + np.concatenate(cols)
    uniq, inverse = np.unique(key, return_inverse=True)
    values = np.bincount(inverse, weights=np.concatenate(vals)) / (len(factors) + 1)
    crow = np.concatenate([[0], np.cumsum(np.bincount(uniq // (h * w), minlength=h * w))])
    return crow, uniq % (h * w), values


def zoom_blur_average(x: torch.Tensor, factors: tuple[float, ...]) -> torch.Tensor:
    """(x + sum_z clipped_zoom(x, z)) / (n + 1) for (N, C, H, W) float, as one sparse matrix product over the
    pixels (a handful of merged taps per output pixel instead of one resampling per factor)."""
    n, c, h, w = x.shape
    key = ("zoom-blur", h, w, tuple(factors))
    crow, col, val = _zoom_blur_csr(h, w, tuple(float(z) for z in factors))
    m = _DEVICE_CACHE.get((key, str(x.device)))
    if m is None:
        with warnings.catch_warnings():  # "sparse CSR support is in beta": only CSR @ dense is used here
            warnings.simplefilter("ignore", UserWarning)
            m = torch.sparse_csr_tensor(torch.as_tensor(crow, dtype=torch.int32), torch.as_tensor(col, dtype=torch.int32),
                                        torch.as_tensor(val, dtype=x.dtype), (h * w, h * w)).to(x.device)
        _DEVICE_CACHE[(key, str(x.device))] = m
    cols = x.reshape(n * c, h * w).T.contiguous()  # one column per (image, channel)
    return torch.sparse.mm(m, cols).T.reshape(n, c, h, w)


def motion_offsets(radius: int, angle_deg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image source offsets (dy, dx) of the taps i = 0..2r of ImageMagick's MotionBlurImage, as
    re-derived in imagecorruptions' `_motion_blur`: tap i reads (y + ceil(i sin a - 0.5), x + ceil(i cos a - 0.5))."""
    width = 2 * int(radius) + 1
    a = torch.deg2rad(angle_deg.to(torch.float64))[:, None]
    # point = width*(sin, cos) and hypot = width, so i*point/hypot = i*(sin, cos) up to rounding
    px, py = width * torch.cos(a), width * torch.sin(a)
    hyp = torch.hypot(px, py)
    i = torch.arange(width, dtype=torch.float64)[None, :]
    dy = torch.ceil(i * py / hyp - 0.5).long()
    dx = torch.ceil(i * px / hyp - 0.5).long()
    return dy, dx


def motion_weights(radius: int, sigma: float) -> np.ndarray:
    """One-sided Gaussian weights exp(-i^2/2s^2), i = 0..2r, normalised (ImageMagick's motion kernel)."""
    i = np.arange(2 * int(radius) + 1, dtype=np.float64)
    k = np.exp(-(i**2) / (2 * float(sigma) ** 2))
    return k / k.sum()


def motion_blur(x: torch.Tensor, radius: int, sigma: float, angle_deg: torch.Tensor) -> torch.Tensor:
    """Blur (N, C, H, W) float along a per-image direction with the one-sided Gaussian line kernel,
    borders replicated. Taps whose shift reaches the image size are dropped (the reference stops there)."""
    n, c, h, w = x.shape
    dy, dx = motion_offsets(radius, angle_deg.cpu())
    k = torch.as_tensor(motion_weights(radius, sigma))
    stop = ((dy.abs() >= h) | (dx.abs() >= w)).cumsum(1) > 0
    wts = torch.where(stop, 0.0, k[None, :]).to(device=x.device, dtype=x.dtype)
    r = int(max(dy.abs().max(), dx.abs().max()).clamp(max=max(h, w)))
    xp = pad_axis(pad_axis(x, r, r, -2, "nearest"), r, r, -1, "nearest").contiguous()
    hp, wp = h + 2 * r, w + 2 * r
    # A shifted image is H*C rows of W values, each row a contiguous run of the padded buffer: view the
    # buffer as overlapping W-long windows and copy the rows of every (image, tap) with one index_select.
    flat = xp.reshape(-1)
    windows = flat.as_strided((flat.numel() - w + 1, w), (1, 1))
    dev = x.device
    row0 = ((torch.arange(n, device=dev) * c)[:, None, None] + torch.arange(c, device=dev)[None, :, None]) * (hp * wp)
    row0 = row0 + (torch.arange(h, device=dev) + r)[None, None, :] * wp + r  # (n, c, h): start of each unshifted row
    shift = (dy.clamp(-r, r) * wp + dx.clamp(-r, r)).to(dev)  # (n, taps)
    out = torch.zeros_like(x)
    for t in range(dy.shape[1]):  # taps, not pixels: one gathered copy of the batch per tap
        starts = (row0 + shift[:, t, None, None]).reshape(-1)
        out.addcmul_(windows.index_select(0, starts).view(n, c, h, w), wts[:, t, None, None, None])
    return out


@lru_cache(maxsize=64)
def _pil_box_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pillow's BOX resampling (precompute_coeffs + normalize_coeffs_8bpc, PRECISION_BITS = 22) as taps:
    source indices and fixed-point integer weights, both (out, taps), unused taps weighted 0."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 0.5 * filterscale
    rows = []
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size)
        x = np.arange(xmin, xmax)
        t = (x - center + 0.5) / filterscale
        k = ((t > -0.5) & (t <= 0.5)).astype(np.float64)
        if k.sum() != 0:
            k = k / k.sum()
        rows.append((x, np.floor(0.5 + k * (1 << 22))))
    taps = max(len(x) for x, _ in rows)
    idx = np.zeros((out_size, taps), np.int64)
    wts = np.zeros((out_size, taps), np.int64)
    for o, (x, k) in enumerate(rows):
        idx[o, :len(x)], wts[o, :len(x)] = x, k
    return idx, wts


def pil_box_resize(x: torch.Tensor, out_h: int, out_w: int) -> torch.Tensor:
    """PIL `Image.resize((out_w, out_h), Image.BOX)` of 8-bit values (int32 (..., H, W)): horizontal pass then
    vertical, each rounded to 8 bits with Pillow's integer arithmetic ((sum + 2^21) >> 22), so exact."""
    h, w = x.shape[-2:]

    def one_pass(v: torch.Tensor, n_in: int, n_out: int, dim: int) -> torch.Tensor:
        if n_in == n_out:
            return v
        idx_np, wts_np = _pil_box_taps(n_in, n_out)
        idx = _on(("box-idx", n_in, n_out), lambda: idx_np, v.device, torch.int64)
        wts = _on(("box-w", n_in, n_out), lambda: wts_np, v.device, torch.int32)
        shape = [1] * v.dim()
        shape[dim] = n_out
        acc = torch.full((), 1 << 21, dtype=torch.int32, device=v.device)
        for t in range(idx.shape[1]):  # weights < 2^22 times 8-bit values: sums fit in int32 as in Pillow
            acc = acc + v.index_select(dim, idx[:, t]) * wts[:, t].view(shape)
        return (acc >> 22).clamp_(0, 255)

    return one_pass(one_pass(x, w, out_w, -1), h, out_h, -2)
