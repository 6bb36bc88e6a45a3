"""glass_blur, motion_blur and snow: the fast formulations against straightforward versions of the reference
(the pixel-by-pixel glass loop, per-image shift-and-add, the full-field snow layer), given the same draws."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage, stats

from qact_cli.corruptions import blur, filters, weather
from qact_cli.corruptions.base import gray, unit, unit_to_uint8
from qact_cli.corruptions.profiles import params
from qact_cli.corruptions.rng import ImageStreams


class Draws:
    """Stands in for ImageStreams with draws supplied by the test; records the shapes asked for."""

    def __init__(self, n, codes=None, normal=None, angles=None):
        self.device, self._n = torch.device("cpu"), n
        self._codes, self._normal, self._angles = codes, normal, angles
        self.asked = []

    def __len__(self):
        return self._n

    def randint(self, low, high, shape):
        self.asked.append(("randint", low, high, tuple(shape)))
        return self._codes

    def normal(self, shape, mean=0.0, std=1.0):
        self.asked.append(("normal", tuple(shape)))
        return self._normal(tuple(shape)) if callable(self._normal) else self._normal

    def scalar_uniform(self, low, high, k=1):
        return torch.as_tensor(self._angles, dtype=torch.float64).reshape(self._n, k)


def reference_glass_loop(img: np.ndarray, offs: np.ndarray, d: int) -> np.ndarray:
    """The reference's visiting loop on an (H, W, C) array, swap statement and all; offs (iters, nh, nw, 2)
    holds (dx, dy) in visiting order (rows and columns descending)."""
    x = img.copy()
    h, w = x.shape[:2]
    for it in range(offs.shape[0]):
        for a, hh in enumerate(range(h - d, d, -1)):
            for b, ww in enumerate(range(w - d, d, -1)):
                dx, dy = offs[it, a, b]
                x[hh, ww], x[hh + dy, ww + dx] = x[hh + dy, ww + dx], x[hh, ww]
    return x


def glass_draws(rs, n, h, w, d, iters):
    """Reference offsets (n, iters, nh, nw, 2) and the engine's codes for them (rows/columns ascending)."""
    offs = rs.randint(-d, d, size=(n, iters, h - 2 * d, w - 2 * d, 2))
    codes = (offs[..., 1] + d) * 2 * d + offs[..., 0] + d
    return offs, torch.from_numpy(codes[:, :, ::-1, ::-1].copy())


@pytest.mark.parametrize("h,w,d,iters,n", [(13, 11, 2, 3, 2), (16, 21, 1, 2, 3), (25, 19, 3, 2, 2), (30, 24, 4, 2, 2),
                                           (9, 9, 4, 1, 1), (40, 40, 2, 3, 2)])
def test_glass_map_is_the_reference_loop(h, w, d, iters, n):
    rs = np.random.RandomState(h * w + d)
    offs, codes = glass_draws(rs, n, h, w, d, iters)
    draws = Draws(n, codes=codes)
    src = blur._glass_shuffle_map(n, h, w, d, iters, draws)
    assert draws.asked == [("randint", 0, 4 * d * d, (iters, h - 2 * d, w - 2 * d))]
    assert src.dtype == torch.int32
    ids = np.arange(h * w).reshape(h, w, 1)
    for i in range(n):
        expected = reference_glass_loop(ids, offs[i], d)[..., 0].ravel()
        assert np.array_equal(src[i].numpy() - i * h * w, expected)


def test_glass_map_long_chains():
    """Every visit copies from its right neighbour: one chain runs the length of each row, far past the rounds
    that the doubling does without testing for convergence."""
    h, w, d, n = 12, 40, 2, 2
    offs = np.zeros((n, 1, h - 2 * d, w - 2 * d, 2), np.int64)
    offs[..., 0] = 1
    codes = (offs[..., 1] + d) * 2 * d + offs[..., 0] + d
    src = blur._glass_shuffle_map(n, h, w, d, 1, Draws(n, codes=torch.from_numpy(codes[:, :, ::-1, ::-1].copy())))
    ids = np.arange(h * w).reshape(h, w, 1)
    assert np.array_equal(src[1].numpy() - h * w, reference_glass_loop(ids, offs[1], d)[..., 0].ravel())
    assert src[0].view(h, w)[d + 1, d + 1] == (d + 1) * w + (w - d) + 1  # right of the row's last visited pixel


@pytest.mark.parametrize("profile,severity,size", [("imagenet", 3, (36, 30)), ("cifar", 4, (20, 23)),
                                                    ("tiny", 5, (24, 24))])
def test_glass_blur_is_the_uint8_formulation(profile, severity, size):
    """gaussian -> uint8 -> reference loop -> gaussian -> uint8, written out plainly."""
    sigma, d, iters = params(profile, "glass_blur", severity)
    n = 2
    rs = np.random.RandomState(severity)
    x = torch.from_numpy(rs.randint(0, 256, (n, 3, *size)).astype(np.uint8))
    offs, codes = glass_draws(rs, n, *size, d, iters)
    ours = blur.glass_blur(x, (sigma, d, iters), Draws(n, codes=codes))
    u8 = unit_to_uint8(filters.gaussian_filter(unit(x), sigma, "nearest"))
    for i in range(n):
        shuffled = reference_glass_loop(u8[i].permute(1, 2, 0).numpy(), offs[i], d)
        plain = torch.from_numpy(shuffled).permute(2, 0, 1)[None]
        expected = unit_to_uint8(filters.gaussian_filter(unit(plain), sigma, "nearest"))[0]
        assert torch.equal(ours[i], expected)


@pytest.mark.parametrize("d", [1, 2, 3])
def test_glass_codes_are_uniform_offset_pairs(d):
    codes = ImageStreams(0, "glass_blur", 3, 0, 4, torch.device("cpu")).randint(0, 4 * d * d, (1, 40, 40))
    counts = np.bincount(codes.numpy().ravel(), minlength=4 * d * d)
    assert len(counts) == 4 * d * d
    assert stats.chisquare(counts).pvalue > 1e-4
    dx, dy = codes % (2 * d) - d, codes // (2 * d) - d  # each uniform on [-d, d-1], independent
    assert int(dx.min()) == int(dy.min()) == -d and int(dx.max()) == int(dy.max()) == d - 1


def shift_and_add(img: np.ndarray, radius: int, sigma: float, angle: float) -> np.ndarray:
    """ImageMagick's taps on one (C, H, W) image: tap t reads the pixel ceil(t (sin, cos) - 0.5) away, replicated
    borders, one-sided Gaussian weights; taps from the first one that reaches the image size on are dropped."""
    c, h, w = img.shape
    k = np.exp(-np.arange(2 * radius + 1) ** 2 / (2 * sigma**2))
    k /= k.sum()
    a = math.radians(angle)
    yy, xx = np.mgrid[0:h, 0:w]
    out = np.zeros((c, h, w))
    for t in range(2 * radius + 1):
        dy, dx = math.ceil(t * math.sin(a) - 0.5), math.ceil(t * math.cos(a) - 0.5)
        if abs(dy) >= h or abs(dx) >= w:
            break
        out += k[t] * img[:, np.clip(yy + dy, 0, h - 1), np.clip(xx + dx, 0, w - 1)]
    return out


@pytest.mark.parametrize("radius,sigma,low,high,size", [(6, 2.0, -45, 45, (32, 32)), (12, 8.0, -135, -45, (20, 27)),
                                                        (20, 15.0, -180, 180, (16, 18)), (15, 8.0, -45, 45, (24, 100))])
def test_motion_blur_runs_match_per_image_blurs(radius, sigma, low, high, size):
    """A batch with repeated and near-equal angles (images share taps, so runs span several images), unsorted,
    narrow (side by side) and wide: every image equals the per-image oracle, and blurring it alone, bit for bit."""
    rs = np.random.RandomState(radius)
    n = 12
    angles = rs.uniform(low, high, n)
    angles[3] = angles[7] = angles[0]
    angles[5] = angles[1] + 1e-9
    img = rs.randint(0, 256, (n, 3, *size)).astype(np.uint8)
    ours = filters.motion_blur(torch.from_numpy(img), radius, sigma, torch.from_numpy(angles))
    assert ours.dtype == torch.float32 and ours.shape == (n, 3, *size)
    for i in range(n):
        assert np.abs(ours[i].numpy() - shift_and_add(img[i].astype(np.float64), radius, sigma, angles[i])).max() < 1e-3
        alone = filters.motion_blur(torch.from_numpy(img[i:i + 1]), radius, sigma, torch.from_numpy(angles[i:i + 1]))
        assert torch.equal(alone[0], ours[i])


@pytest.mark.parametrize("h,w,zoom", [(32, 32, 1.75), (224, 224, 4.0), (20, 37, 1.25), (33, 17, 3.0), (32, 32, 1.0)])
def test_snow_zoom_is_scipy_zoom_of_the_centre_crop(h, w, zoom):
    """The reference clipped_zoom: crop ceil(n/z) centred, scipy.ndimage.zoom(order=1), keep the centre."""
    rs = np.random.RandomState(h + w)
    ch, cw = math.ceil(h / zoom), math.ceil(w / zoom)
    crop = rs.normal(0.3, 0.3, (2, ch, cw)).astype(np.float32)
    ours = weather._zoom_crop(torch.from_numpy(crop), h, w, zoom).numpy()
    zoomed = np.stack([ndimage.zoom(p.astype(np.float64), zoom, order=1) for p in crop])
    top, left = (zoomed.shape[1] - h) // 2, (zoomed.shape[2] - w) // 2
    assert np.abs(ours - zoomed[:, top:top + h, left:left + w]).max() < 1e-6


def test_snow_draws_only_the_zoomed_crop():
    """Snow asks for the centre crop that clipped_zoom reads, then runs the reference pipeline on its zoom."""
    c = params("imagenet", "snow", 3)
    loc, scale, zoom, threshold, radius, sigma, blend = c
    n, h, w = 2, 40, 36
    rs = np.random.RandomState(5)
    x = torch.from_numpy(rs.randint(0, 256, (n, 3, h, w)).astype(np.uint8))
    ch, cw = math.ceil(h / zoom), math.ceil(w / zoom)
    crop = torch.from_numpy(rs.normal(loc, scale, (n, ch, cw)).astype(np.float32))
    angles = rs.uniform(-135, -45, n)
    draws = Draws(n, normal=crop.clone(), angles=angles)
    ours = weather.snow(x, c, draws)
    assert draws.asked == [("normal", (ch, cw))]
    layer = weather._zoom_crop(crop, h, w, zoom)
    layer = torch.where(layer < threshold, 0.0, layer)
    layer8 = (layer.clamp(0.0, 1.0) * 255.0).to(torch.uint8).to(torch.float32)
    blurred = filters.motion_blur(layer8[:, None], int(radius), float(sigma), torch.from_numpy(angles))
    layer = torch.floor(blurred).clamp_(0, 255) / 255.0  # ImageMagick's 8-bit read-back truncates
    v = unit(x)
    v = blend * v + (1 - blend) * torch.maximum(v, gray(v) * 1.5 + 0.5)
    assert torch.equal(ours, unit_to_uint8(v + layer + torch.flip(layer, dims=(-2, -1))))


def test_motion_blur_corruption_truncates_like_imagemagick():
    """The 8-bit read-back of ImageMagick 6.9 truncates: the corruption is floor() of the float blur, never
    its rounding (which measured 0.45-0.49 grey levels brighter than ImageMagick on average)."""
    c = params("imagenet", "motion_blur", 3)
    n, h, w = 3, 33, 29
    rs = np.random.RandomState(7)
    x = torch.from_numpy(rs.randint(0, 256, (n, 3, h, w)).astype(np.uint8))
    angles = rs.uniform(-45, 45, n)
    ours = blur.motion_blur(x, c, Draws(n, angles=angles))
    blurred = filters.motion_blur(x.float(), int(c[0]), float(c[1]), torch.from_numpy(angles))
    assert torch.equal(ours, torch.floor(blurred).clamp(0, 255).to(torch.uint8))
    frac = blurred - torch.floor(blurred)
    assert bool((frac >= 0.5).any())  # pixels where rounding would have given one level more


@pytest.mark.parametrize("sigma,mode,size", [(3.0, "nearest", (224, 224)), (2.0, "symmetric", (150, 97)),
                                              (1.5, "reflect101", (120, 130)), (3.0, "nearest", (20, 224))])
def test_gaussian_filter_banded_product(sigma, mode, size):
    """The banded products (blocks of outputs against the inputs they read, borders folded in) are scipy's
    gaussian_filter, and an image gets the same bytes alone as in a batch."""
    rs = np.random.RandomState(int(sigma * 10))
    x = torch.from_numpy(rs.rand(3, 3, *size).astype(np.float32))
    ours = filters.gaussian_filter(x, sigma, mode)
    scipy_mode = {"nearest": "nearest", "symmetric": "reflect", "reflect101": "mirror"}[mode]
    ref = ndimage.gaussian_filter(x.numpy().astype(np.float64), (0, 0, sigma, sigma), mode=scipy_mode, truncate=4.0)
    assert np.abs(ours.numpy() - ref).max() < 1e-6
    for i in range(3):
        assert torch.equal(filters.gaussian_filter(x[i:i + 1], sigma, mode)[0], ours[i])
