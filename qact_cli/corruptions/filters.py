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

from .native import blur as native_blur


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


def device_constant(key, make, device: torch.device, dtype=torch.float32) -> torch.Tensor:
    """The tensor `make()` (index tables, weights, spectra) on `device` as `dtype`, built once per (key, device,
    dtype) and reused by every later batch: rebuilding and copying these constants per call would cost more
    than the small batches that use them."""
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
    idx = device_constant(("pad", n, before, after, mode),
              lambda: fold_index(np.arange(-before, n + after), n, mode), x.device, torch.int64)
    return x.index_select(dim, idx)


_BAND_BLOCK = 32  # output positions per block of a banded product (measured at 224 px: 16-48 within noise)
_BANDED_FROM_TAPS = 9  # longer kernels take the banded product: at 224 px it costs about what 10 taps do


@lru_cache(maxsize=256)
def _band_spans(n: int, weights: tuple[float, ...], mode: str) -> tuple[tuple[int, int, int, int], ...]:
    """Blocks (o0, o1, i0, i1) of the folded matrix: outputs o0..o1-1 read only inputs i0..i1-1."""
    m = _fold_matrix(n, weights, mode)
    spans = []
    for o0 in range(0, n, _BAND_BLOCK):
        o1 = min(n, o0 + _BAND_BLOCK)
        cols = np.flatnonzero(np.abs(m[o0:o1]).sum(0))
        spans.append((o0, o1, int(cols[0]), int(cols[-1]) + 1))
    return tuple(spans)


def _banded_product(x: torch.Tensor, weights: tuple[float, ...], dim: int, mode: str) -> torch.Tensor:
    """correlate1d along the last (dim -1) or second-last (dim -2) axis as a product with the folded matrix, one
    block of outputs at a time against the window of inputs it reads: (block + 2r) multiply-adds per value at
    BLAS speed instead of n for the whole (n, n) matrix. Every image gets the same products whatever its batch:
    rows of one matrix product (last axis), or one fixed-shape product per plane (second-last axis)."""
    n = x.shape[dim]
    x = x.contiguous()
    out = torch.empty_like(x)
    last = dim % x.dim() == x.dim() - 1
    src = x.view(-1, n) if last else x.view(-1, n, x.shape[-1])
    dst = out.view(src.shape)
    for o0, o1, i0, i1 in _band_spans(n, weights, mode):
        def block(o0=o0, o1=o1, i0=i0, i1=i1):
            m = _fold_matrix(n, weights, mode)[o0:o1, i0:i1]
            return m.T if last else m

        m = device_constant(("band", n, weights, mode, o0, last), block, x.device, x.dtype)
        if last:
            torch.mm(src[:, i0:i1], m, out=dst[:, o0:o1])
        else:
            torch.bmm(m.expand(src.shape[0], -1, -1), src[:, i0:i1], out=dst[:, o0:o1])
    return out


def _dense(k: int, n: int) -> bool:
    """The whole folded (n, n) matrix in one product: kernels long compared to the image."""
    return k > 48 or 8 * k > n


def correlate1d(x: torch.Tensor, weights: tuple[float, ...], dim: int, mode: str) -> torch.Tensor:
    """1-D correlation along `dim` with border `mode`: a loop over taps of shifted slices (very short kernels),
    one matrix product with the folded (n, n) matrix when the kernel is long compared to the image (n
    multiply-adds per value, but at BLAS speed, ~8x a pass per tap: measured at 32-224 px), else, along the last
    two axes, a banded product (half the time of a pass per tap for 25 taps at 224 px)."""
    k, n = len(weights), x.shape[dim]
    if k == 1:
        return x * weights[0] if weights[0] != 1.0 else x
    if _dense(k, n):
        m = device_constant(("fold", n, weights, mode), lambda: _fold_matrix(n, weights, mode), x.device, x.dtype)
        return torch.movedim(torch.matmul(torch.movedim(x, dim, -1), m.T), -1, dim)
    if k > _BANDED_FROM_TAPS and dim % x.dim() >= x.dim() - 2:
        return _banded_product(x, weights, dim, mode)
    r = k // 2
    xp = pad_axis(x, r, r, dim, mode)
    out = xp.narrow(dim, 0, n) * weights[0]
    for i in range(1, k):
        out.add_(xp.narrow(dim, i, n), alpha=weights[i])
    return out


def gaussian_filter(x: torch.Tensor, sigma: float, mode: str = "nearest", truncate: float = 4.0) -> torch.Tensor:
    """skimage.filters.gaussian / scipy gaussian_filter over the last two axes (H, W)."""
    w = gaussian_weights(sigma, truncate)
    if x.dtype == torch.float32:  # QACT_KERNEL=native: both passes in one C call (None: not selected here)
        out = native_blur.gaussian_filter(x, w, mode)
        if out is not None:
            return out
    y = correlate1d(x, w, -2, mode)
    if mode not in _TORCH_PAD and not _dense(len(w), y.shape[-1]) and len(w) <= _BANDED_FROM_TAPS:
        # a pass per tap with no torch padding kernel for this mode along W (an index_select on the last axis is
        # slow): run the W pass as an H pass on the transposed image (same values, same order of operations)
        return correlate1d(y.transpose(-1, -2).contiguous(), w, -2, mode).transpose(-1, -2).contiguous()
    return correlate1d(y, w, -1, mode)


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


def zoom_axis(n: int, z: float) -> tuple[int, int, int, int]:
    """One axis of the reference `clipped_zoom`: crop ceil(n/z) centred (start `top`), zoom to round(ch*z)
    (scipy.ndimage.zoom's output size), keep the centre n from `trim`."""
    ch = int(math.ceil(n / z))
    return ch, (n - ch) // 2, int(round(ch * z)), (int(round(ch * z)) - n) // 2


def zoom_taps(n: int, z: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The two source pixels and weights along one axis for every output pixel of `clipped_zoom`."""
    ch, top, out, trim = zoom_axis(n, z)
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
        (a0, a1, fa), (b0, b1, fb) = zoom_taps(h, z), zoom_taps(w, z)
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


def motion_offsets(radius: int, angle_deg) -> tuple[np.ndarray, np.ndarray]:
    """Per-image source offsets (dy, dx), int64 (N, 2r + 1), of the taps i = 0..2r of ImageMagick's
    MotionBlurImage, as re-derived in imagecorruptions' `_motion_blur`: tap i reads
    (y + ceil(i sin a - 0.5), x + ceil(i cos a - 0.5)). numpy on the CPU: a handful of angles, where torch's
    per-op overhead would cost more than the arithmetic."""
    width = 2 * int(radius) + 1
    a = np.deg2rad(np.asarray(angle_deg, dtype=np.float64))[:, None]
    # point = width*(sin, cos) and hypot = width, so i*point/hypot = i*(sin, cos) up to rounding
    px, py = width * np.cos(a), width * np.sin(a)
    hyp = np.hypot(px, py)
    i = np.arange(width, dtype=np.float64)[None, :]
    return np.ceil(i * py / hyp - 0.5).astype(np.int64), np.ceil(i * px / hyp - 0.5).astype(np.int64)


def motion_weights(radius: int, sigma: float) -> np.ndarray:
    """One-sided Gaussian weights exp(-i^2/2s^2), i = 0..2r, normalised (ImageMagick's motion kernel)."""
    i = np.arange(2 * int(radius) + 1, dtype=np.float64)
    k = np.exp(-(i**2) / (2 * float(sigma) ** 2))
    return k / k.sum()


def _runs(dy: np.ndarray, dx: np.ndarray, weight: np.ndarray, first: int) -> list[tuple[int, int, int, int, int, float]]:
    """Taps from `first` on, then runs of consecutive images that share the tap's offset and weight (N, T each):
    (tap, a, b, dy, dx, weight) for images a..b-1. Plain Python on lists: a few dozen taps times a few images,
    where numpy's per-call overhead would cost more than the work."""
    rows = [list(zip(*r)) for r in zip(dy.tolist(), dx.tolist(), weight.tolist())]  # per image: (dy, dx, w) per tap
    ops, n = [], len(rows)
    for t in range(first, dy.shape[1]):
        a = 0
        for b in range(1, n + 1):
            if b == n or rows[b][t] != rows[a][t]:
                ops.append((t, a, b, *rows[a][t]))
                a = b
    return ops


_SIDE_BY_SIDE_BELOW = 96  # image width under which images are laid side by side (rows too short to stream alone)


def _motion_plan(radius: int, angle: np.ndarray, mirror: bool) -> tuple[np.ndarray, ...]:
    """The order to blur the images in (by angle), their tap offsets (dy, dx) in that order, and which images
    to mirror top-bottom / left-right (in the caller's order; with `mirror`, those whose line points up / left,
    and their offsets negated to match)."""
    dy, dx = motion_offsets(radius, angle)
    n = len(angle)
    flip_h, flip_w = (dy.sum(1) < 0, dx.sum(1) < 0) if mirror else (np.zeros(n, bool), np.zeros(n, bool))
    dy, dx = np.where(flip_h[:, None], -dy, dy), np.where(flip_w[:, None], -dx, dx)
    rad = np.deg2rad(angle)
    mirrored = np.arctan2(np.where(flip_h, -1, 1) * np.sin(rad), np.where(flip_w, -1, 1) * np.cos(rad))
    order = np.argsort(mirrored, kind="stable")
    return order, dy[order], dx[order], flip_h, flip_w


def _flip_some(x: torch.Tensor, flip_h: np.ndarray, flip_w: np.ndarray, inplace: bool) -> torch.Tensor:
    """x (N, C, H, W) with the images marked in flip_h / flip_w mirrored top-bottom / left-right."""
    for mask, dim in ((flip_h, -2), (flip_w, -1)):
        if mask.any():
            idx = torch.as_tensor(np.flatnonzero(mask), device=x.device)
            flipped = x.index_select(0, idx).flip(dim)
            x = x.index_copy_(0, idx, flipped) if inplace else x.index_copy(0, idx, flipped)
            inplace = True
    return x


def _replicate_pad(x: torch.Tensor, top: int, bottom: int, left: int, right: int, dtype: torch.dtype,
                   side_by_side: bool) -> torch.Tensor:
    """(N, C, H, W) -> `dtype` copy padded with replicated edges (any widths), laid out as (N, C, H', W') or,
    side by side, as (C, H', N, W')."""
    n, c, h, w = x.shape
    shape = (h + top + bottom, w + left + right)
    padded = torch.empty((c, shape[0], n, shape[1]) if side_by_side else (n, c, *shape), dtype=dtype, device=x.device)
    canvas = padded if side_by_side else padded.permute(1, 2, 0, 3)  # (C, H', N, W') either way
    rows = slice(top, top + h)
    canvas[:, rows, :, left:left + w] = x.permute(1, 2, 0, 3)
    canvas[:, rows, :, :left] = canvas[:, rows, :, left:left + 1]
    canvas[:, rows, :, left + w:] = canvas[:, rows, :, left + w - 1:left + w]
    canvas[:, :top] = canvas[:, top:top + 1]
    canvas[:, top + h:] = canvas[:, top + h - 1:top + h]
    return padded


def _merged_taps(dy: np.ndarray, dx: np.ndarray, live: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, ...]:
    """Per image, consecutive taps that read the same offset (a steep digital line steps by a row, or by a column,
    alone now and then) as one tap with the summed weight: (dy, dx, weight) as (N, steps), weight 0 where an image
    has fewer steps or its taps are no longer live."""
    n, t = dy.shape
    new = np.ones((n, t), bool)
    new[:, 1:] = (dy[:, 1:] != dy[:, :-1]) | (dx[:, 1:] != dx[:, :-1])
    step = np.cumsum(new, axis=1) - 1
    rows = np.repeat(np.arange(n), t).reshape(n, t)
    steps = int(step.max()) + 1
    w = np.zeros((n, steps))
    np.add.at(w, (rows, step), weights[None, :] * live)
    mdy, mdx = np.zeros((n, steps), np.int64), np.zeros((n, steps), np.int64)
    mdy[rows, step], mdx[rows, step] = dy, dx
    return mdy, mdx, w


def motion_taps(radius: int, sigma: float, angle_deg: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """motion_blur's taps as the C kernel takes them: offsets (dy, dx) per image, int64 (N, 2r + 1), and the
    weights (2r + 1,); the kernel drops and merges taps as motion_blur does (a few numpy calls fewer per batch)."""
    return (*motion_offsets(radius, angle_deg.detach().to("cpu", torch.float64).numpy()),
            _motion_weights(int(radius), float(sigma)))


@lru_cache(maxsize=64)
def _motion_weights(radius: int, sigma: float) -> np.ndarray:
    w = motion_weights(radius, sigma)
    w.flags.writeable = False
    return w


def motion_blur(x: torch.Tensor, radius: int, sigma: float, angle_deg: torch.Tensor) -> torch.Tensor:
    """Blur (N, C, H, W) images (any real dtype; computed in float32 unless x is floating) along a per-image
    direction with the one-sided Gaussian line kernel, borders replicated. Taps whose shift reaches the image
    size are dropped (the reference stops there). Returns (N, C, H, W) contiguous floats.

    Every tap is one shifted-slice multiply-add over a run of images that read the same offset (no gathered
    copies). Narrow images are sorted by angle, so that runs span several images, laid out side by side, as
    (C, H + pads, N, W + pads), so that a run's rows are long contiguous stretches, and mirrored so that every
    line points down and right (exact: replicated borders are mirror symmetric): the mirrored halves then
    share offsets, which halves the runs and the pads. Wide images (a run is about one image anyway) stay in
    place, and each merges the taps that read the same pixel."""
    n, c, h, w = x.shape
    if native_blur.selected(x):  # QACT_KERNEL=native: every tap of a batch in one C call (None: not here)
        out = native_blur.motion_blur(x, *motion_taps(radius, sigma, angle_deg))
        if out is not None:
            return out
    dtype = x.dtype if x.is_floating_point() else torch.float32
    dev = x.device
    side = w < _SIDE_BY_SIDE_BELOW
    angle = angle_deg.detach().to("cpu", torch.float64).numpy()
    if side:
        order, dy, dx, flip_h, flip_w = _motion_plan(radius, angle, True)
    else:
        (dy, dx), order = motion_offsets(radius, angle), np.arange(n)
    live = np.cumsum((np.abs(dy) >= h) | (np.abs(dx) >= w), axis=1) == 0
    top, bottom = max(0, -int(dy[live].min())), max(0, int(dy[live].max()))
    left, right = max(0, -int(dx[live].min())), max(0, int(dx[live].max()))
    hp, wp = h + top + bottom, w + left + right
    rows, cols = slice(top, top + h), slice(left, left + w)
    weights = motion_weights(radius, sigma)
    wts = weights.tolist()  # as alpha, cast to the working precision like a float32 weight tensor was
    if not side:
        padded = _replicate_pad(x, top, bottom, left, right, dtype, False)
        mdy, mdx, mw = _merged_taps(dy, dx, live, weights)
        out = padded[:, :, rows, cols].mul(wts[0])  # tap 0 reads the pixel itself, alone
        for _, a, b, y, x0, wt in _runs(mdy, mdx, mw, 1):  # taps, then runs of images that read the same offset
            if wt != 0.0:
                out[a:b].add_(padded[a:b, :, top + y:top + y + h, left + x0:left + x0 + w], alpha=wt)
        return out
    sorted_x = x if (order == np.arange(n)).all() else x.index_select(0, torch.as_tensor(order, device=dev))
    sorted_x = _flip_some(sorted_x, flip_h[order], flip_w[order], inplace=sorted_x is not x)
    padded = _replicate_pad(sorted_x, top, bottom, left, right, dtype, True)
    # out keeps the canvas's columns: image i is columns i*wp + left .. + w-1, the rest is scratch
    out = padded[:, rows].mul(wts[0])  # tap 0 reads the pixel itself
    # runs are many and small here: one as_strided per view and a weight tensor per tap cost the least per call
    weight, plane, row = torch.as_tensor(weights, device=dev).to(dtype).unbind(), hp * n * wp, n * wp
    for t, a, b, y, x0, wt in _runs(dy, dx, np.where(live, weights[None, :], 0.0), 1):
        if wt != 0.0:  # a run: images a..b-1, their columns side by side
            o, span = a * wp + left, (b - a - 1) * wp + w
            src = padded.as_strided((c, h, span), (plane, row, 1), (top + y) * row + o + x0)
            out.as_strided((c, h, span), (h * row, row, 1), o).addcmul_(src, weight[t])
    out = out.view(c, h, n, wp)[..., cols].permute(2, 0, 1, 3)
    if (order == np.arange(n)).all():
        out = out.contiguous()  # elementwise work that follows runs ~2x faster on contiguous values
    else:
        out = out.index_select(0, torch.as_tensor(np.argsort(order), device=dev))
    return _flip_some(out, flip_h, flip_w, inplace=True)


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


@lru_cache(maxsize=64)
def pil_box_enlarge_source(in_size: int, out_size: int) -> np.ndarray:
    """Pillow's BOX enlargement as a gather: each output pixel's box (one output pixel wide, filterscale 1) holds
    exactly one source pixel centre, so its taps are that pixel weighted 2^22 and the 8-bit result is the pixel
    itself. The source index per output pixel (int64, (out_size,))."""
    if out_size <= in_size:
        raise ValueError(f"not an enlargement: {in_size} -> {out_size}")
    idx, wts = _pil_box_taps(in_size, out_size)
    one = wts == (1 << 22)
    assert one.sum(1).tolist() == [1] * out_size and wts.sum(1).tolist() == [1 << 22] * out_size
    return idx[np.arange(out_size), one.argmax(1)]


def pil_box_resize(x: torch.Tensor, out_h: int, out_w: int) -> torch.Tensor:
    """PIL `Image.resize((out_w, out_h), Image.BOX)` of 8-bit values (int32 (..., H, W)): horizontal pass then
    vertical, each rounded to 8 bits with Pillow's integer arithmetic ((sum + 2^21) >> 22), so exact."""
    h, w = x.shape[-2:]

    def one_pass(v: torch.Tensor, n_in: int, n_out: int, dim: int) -> torch.Tensor:
        if n_in == n_out:
            return v
        idx_np, wts_np = _pil_box_taps(n_in, n_out)
        idx = device_constant(("box-idx", n_in, n_out), lambda: idx_np, v.device, torch.int64)
        wts = device_constant(("box-w", n_in, n_out), lambda: wts_np, v.device, torch.int32)
        shape = [1] * v.dim()
        shape[dim] = n_out
        acc = torch.full((), 1 << 21, dtype=torch.int32, device=v.device)
        for t in range(idx.shape[1]):  # weights < 2^22 times 8-bit values: sums fit in int32 as in Pillow
            acc = acc + v.index_select(dim, idx[:, t]) * wts[:, t].view(shape)
        return (acc >> 22).clamp_(0, 255)

    return one_pass(one_pass(x, w, out_w, -1), h, out_h, -2)
