"""Weather family: snow, frost, fog, brightness, spatter (Hendrycks' make_imagenet_c.py / make_cifar_c.py,
functions of the same names; docs/corruption-fidelity.md, "Per corruption")."""

from __future__ import annotations

import math
from functools import lru_cache
from importlib import resources

import numpy as np
import torch

from . import hsv, imgproc
from .base import gray, planar, register, to_uint8, truncate_u8, unit, unit_to_uint8
from .filters import gaussian_filter, motion_blur, zoom_axis, zoom_taps
from .native import digital as native_digital
from .native import warp as native_warp
from .rng import ImageStreams

FROST_FILES = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg", "frost6.jpg")
FROST_USED = 5  # the reference draws np.random.randint(5): frost6.jpg is never used


@lru_cache(maxsize=16)
def _zoom_lerp(n: int, zoom: float) -> tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One axis of clipped_zoom read from its centre crop: the crop size, and for every kept output pixel the
    two crop indices and their float32 weights."""
    size, start, _, _ = zoom_axis(n, zoom)
    i0, i1, frac = zoom_taps(n, zoom)
    return size, i0 - start, i1 - start, (1.0 - frac).astype(np.float32), frac.astype(np.float32)


def _zoom_crop(crop: torch.Tensor, h: int, w: int, zoom: float) -> torch.Tensor:
    """The reference clipped_zoom (scipy.ndimage.zoom, order 1: output o reads crop coordinate o*(ch-1)/(out-1))
    of an (H, W) field, from its centre crop (N, ch, cw) alone: linear interpolation along rows, then along
    columns. Plain elementwise products and sums, so no image's values depend on its batch. Each pass reads
    along dim 1 (a row gather is a fast slice copy, a column gather is not) and hands on its transpose."""
    out, dev = crop, crop.device
    for n in (h, w):
        i0, i1, w0, w1 = (torch.as_tensor(v, device=dev) for v in _zoom_lerp(n, float(zoom))[1:])
        out = out.index_select(1, i0).mul_(w0[:, None]).add_(out.index_select(1, i1).mul_(w1[:, None]))
        out = out.transpose(1, 2)
    return out


# larger batches pay: the one-channel snow layer
@register(group="common", chunk_pixels=1 << 19)
def snow(x: torch.Tensor, c, rng: ImageStreams) -> torch.Tensor:
    """A zoomed, thresholded Gaussian snow layer, motion-blurred by ImageMagick at an angle in (-135, -45),
    added twice (as is and rotated 180 degrees) to the image brightened toward its grey level."""
    loc, scale, zoom, threshold, radius, sigma, blend = c
    n, _, h, w = x.shape
    # clipped_zoom reads only the centre crop of the (H, W) normal field: draw just that crop (the same i.i.d.
    # values where they are used; 16x fewer draws at zoom 4)
    ch, cw = _zoom_lerp(h, float(zoom))[0], _zoom_lerp(w, float(zoom))[0]
    layer = _zoom_crop(rng.normal((ch, cw), mean=loc, std=scale), h, w, zoom)
    # the reference hands ImageMagick an 8-bit PNG (truncated) and reads an 8-bit PNG back, also truncated
    # (ImageMagick 6.9 via Wand; rounding here made snow 0.11-0.29 grey levels too bright)
    layer8 = layer.masked_fill_(layer < threshold, 0.0).clamp_(0.0, 1.0).mul_(255.0).floor_()
    angle = rng.scalar_uniform(-135.0, -45.0)[:, 0]
    layer = motion_blur(layer8[:, None], int(radius), float(sigma), angle).floor_().clamp_(0, 255).div_(255.0)
    v = unit(x)
    bright = torch.maximum(v, gray(v).mul_(1.5).add_(0.5)).mul_(1 - blend)
    v.mul_(blend).add_(bright)  # blend * v + (1 - blend) * max(v, 1.5 gray + 0.5), in place
    v.add_(layer).add_(torch.flip(layer, dims=(-2, -1)))
    return truncate_u8(v.clamp_(0.0, 1.0).mul_(255.0))  # unit_to_uint8 in place: fresh buffers cost page faults


def _resize_linear(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """cv2.resize(INTER_LINEAR) of an (H, W, 3) uint8 array: half-pixel centres, no anti-aliasing, edge clamp,
    rounded to 8 bits."""
    def axis(n_in, n_out):
        pos = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
        pos = np.clip(pos, 0, n_in - 1)
        i0 = np.floor(pos).astype(np.int64)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, (pos - i0)

    (a0, a1, fa), (b0, b1, fb) = axis(img.shape[0], out_h), axis(img.shape[1], out_w)
    f = img.astype(np.float64)
    rows = f[a0] * (1 - fa)[:, None, None] + f[a1] * fa[:, None, None]
    out = rows[:, b0] * (1 - fb)[None, :, None] + rows[:, b1] * fb[None, :, None]
    return np.clip(np.floor(out + 0.5), 0, 255).astype(np.uint8)


@lru_cache(maxsize=1)
def frost_images() -> tuple[np.ndarray, ...]:
    """The six frost textures as RGB uint8 (H, W, 3) arrays (cv2.imread + BGR->RGB in the reference)."""
    from PIL import Image

    folder = resources.files(__package__) / "assets" / "frost"
    out = []
    for name in FROST_FILES:
        with (folder / name).open("rb") as f:
            out.append(np.asarray(Image.open(f).convert("RGB")))
    return tuple(out)


@lru_cache(maxsize=16)
def _frost_bank(scale: float, h: int, w: int) -> tuple[torch.Tensor, ...]:
    """The five used textures as (3, th, tw) uint8 tensors, resized by the profile's scale (as the reference's
    cv2.resize(fx=fy=scale)) and enlarged further only if the image would not fit with room for a random crop."""
    out = []
    for img in frost_images()[:FROST_USED]:
        fh, fw = img.shape[:2]
        th, tw = int(round(fh * scale)), int(round(fw * scale))
        if th <= h or tw <= w:  # image larger than the texture: zoom the texture just enough (not in the reference)
            s = max((h + 1) / fh, (w + 1) / fw, scale)
            th, tw = max(int(math.ceil(fh * s)), h + 1), max(int(math.ceil(fw * s)), w + 1)
        if (th, tw) != (fh, fw):
            img = _resize_linear(img, th, tw)
        out.append(torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))))
    return tuple(out)


@register(group="common")
def frost(x: torch.Tensor, c, rng: ImageStreams) -> torch.Tensor:
    """clip(a * x + b * crop) with a random crop of one of the first five frost textures; c = (a, b, the
    profile's texture scale)."""
    a, b, scale = c
    n, _, h, w = x.shape
    bank = _frost_bank(float(scale), h, w)
    k = rng.scalar_randint(FROST_USED).tolist()
    top = rng.scalar_randint(torch.tensor([bank[i].shape[1] - h for i in k])).tolist()
    left = rng.scalar_randint(torch.tensor([bank[i].shape[2] - w for i in k])).tolist()
    # one rectangular slice per image: row copies, several times cheaper than a per-pixel gather
    crops = torch.stack([bank[i][:, t:t + h, l:l + w] for i, t, l in zip(k, top, left)]).to(x.device)
    return to_uint8(x.to(torch.float32).mul_(a).add_(crops.to(torch.float32).mul_(b)))


def _wrap_sum(a: torch.Tensor, shift: int, dim: int) -> torch.Tensor:
    """a + torch.roll(a, shift, dim) for shift +-1, without the rolled copy."""
    n = a.shape[dim]
    out = torch.empty_like(a)
    if shift < 0:
        torch.add(a.narrow(dim, 0, n - 1), a.narrow(dim, 1, n - 1), out=out.narrow(dim, 0, n - 1))
        torch.add(a.narrow(dim, n - 1, 1), a.narrow(dim, 0, 1), out=out.narrow(dim, n - 1, 1))
    else:
        torch.add(a.narrow(dim, 1, n - 1), a.narrow(dim, 0, n - 1), out=out.narrow(dim, 1, n - 1))
        torch.add(a.narrow(dim, 0, 1), a.narrow(dim, n - 1, 1), out=out.narrow(dim, 0, 1))
    return out


def _plasma_levels(mapsize: int) -> tuple[list[int], list[int]]:
    """The fractal's steps (mapsize, mapsize / 2, .., 2) and each level's number of draws (3 k^2, k = mapsize /
    step)."""
    steps = []
    s = mapsize
    while s >= 2:
        steps.append(s)
        s //= 2
    return steps, [3 * (mapsize // s) ** 2 for s in steps]


def _plasma_scales(levels: int, wibbledecay: float) -> np.ndarray:
    """Each level's noise factor wibble^2 as the float32 that torch's mul_ multiplies by (the native kernel's),
    wibble divided level by level as plasma_fractal does (the same doubles)."""
    scales, wibble = [], 100.0
    for _ in range(levels):
        scales.append(wibble * wibble)
        wibble /= wibbledecay
    return np.array(scales, dtype=np.float32)


def plasma_fractal(rng: ImageStreams, mapsize: int, wibbledecay: float) -> torch.Tensor:
    """The reference diamond-square height map (N, mapsize, mapsize) in [0, 1], batched over images.
    Each level's noise is wibble * U(-wibble, wibble), the wibble shrinking by `wibbledecay` per level.

    The reference fills a full-size map in place through strided views (every `step`-th row and column). Here
    each level works on the dense grid of the points it has so far, G (k x k, the map at multiples of step): the
    square centres D, the points between grid columns L and between grid rows T are computed as k x k arrays
    (the reference's wrap-around rolls become rolls of the grid), and the next grid (2k x 2k) interleaves G, L,
    T and D. The same sums in the same order as the reference, on contiguous arrays."""
    n = len(rng)
    steps, counts = _plasma_levels(mapsize)
    noise = rng.uniform((sum(counts),), -1.0, 1.0)  # one draw per image, split by level below
    g = torch.zeros(n, 1, 1, device=noise.device, dtype=torch.float32)
    wibble, pos = 100.0, 0
    for s, cnt in zip(steps, counts):
        k = mapsize // s
        parts = noise[:, pos:pos + cnt].reshape(n, 3, k, k).mul_(wibble * wibble)
        pos += cnt
        g_rows = _wrap_sum(g, -1, 1)  # the reference's cornerref + roll(cornerref, -1, 0), also its tulsum
        d = parts[:, 0].add_(_wrap_sum(g_rows, -1, 2), alpha=0.25)  # the square centres (the reference's drgrid)
        left = parts[:, 1].add_(_wrap_sum(d, 1, 1).add_(_wrap_sum(g, -1, 2)), alpha=0.25)
        top = parts[:, 2].add_(_wrap_sum(d, 1, 2).add_(g_rows), alpha=0.25)
        # rows 2i hold G and L alternately, rows 2i + 1 hold T and D; a complex tensor's (real, imaginary) pairs
        # interleave two arrays ~8x faster than torch.stack on the last dimension
        even, odd = (torch.view_as_real(torch.complex(a, b)).view(n, k, 2 * k) for a, b in ((g, left), (top, d)))
        g = torch.stack([even, odd], 2).view(n, 2 * k, 2 * k)
        wibble /= wibbledecay
    g -= g.amin((1, 2), keepdim=True)
    return g.div_(g.amax((1, 2), keepdim=True))


# larger batches: the fractal's levels are per-call work; interleaved: the native kernel reads a numpy batch's
# pixels as they are
@register(group="common", chunk_pixels=1 << 19, interleaved=True)
def fog(x: torch.Tensor, c, rng: ImageStreams) -> torch.Tensor:
    """x + strength * plasma fractal, rescaled by max / (max + strength). The fractal's size is the next
    power of two of the image's longer side (32 / 64 / 256 for the three reference sizes). On the 0..255 scale
    the whole corruption is x * a + fractal * (255 strength a) per image, a = max / (max + strength): two passes
    over the image and the reference's clip and truncation."""
    n, _, h, w = x.shape
    mapsize = 1 << max(1, math.ceil(math.log2(max(h, w))))
    strength = float(c[0])
    peak = x.amax((1, 2, 3), keepdim=True).to(torch.float32).div_(255.0)
    a = peak / (peak + strength)
    steps, counts = _plasma_levels(mapsize)
    out = native_digital.fog(x, lambda: rng.uniform((sum(counts),), -1.0, 1.0), mapsize,
                             _plasma_scales(len(steps), float(c[1])), a, a * (255.0 * strength))
    if out is not None:
        return out
    x = planar(x)
    layer = plasma_fractal(rng, mapsize, float(c[1]))[:, None, :h, :w] * (a * (255.0 * strength))
    return to_uint8(torch.mul(x, a).add_(layer))


# interleaved: the native kernel reads a numpy batch's pixels as they are (hsv.brightness); one chunk for a usual
# batch, so its output is the result (no copy; the default path's speed does not depend on the chunk here)
@register(group="common", deterministic=True, interleaved=True, chunk_pixels=1 << 20)
def brightness(x: torch.Tensor, c: float, rng: ImageStreams) -> torch.Tensor:
    """HSV value + c (skimage rgb2hsv / hsv2rgb). With hue and saturation fixed, hsv2rgb scales all three
    channels by V'/V, so the round trip reduces to that factor; black (V = 0) becomes grey V'. The factor per
    max-channel value comes from a table (hsv.py)."""
    return hsv.brightness(x, float(c))


def _liquid_u8(liquid: torch.Tensor, threshold: float) -> torch.Tensor:
    """(where(liquid < threshold, 0, liquid) * 255).astype(np.uint8): truncation without a clip, and values past
    255 wrap like numpy's float->uint8 cast on x86 (rare: only where the smoothed noise exceeds 1). The threshold
    test is an integer mask from the sign of a float32 difference: a bool comparison and a select cost ~10x
    these integer ops on the CPU."""
    # keep where liquid >= threshold (float32), i.e. liquid > the float32 just below it: the sign bit of the
    # exactly signed difference, as -1/0
    below = float(np.nextafter(np.float32(threshold), np.float32(0)))
    keep = (below - liquid).view(torch.int32).clamp_(-1, 0)
    return ((liquid * 255.0).to(torch.int32) & keep).to(torch.uint8)  # the uint8 cast wraps like numpy's


# larger batches: many small passes per call
@register(group="extra", chunk_pixels=1 << 19)
def spatter(x: torch.Tensor, c, rng: ImageStreams) -> torch.Tensor:
    """Water drops (mode 0: embossed Canny/distance-transform mask, pale turquoise) or mud (mode 1: smoothed
    blobs, brown) from a thresholded, smoothed Gaussian liquid layer."""
    loc, scale, sigma, threshold, intensity, mode = c
    n, _, h, w = x.shape
    liquid = gaussian_filter(rng.normal((h, w), mean=loc, std=scale), float(sigma), "nearest")
    if mode == 0:
        l8 = _liquid_u8(liquid, threshold)
        m = imgproc.water_mask(l8).mul_(l8)  # float32: the liquid layer times the mask
        peak = m.amax((1, 2), keepdim=True)
        # the reference divides 0 by 0 when no liquid survives (NaN -> black); here the image stays clean
        # (m >= 0, so a zero peak means m == 0 everywhere and m / 1e-30 stays 0)
        factor = intensity / peak.clamp_min(1e-30)
        out = native_warp.water_blend(x, m, factor, (175.0, 238.0, 238.0))
        if out is not None:
            return out
        m.mul_(factor)
        # on the 0..255 scale: x + m * (175, 238, 238), one pass over the image (uint8 x read as it is added)
        color = torch.tensor([175.0, 238.0, 238.0], device=x.device).view(1, 3, 1, 1)
        return truncate_u8(torch.addcmul(x, m[:, None], color).clamp_(0.0, 255.0))
    v = unit(x)
    m = (liquid > threshold).to(torch.float32)  # thresholding to 0 first changes nothing here (threshold > 0)
    m = gaussian_filter(m, float(intensity), "nearest")
    m = torch.where(m < 0.8, 0.0, m)[:, None]
    color = torch.tensor([63 / 255.0, 42 / 255.0, 20 / 255.0], device=x.device).view(1, 3, 1, 1)
    return unit_to_uint8(v * (1 - m) + color * m)
