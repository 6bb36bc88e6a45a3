"""Blur family: defocus_blur, glass_blur, motion_blur, zoom_blur, gaussian_blur (corruptions.md §1.1)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from .base import register, to_uint8, unit, unit_to_uint8
from .filters import _on, correlate2d, fold_index, gaussian_filter, motion_blur as _motion, zoom_blur_average
from .rng import ImageStreams


def _cv2_gaussian_kernel(ksize: int, sigma: float) -> np.ndarray:
    """cv2.getGaussianKernel(ksize, sigma, CV_32F): float32 taps normalised in float32."""
    x = np.arange(ksize) - (ksize - 1) * 0.5
    t = np.exp(-0.5 / (sigma * sigma) * x * x).astype(np.float32)
    return (t * np.float32(1.0 / float(t.astype(np.float64).sum()))).astype(np.float32)


@lru_cache(maxsize=32)
def disk_kernel(radius: float, alias_blur: float) -> np.ndarray:
    """The reference `disk()`: a normalised 0/1 disk (17x17 up to radius 8, else (2r+1)^2), anti-aliased
    by cv2.GaussianBlur (3x3, or 5x5 above radius 8; border reflect-101), all in float32."""
    if radius <= 8:
        grid, ksize = np.arange(-8, 8 + 1), 3
    else:
        grid, ksize = np.arange(-radius, radius + 1), 5
    xx, yy = np.meshgrid(grid, grid)
    disk = np.array(xx**2 + yy**2 <= radius**2, dtype=np.float32)
    disk /= np.sum(disk)
    g = _cv2_gaussian_kernel(ksize, alias_blur)
    r, n = ksize // 2, disk.shape[0]
    idx = fold_index(np.arange(-r, n + r), n, "reflect101")
    rows = sum(g[i] * disk[:, idx[i:i + n]] for i in range(ksize)).astype(np.float32)
    return sum(g[i] * rows[idx[i:i + n], :] for i in range(ksize)).astype(np.float32)


def _fft_size(n: int) -> int:
    """Smallest 2^a 3^b 5^c >= n (fast FFT lengths)."""
    m = n
    while True:
        k = m
        for p in (2, 3, 5):
            while k % p == 0:
                k //= p
        if k == 1:
            return m
        m += 1


def _correlate2d_fft(x: torch.Tensor, kernel: np.ndarray) -> torch.Tensor:
    """cv2.filter2D (correlation, reflect-101 borders) through the FFT: pad, multiply spectra, crop.
    Every image is transformed on its own, so batch composition cannot change a result."""
    r = kernel.shape[0] // 2
    h, w = x.shape[-2:]
    ph, pw = _fft_size(h + 2 * r), _fft_size(w + 2 * r)
    iy = torch.as_tensor(fold_index(np.arange(-r, ph - r), h, "reflect101"), device=x.device)
    ix = torch.as_tensor(fold_index(np.arange(-r, pw - r), w, "reflect101"), device=x.device)
    xp = x.index_select(-2, iy).index_select(-1, ix)

    def spectrum():
        k = np.zeros((ph, pw), dtype=np.float64)
        for (i, j), v in np.ndenumerate(kernel):
            k[(i - r) % ph, (j - r) % pw] = v
        return np.conj(np.fft.rfft2(k))

    spec = _on(("disk-fft", kernel.tobytes(), kernel.shape, ph, pw), spectrum, x.device, torch.complex64)
    out = torch.fft.irfft2(torch.fft.rfft2(xp) * spec, s=(ph, pw))
    return out[..., r:r + h, r:r + w]


@register
def defocus_blur(x: torch.Tensor, c, rng: ImageStreams) -> torch.Tensor:
    """Correlate each channel with the anti-aliased disk (cv2.filter2D, reflect-101 borders)."""
    kernel = disk_kernel(float(c[0]), float(c[1]))
    v = unit(x)
    nnz = int(np.count_nonzero(kernel))
    out = correlate2d(v, kernel, "reflect101") if nnz <= 49 else _correlate2d_fft(v, kernel)
    return unit_to_uint8(out)


def _glass_shuffle_map(n: int, h: int, w: int, d: int, iters: int, rng: ImageStreams) -> torch.Tensor:
    """Where each pixel's value comes from after the reference's local pixel "swaps".

    The reference visits h = H-d .. d+1 and w = W-d .. d+1 (descending) `iters` times and does
    `x[h, w], x[h', w'] = x[h', w'], x[h, w]` on numpy row views, which is a one-way copy x[h, w] <- x[h', w']
    with (dx, dy) = randint(-d, d, 2), i.e. offsets in [-d, d-1]. A pixel whose source was visited earlier in
    the same pass receives the source's *new* value: those chains are resolved by pointer jumping.
    Returns (n, h*w) flat source indices into the image before the first pass."""
    dev = rng.device
    nh, nw = h - 2 * d, w - 2 * d  # visited rows d+1 .. h-d, columns d+1 .. w-d
    ident = torch.arange(h * w, device=dev).expand(n, -1)
    if nh <= 0 or nw <= 0:
        return ident
    offs = rng.randint(-d, d, (iters, nh, nw, 2))  # [..., 0] = dx, [..., 1] = dy for rows/columns ascending
    rows = torch.arange(d + 1, h - d + 1, device=dev, dtype=torch.int32)[:, None]
    cols = torch.arange(d + 1, w - d + 1, device=dev, dtype=torch.int32)[None, :]
    own = (rows * w + cols).long()
    rect = (slice(None), slice(d + 1, h - d + 1), slice(d + 1, w - d + 1))
    total = ident
    for it in range(iters):
        sh, sw = rows + offs[:, it, ..., 1], cols + offs[:, it, ..., 0]
        src = (sh * w + sw).long()
        # visits run in descending raster order, so "visited earlier" = inside the visited block, later in raster order
        earlier = (sh >= d + 1) & (sh <= h - d) & (sw >= d + 1) & (sw <= w - d) & (src > own)
        nxt = ident.reshape(n, h, w).clone()
        nxt[rect] = torch.where(earlier, src, own)
        base = ident.reshape(n, h, w).clone()
        base[rect] = src
        nxt, base = nxt.reshape(n, -1), base.reshape(n, -1)
        while True:
            jumped = nxt.gather(1, nxt)
            if torch.equal(jumped, nxt):
                break
            nxt = jumped
        total = total.gather(1, base.gather(1, nxt))
    return total


@register
def glass_blur(x: torch.Tensor, c, rng: ImageStreams) -> torch.Tensor:
    """gaussian(sigma) -> uint8 (truncated) -> local pixel shuffling -> gaussian(sigma)."""
    sigma, d, iters = float(c[0]), int(c[1]), int(c[2])
    n, ch, h, w = x.shape
    u8 = unit_to_uint8(gaussian_filter(unit(x), sigma, "nearest"))
    src = _glass_shuffle_map(n, h, w, d, iters, rng)
    shuffled = u8.reshape(n, ch, h * w).gather(2, src[:, None, :].expand(n, ch, -1)).reshape(n, ch, h, w)
    return unit_to_uint8(gaussian_filter(unit(shuffled), sigma, "nearest"))


@register
def motion_blur(x: torch.Tensor, c, rng: ImageStreams) -> torch.Tensor:
    """ImageMagick MotionBlurImage(radius, sigma, angle ~ U(-45, 45)) on the 8-bit image; the reference
    reads ImageMagick's 8-bit PNG back, so the result is rounded, not truncated."""
    angle = rng.scalar_uniform(-45.0, 45.0)[:, 0]
    out = _motion(x.to(torch.float32), int(c[0]), float(c[1]), angle)
    return to_uint8(torch.floor(out + 0.5))


@register
def zoom_blur(x: torch.Tensor, c, rng: ImageStreams) -> torch.Tensor:
    """Average of the image and its centre zooms by each factor in c (clipped_zoom, bilinear)."""
    return unit_to_uint8(zoom_blur_average(unit(x), tuple(c)))


@register
def gaussian_blur(x: torch.Tensor, c, rng: ImageStreams) -> torch.Tensor:
    """skimage.filters.gaussian(sigma=c), mode 'nearest', truncate 4, per channel."""
    return unit_to_uint8(gaussian_filter(unit(x), float(c), "nearest"))
