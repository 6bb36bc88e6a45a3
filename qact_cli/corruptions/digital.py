"""Digital family: contrast, saturate, elastic_transform, pixelate, jpeg_compression (Hendrycks' make_imagenet_c.py
and make_cifar_c.py, functions of the same names; docs/corruption-fidelity.md). Within each group the order of
definition is the benchmark's listing order."""

from __future__ import annotations

import io
import warnings
from functools import lru_cache

import numpy as np
import torch

from . import hsv
from .base import from_hwc, planar, register, to_hwc, unit, unit_to_uint8
from .filters import _pil_box_taps, gaussian_filter, pil_box_enlarge_source, pil_box_resize
from .native import digital as native_digital
from .native import warp as native_warp
from .rng import ImageStreams
from .warp import affine_grid, bilinear_taps, displaced_grid, spare_planes


# interleaved: the native kernel reads a numpy batch's pixels as they are
@register(group="common", deterministic=True, interleaved=True, native_chunk_pixels=1 << 20)
def contrast(x: torch.Tensor, c: float, rng: ImageStreams) -> torch.Tensor:
    """(x - m) * c + m with m the per-channel spatial mean."""
    out = native_digital.contrast(x, c)
    if out is not None:
        return out
    v = unit(planar(x))  # planar: torch sums each channel's mean in that layout's order
    m = v.mean((2, 3), keepdim=True)
    return unit_to_uint8(v.sub_(m).mul_(c).add_(m))


# interleaved: the native kernel reads a numpy batch's pixels as they are (hsv.saturate); one chunk for a usual
# batch under it, so the kernel's output is the result (the default path's ~10 float32 temporaries want the
# default cache-sized chunks)
@register(group="extra", deterministic=True, interleaved=True, native_chunk_pixels=1 << 20)
def saturate(x: torch.Tensor, c, rng: ImageStreams) -> torch.Tensor:
    """HSV saturation S' = clip(S * c0 + c1) (skimage rgb2hsv / hsv2rgb), in closed form: with hue and value
    fixed each channel moves along V - (V - x) * S'/S. Grey pixels have hue 0 (red), so an additive c1 > 0
    tints them red: (V, V(1 - S'), V(1 - S')), as the reference does. Per pixel one factor from its
    max and min (hsv.py)."""
    return hsv.saturate(x, float(c[0]), float(c[1]))


def _affine_from_points(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """cv2.getAffineTransform: the 2x3 M with M @ [src, 1] = dst for three point pairs, batched (n, 3, 2)."""
    a = np.empty(src.shape[:-1] + (3,))
    a[..., :2], a[..., 2] = src, 1.0  # (n, 3, 3) rows [x, y, 1]
    return np.linalg.solve(a, dst).transpose(0, 2, 1)  # (n, 2, 3)


def _displacements(rng: ImageStreams, h: int, w: int, alpha: float, sigma: float) -> torch.Tensor:
    """The displacement fields (N, 2, H, W) as (dx, dy): U(-1, 1) smoothed by a Gaussian of sigma, truncate 3,
    times alpha (drawn after the affine jitter, as the reference draws them)."""
    fields = torch.stack([rng.uniform((h, w), -1.0, 1.0), rng.uniform((h, w), -1.0, 1.0)], 1)
    return gaussian_filter(fields, float(sigma), "symmetric", truncate=3.0).mul_(alpha)


@register(group="common")
def elastic_transform(x: torch.Tensor, c, rng: ImageStreams) -> torch.Tensor:
    """A random affine warp (three points jittered by U(-c2, c2); cv2.warpAffine, bilinear, reflect-101),
    then a smooth random displacement field (U(-1, 1) smoothed by a Gaussian of sigma c1, truncate 3,
    scaled by c0) applied with scipy map_coordinates (order 1, mode 'reflect'). Sampling: warp.py."""
    alpha, sigma, shift = c
    n, ch, h, w = x.shape
    dev, k = x.device, h * w
    # the reference's points (centre +- min(H, W)//3) as (x, y); it builds them from (H, W), same when square
    cx, cy, sq = w // 2, h // 2, min(h, w) // 3
    pts1 = np.array([[cx + sq, cy + sq], [cx + sq, cy - sq], [cx - sq, cy - sq]], dtype=np.float32)
    jitter = rng.scalar_uniform(-shift, shift, 6).numpy().reshape(n, 3, 2).astype(np.float32)
    pts2 = (pts1[None] + jitter).astype(np.float64)
    m = _affine_from_points(np.broadcast_to(pts1.astype(np.float64), pts2.shape), pts2)
    # warpAffine samples the source at M^-1 (x, y)
    full = np.zeros((n, 3, 3))
    full[:, :2], full[:, 2, 2] = m, 1.0
    inverse = np.linalg.inv(full)[:, :2]
    if native_warp.ready(x):  # the same draws and numbers, both samplings in C (corruptions/native/warp.c)
        return native_warp.elastic(x, inverse, _displacements(rng, h, w, alpha, sigma) if alpha != 0 else None)
    src = spare_planes(n, ch, h, w, dev)
    torch.div(x.reshape(n, ch, k), 255.0, out=src[..., :k])  # unit(x)
    grid = affine_grid(inverse, h, w, dev)
    if alpha == 0:
        return unit_to_uint8(bilinear_taps(src, *grid, w).reshape(n, ch, h, w))
    warped = spare_planes(n, ch, h, w, dev)
    bilinear_taps(src, *grid, w, out=warped[..., :k])
    out = bilinear_taps(warped, *displaced_grid(_displacements(rng, h, w, alpha, sigma)), w)
    return unit_to_uint8(out.reshape(n, ch, h, w))


@lru_cache(maxsize=64)
def _box_runs(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pillow's BOX reduction n_in -> n_out as runs: output pixel o is (S * w[o] + 2^21) >> 22, S the sum of the
    count[o] source pixels from start[o] on. BOX taps weigh 0 or 1 before normalisation, so each output's taps are
    one run of equal fixed-point weights (checked here on Pillow's own coefficients)."""
    idx, wts = _pil_box_taps(n_in, n_out)
    live = wts > 0
    count = live.sum(1)
    start = idx[np.arange(n_out), live.argmax(1)]
    w = wts.max(1)
    rank = np.arange(idx.shape[1]) - live.argmax(1)[:, None]  # tap position within the run
    assert (live == ((rank >= 0) & (rank < count[:, None]))).all(), (n_in, n_out)
    assert ((idx == start[:, None] + rank) & (wts == w[:, None]) | ~live).all(), (n_in, n_out)
    return start, count, w.astype(np.uint32)


@lru_cache(maxsize=4)
def _run_sum_index(rows: int, n_in: int, n_out: int, unit: int) -> np.ndarray:
    """Flat positions in the stack of running sums (`_box_reduce`) of each output value, (rows, n_out * unit)."""
    start, count, _ = _box_runs(n_in, n_out)
    line, total = n_in * unit, rows * n_in * unit
    sel = ((count - 1) * total + start * unit)[:, None] + np.arange(unit)
    return np.arange(rows)[:, None] * line + sel.reshape(-1)


def _box_reduce(v: np.ndarray, rows: int, n_in: int, n_out: int, unit: int) -> np.ndarray:
    """Pillow's 8-bit BOX resampling along one axis of uint8 data laid out as (rows, n_in, unit) (flat): returns
    (rows, n_out, unit) uint8, exactly Pillow's fixed-point result. The running sums of 1..k neighbours along the
    axis are whole-buffer shifted adds (uint16, contiguous: numpy's fastest loops; sums that run past a line's end
    are never read), and one gather picks each output's run."""
    start, count, w = _box_runs(n_in, n_out)
    k, total = int(count.max()), rows * n_in * unit
    sums = np.empty((k, total), np.uint16)
    sums[0] = v.reshape(-1)
    for j in range(1, k):  # sums[j][i] = v[i] + ... + v[i + j * unit]
        np.add(sums[j - 1, :total - j * unit], sums[0, j * unit:], out=sums[j, :total - j * unit])
    if unit < 16:  # a few bytes per value: one flat gather (numpy's per-chunk copies of 3 values cost ~5x)
        picked = np.take(sums.reshape(-1), _run_sum_index(rows, n_in, n_out, unit), mode="clip")
        weights = np.repeat(w, unit)  # per value: broadcasting over a 3-wide axis runs numpy's slow loops
    else:  # whole lines: a gather of rows
        src = ((count - 1) * rows * n_in)[None, :] + (np.arange(rows) * n_in)[:, None] + start[None, :]
        picked = np.take(sums.reshape(k * rows * n_in, unit), src.reshape(-1), axis=0, mode="clip")
        weights = w[:, None]
    acc = np.multiply(picked.reshape(rows, n_out, -1), weights.reshape(n_out, -1), dtype=np.uint32)  # < 2^30
    acc += 1 << 21
    return np.right_shift(acc, 22, out=np.empty(acc.shape, np.uint8), casting="unsafe")


def _pixelate_np(arr: np.ndarray, sh: int, sw: int, out: np.ndarray) -> None:
    """pixelate of (n, H, W, 3) uint8 images into `out`: Pillow's BOX reduction, horizontal pass then vertical
    (each rounded to 8 bits, as Pillow does), then the enlargement's gathers."""
    n, h, w, _ = arr.shape
    small = arr
    if sw != w:
        small = _box_reduce(small, n * h, w, sw, 3)
    if sh != h:
        small = _box_reduce(small, n, h, sh, sw * 3)
    rows, cols = pil_box_enlarge_source(sh, h), pil_box_enlarge_source(sw, w)
    # the columns as byte positions: fancy indexing of single bytes runs ~2.5x faster than np.take of 3-byte pixels
    byte_cols = (cols[:, None] * 3 + np.arange(3)).reshape(-1)
    wide = small.reshape(n * sh, sw * 3)[:, byte_cols].reshape(n, sh, w * 3)
    np.take(wide, rows, axis=1, out=out.reshape(n, h, w * 3), mode="clip")  # 'raise' would buffer `out`


# uint8 output of the whole batch at once, so the gathered pixels are the result (no copy); the reduction works
# through it in cache-sized groups of images
@register(group="common", deterministic=True, interleaved=True, chunk_pixels=1 << 20)
def pixelate(x: torch.Tensor, c: float, rng: ImageStreams) -> torch.Tensor:
    """PIL BOX resize to int(size * c), then BOX back to the original size (Pillow's fixed-point rounding).
    The reduction runs in numpy on the CPU (`_box_reduce`: exact; 1.2-1.5x faster than Pillow's own resampler
    called once per pass for a whole batch, at 224 and 32 px), elsewhere in the exact torch emulation
    `pil_box_resize`. The enlargement is a gather of whole pixels (`pil_box_enlarge_source`) on every device."""
    n, _, h, w = x.shape
    sh, sw = int(h * c), int(w * c)
    if x.device.type == "cpu":
        arr = to_hwc(x)
        out = native_digital.pixelate(from_hwc(arr), sh, sw, lambda: (
            _box_runs(w, sw) if sw != w else None, _box_runs(h, sh) if sh != h else None,
            pil_box_enlarge_source(sh, h), pil_box_enlarge_source(sw, w)))
        if out is not None:
            return out
        out = np.empty_like(arr)
        step = max(1, (1 << 17) // (h * w))  # ~2 images of 224 px: the uint16 sums stay in L2
        for a in range(0, n, step):
            _pixelate_np(arr[a:a + step], sh, sw, out[a:a + step])
        return from_hwc(out)
    rows, cols = pil_box_enlarge_source(sh, h), pil_box_enlarge_source(sw, w)
    small = pil_box_resize(x.to(torch.int32), sh, sw).to(torch.uint8)
    rows, cols = torch.from_numpy(rows).to(x.device), torch.from_numpy(cols).to(x.device)
    return small.index_select(-2, rows).index_select(-1, cols)


def _pil_jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    from PIL import Image

    arr = to_hwc(x.cpu())
    out = np.empty_like(arr)
    for i, img in enumerate(arr):
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, "JPEG", quality=quality)
        buf.seek(0)
        out[i] = np.asarray(Image.open(buf).convert("RGB"))
    return from_hwc(out)


# interleaved, as the codecs want it; one chunk for a usual batch, so the decoded stack is the output (no copy)
@register(group="common", deterministic=True, interleaved=True, chunk_pixels=1 << 20)
def jpeg_compression(x: torch.Tensor, c: int, rng: ImageStreams) -> torch.Tensor:
    """JPEG at quality c, decoded again: the reference's PIL `save('JPEG', quality=c)` (4:2:0, islow DCT).
    torchvision's libjpeg-turbo calls give the same bytes without a Python round trip per image (checked
    against PIL in the tests); PIL is the fallback where torchvision was built without JPEG support."""
    try:
        with warnings.catch_warnings():  # torchvision.io's codecs are deprecated in favour of torchcodec
            warnings.simplefilter("ignore", DeprecationWarning)
            from torchvision.io import decode_jpeg, encode_jpeg

            # the codecs work on interleaved pixels: hand them channels-last views, keep their output as it is
            hwc = torch.from_numpy(to_hwc(x.cpu()))
            decoded = decode_jpeg(encode_jpeg([img.permute(2, 0, 1) for img in hwc], quality=int(c)))
            out = torch.stack([img.permute(1, 2, 0) for img in decoded]).permute(0, 3, 1, 2)
    except (ImportError, AttributeError, RuntimeError):
        out = _pil_jpeg(x, int(c))
    return out.to(x.device)
