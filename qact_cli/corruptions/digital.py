"""Digital family: contrast, saturate, elastic_transform, pixelate, jpeg_compression (Hendrycks' make_imagenet_c.py
and make_cifar_c.py, functions of the same names; docs/corruption-fidelity.md). Within each group the order of
definition is the benchmark's listing order."""

from __future__ import annotations

import io
import warnings

import numpy as np
import torch

from . import hsv
from .base import from_hwc, register, to_hwc, unit, unit_to_uint8
from .filters import gaussian_filter, pil_box_enlarge_source, pil_box_resize
from .rng import ImageStreams
from .warp import affine_grid, bilinear_taps, displaced_grid, spare_planes


@register(group="common", deterministic=True)
def contrast(x: torch.Tensor, c: float, rng: ImageStreams) -> torch.Tensor:
    """(x - m) * c + m with m the per-channel spatial mean."""
    v = unit(x)
    m = v.mean((2, 3), keepdim=True)
    return unit_to_uint8(v.sub_(m).mul_(c).add_(m))


@register(group="extra", deterministic=True)
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
    src = spare_planes(n, ch, h, w, dev)
    torch.div(x.reshape(n, ch, k), 255.0, out=src[..., :k])  # unit(x)
    grid = affine_grid(np.linalg.inv(full)[:, :2], h, w, dev)
    if alpha == 0:
        return unit_to_uint8(bilinear_taps(src, *grid, w).reshape(n, ch, h, w))
    warped = spare_planes(n, ch, h, w, dev)
    bilinear_taps(src, *grid, w, out=warped[..., :k])
    fields = torch.stack([rng.uniform((h, w), -1.0, 1.0), rng.uniform((h, w), -1.0, 1.0)], 1)  # dx, dy
    d = gaussian_filter(fields, float(sigma), "symmetric", truncate=3.0).mul_(alpha)
    out = bilinear_taps(warped, *displaced_grid(d), w)
    return unit_to_uint8(out.reshape(n, ch, h, w))


def _pil_box_reduce(arr: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Pillow's BOX resize of (N, H, W, 3) uint8 images to (out_h, out_w), in two Pillow calls for the batch.
    Pillow resamples horizontally, rounds to 8 bits, then resamples vertically, each pass on whole rows or
    columns alone: the images stacked vertically take the horizontal pass at once, side by side the vertical."""
    from PIL import Image

    n, h, w, _ = arr.shape
    tall = np.asarray(Image.fromarray(arr.reshape(n * h, w, 3)).resize((out_w, n * h), Image.BOX))
    wide = np.ascontiguousarray(tall.reshape(n, h, out_w, 3).transpose(1, 0, 2, 3)).reshape(h, n * out_w, 3)
    small = np.asarray(Image.fromarray(wide).resize((n * out_w, out_h), Image.BOX))
    return small.reshape(out_h, n, out_w, 3).transpose(1, 0, 2, 3)


# uint8 temporaries only: one chunk for a usual batch, so the gathered pixels are the output (no copy)
@register(group="common", deterministic=True, interleaved=True, chunk_pixels=1 << 20)
def pixelate(x: torch.Tensor, c: float, rng: ImageStreams) -> torch.Tensor:
    """PIL BOX resize to int(size * c), then BOX back to the original size (Pillow's fixed-point rounding).
    The reduction runs in Pillow itself on the CPU (its 8-bit resampler beats a batched emulation 1.4x at 32 px
    and 2x at 224 px; two calls per batch, `_pil_box_reduce`), elsewhere in the exact torch emulation
    `pil_box_resize`. The enlargement is a gather of whole pixels (`pil_box_enlarge_source`) on every device."""
    h, w = x.shape[-2:]
    sh, sw = int(h * c), int(w * c)
    rows, cols = pil_box_enlarge_source(sh, h), pil_box_enlarge_source(sw, w)
    if x.device.type == "cpu":
        small = _pil_box_reduce(to_hwc(x), sh, sw)
        # np.take is ~2x faster than [...] indexing; the gather of 3-byte pixels (columns) costs most, so it runs
        # on the small image, and whole rows are copied after
        return from_hwc(np.take(np.take(small, cols, 2), rows, 1))
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
