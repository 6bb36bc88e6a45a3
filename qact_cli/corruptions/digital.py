"""Digital family: contrast, saturate, elastic_transform, pixelate, jpeg_compression (Hendrycks' make_imagenet_c.py
and make_cifar_c.py, functions of the same names; docs/corruption-fidelity.md). Within each group the order of
definition is the benchmark's listing order."""

from __future__ import annotations

import io
import warnings

import numpy as np
import torch

from .base import from_hwc, register, to_hwc, unit, unit_to_uint8
from .filters import gaussian_filter, pil_box_resize
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
    tints them red: (V, V(1 - S'), V(1 - S')), as the reference does."""
    v = unit(x)
    val = v.amax(1, keepdim=True)
    delta = val - v.amin(1, keepdim=True)
    sat = torch.where(delta > 0, delta / val.clamp_min(1e-12), 0.0)
    new = (sat * c[0] + c[1]).clamp_(0.0, 1.0)
    # val - (val - v) * f, computed in place as (v - val) * f + val (the same floats: negation is exact)
    coloured = v.sub_(val).mul_(new * val / delta.clamp_min(1e-12)).add_(val)
    grey = delta <= 0  # there f is meaningless (0 * inf): grey pixels become (V, V(1 - S'), V(1 - S'))
    coloured[:, :1] = torch.where(grey, val, coloured[:, :1])
    coloured[:, 1:] = torch.where(grey, val * (1 - new), coloured[:, 1:])
    return unit_to_uint8(coloured)


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


@register(group="common", deterministic=True)
def pixelate(x: torch.Tensor, c: float, rng: ImageStreams) -> torch.Tensor:
    """PIL BOX resize to int(size * c), then BOX back to the original size (Pillow's fixed-point rounding).
    On the CPU Pillow itself runs, fed interleaved pixels (its 8-bit resampler beats the batched emulation
    1.4x at 32 px and 2x at 224 px); other devices use the exact torch emulation `pil_box_resize`."""
    h, w = x.shape[-2:]
    sh, sw = int(h * c), int(w * c)
    if x.device.type == "cpu":
        from PIL import Image

        arr = to_hwc(x)  # contiguous (N, H, W, 3): Pillow reads it without a copy
        out = np.empty_like(arr)
        for i, img in enumerate(arr):  # one C call pair per image: Pillow has no batched resize
            out[i] = np.asarray(Image.fromarray(img).resize((sw, sh), Image.BOX).resize((w, h), Image.BOX))
        return from_hwc(out)
    small = pil_box_resize(x.to(torch.int32), sh, sw)
    return pil_box_resize(small, h, w).to(torch.uint8)


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


@register(group="common", deterministic=True)
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
