"""spatter's water mask (corruptions/imgproc.py) against straightforward versions of the OpenCV steps it emulates,
and the exactness claims its fast formulations rest on."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from qact_cli.corruptions import imgproc, weather
from qact_cli.corruptions.filters import gaussian_filter
from qact_cli.corruptions.profiles import params
from qact_cli.corruptions.rng import ImageStreams

A, B, C = 65536, 91750, 143976  # the 5x5 chamfer weights in 16.16 fixed point


def chamfer_brute(zero: np.ndarray) -> np.ndarray:
    """min over zero pixels s of the chamfer norm of p - s, int64 16.16 (the cheapest path over the 5x5 moves)."""
    h, w = zero.shape
    ys, xs = np.nonzero(zero)
    yy, xx = np.mgrid[:h, :w]
    dy, dx = np.abs(yy[..., None] - ys), np.abs(xx[..., None] - xs)
    big, small = np.maximum(dy, dx), np.minimum(dy, dx)
    # up to 2 * small <= big: knight moves and straight ones; beyond: knight moves and diagonal ones
    norm = np.where(2 * small <= big, big * A + small * (C - 2 * A), big * (C - B) + small * (2 * B - C))
    return norm.min(-1)


def canny_reference(img: np.ndarray, low: int, high: int) -> np.ndarray:
    """cv2.Canny(img, low, high) for one image, written out: replicate-border 3x3 Sobel, L1 magnitude, OpenCV's
    fixed-point sectors and strict/non-strict comparisons, hysteresis as connected components (8-neighbourhood)
    of the local maxima that hold a strong one."""
    p = np.pad(img.astype(np.int64), 1, mode="edge")
    gx = (p[:-2, 2:] + 2 * p[1:-1, 2:] + p[2:, 2:]) - (p[:-2, :-2] + 2 * p[1:-1, :-2] + p[2:, :-2])
    gy = (p[2:, :-2] + 2 * p[2:, 1:-1] + p[2:, 2:]) - (p[:-2, :-2] + 2 * p[:-2, 1:-1] + p[:-2, 2:])
    mag = np.abs(gx) + np.abs(gy)
    mp = np.pad(mag, 1)
    h, w = mag.shape
    yy, xx = np.mgrid[:h, :w]
    tg22 = int(0.4142135623730950488016887242097 * (1 << 15) + 0.5)
    ax, ay = np.abs(gx), np.abs(gy) << 15
    horizontal = ay < ax * tg22
    vertical = ~horizontal & (ay > ax * tg22 + (ax << 16))
    s = np.where((gx ^ gy) < 0, -1, 1)
    keep_h = (mag > mp[yy + 1, xx]) & (mag >= mp[yy + 1, xx + 2])
    keep_v = (mag > mp[yy, xx + 1]) & (mag >= mp[yy + 2, xx + 1])
    keep_d = (mag > mp[yy, xx + 1 - s]) & (mag > mp[yy + 2, xx + 1 + s])
    local_max = (mag > low) & np.where(horizontal, keep_h, np.where(vertical, keep_v, keep_d))
    labels, _ = ndimage.label(local_max, structure=np.ones((3, 3)))
    strong = np.unique(labels[local_max & (mag > high)])
    return np.isin(labels, strong[strong > 0])


def test_sector_test_is_exact():
    """OpenCV's 15-bit sector tests equal 408 |gy| < 169 |gx| and 408 |gx| < 169 |gy| for every Sobel output."""
    ax = np.arange(1021)[:, None]
    ay = np.arange(1021)[None, :]
    p, q = imgproc._SECTOR_P, imgproc._SECTOR_Q
    assert np.array_equal((ay << 15) < ax * imgproc._TG22, p * ay < q * ax)
    assert np.array_equal((ay << 15) > ax * imgproc._TG67, p * ax < q * ay)


def test_distance_blur_level_formula_is_exact():
    """(float32 sum of 9 distances) * (1/9) in double, stored as float32, truncated == ((S >> 16) * 57) >> 9."""
    s = torch.arange(0, 9 * 20 * A + 1, dtype=torch.int64)
    reference = ((s.to(torch.float32) * (1.0 / 65536)).double() * (1.0 / 9.0)).to(torch.float32).to(torch.int64)
    assert torch.equal(reference, ((s >> 16) * 57) >> 9)


def test_small_weight_systems_keep_the_order():
    for weights in (imgproc._SMALL_ALL, imgproc._SMALL_HV_KNIGHT):  # asserts inside
        table = imgproc._small_weights_table(weights, torch.device("cpu"))
        assert int(table[-1]) == 20 * A


@pytest.mark.parametrize("shape,cap", [((3, 17, 40), 20), ((2, 73, 30), 20), ((2, 80, 75), 20), ((1, 1400, 9), 20),
                                       ((2, 33, 29), 5), ((2, 21, 18), None), ((2, 1, 12), 20)])
def test_chamfer_distance_matches_brute_force(shape, cap):
    rs = np.random.RandomState(sum(shape))
    n, h, w = shape
    zero = rs.rand(n, h, w) < np.array([0.002, 0.03, 0.3])[:n, None, None]
    zero[:, rs.randint(h), rs.randint(w)] = True
    ours = imgproc.chamfer_distance(torch.from_numpy(zero), cap=cap).numpy()
    for i in range(n):
        exact = chamfer_brute(zero[i])
        if cap is not None:
            exact = np.minimum(exact, cap * A)
        assert np.array_equal(ours[i], (exact.astype(np.float32) * np.float32(1 / 65536)))
    if cap is None:  # an image without zero pixels: OpenCV's "infinity", 8192 and more
        assert (imgproc.chamfer_distance(torch.zeros(1, h, w, dtype=torch.bool)) >= 8192).all()


def _test_images(rs: np.random.RandomState, n: int, h: int, w: int) -> np.ndarray:
    noise = rs.randint(0, 256, (n, h, w))
    blobs = (rs.rand(n, h, w) < 0.3) * rs.randint(150, 256, (n, h, w))
    blobs = ndimage.uniform_filter(blobs.astype(float), (0, 3, 3)).astype(np.int64)
    ramps = np.clip(np.cumsum(rs.randint(-30, 31, (n, h, w)), -1) + 128, 0, 255)
    return np.concatenate([noise, blobs, ramps])


@pytest.mark.parametrize("h,w", [(24, 24), (17, 40), (3, 5)])
def test_canny_matches_reference(h, w):
    imgs = _test_images(np.random.RandomState(h * w), 2, h, w)
    ours = imgproc.canny(torch.from_numpy(imgs), 50, 150).numpy()
    for img, edges in zip(imgs, ours):
        assert np.array_equal(edges, canny_reference(img, 50, 150))


def test_8bit_filters_match_reference():
    rs = np.random.RandomState(7)
    x = rs.randint(0, 256, (3, 19, 23))
    kernel = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]])
    t = torch.from_numpy(x)
    for i in range(3):  # reflect-101 is scipy's "mirror"
        assert np.array_equal(imgproc.emboss(t)[i].numpy(), np.clip(ndimage.correlate(x[i], kernel, mode="mirror"), 0, 255))
        assert np.array_equal(imgproc.box3_sum(t)[i].numpy(), ndimage.correlate(x[i], np.ones((3, 3), int), mode="mirror"))
    levels = rs.randint(0, 21, (3, 16, 16))
    levels[2] = 7  # a flat image stays as it is
    eq = imgproc.equalize_hist(torch.from_numpy(levels), 21).numpy()
    for i in range(3):
        hist = np.bincount(levels[i].ravel(), minlength=21)
        first = np.flatnonzero(hist)[0]
        cum = np.cumsum(hist) - np.cumsum(hist)[first]
        if hist[first] == levels[i].size:
            lut = np.full(21, first)
        else:  # OpenCV: float scale = 255.f / (total - hist[first])
            scale = np.float32(255) / np.float32(levels[i].size - hist[first])
            lut = np.clip(np.round(cum.astype(np.float32) * scale), 0, 255)
            lut[:first + 1] = 0
        assert np.array_equal(eq[i], lut[levels[i]])


@pytest.mark.parametrize("h,w", [(32, 32), (80, 75)])
def test_water_mask_is_the_chain_of_steps(h, w):
    """The fused mask equals the public steps run one after the other (both distance paths: up to 73 px all in
    int16, beyond straight and knight moves in int16)."""
    rs = np.random.RandomState(h)
    l8 = torch.from_numpy(_test_images(rs, 2, h, w)[2:4]).to(torch.uint8)  # blobs and ramps
    edges = imgproc.canny(l8, 50, 150)
    dist = imgproc.chamfer_distance(edges, cap=20)
    level = (imgproc.box3_sum(dist).double() * (1.0 / 9.0)).to(torch.float32).to(torch.int64)
    drops = imgproc.emboss(imgproc.equalize_hist(level, 21))
    expected = torch.round(imgproc.box3_sum(drops).to(torch.float32) * (1.0 / 9.0))
    assert torch.equal(imgproc.water_mask(l8), expected)


def test_liquid_threshold_and_wrap():
    """_liquid_u8 is where(liquid < t, 0, liquid) * 255 truncated and wrapped mod 256, at the float32 boundary."""
    t32 = np.float32(0.69)
    near = np.array([np.nextafter(t32, np.float32(0)), t32, np.nextafter(t32, np.float32(1))], np.float32)
    liquid = np.concatenate([near, np.float32([-0.5, 0.0, 0.5, 0.999, 1.0, 1.2, 2.5])]).reshape(1, 2, 5)
    x = torch.from_numpy(liquid)
    expected = torch.remainder(torch.trunc(torch.where(x < 0.69, 0.0, x) * 255.0).to(torch.int32), 256)
    assert torch.equal(weather._liquid_u8(x, 0.69).to(torch.int32), expected)
    cifar = params("cifar", "spatter", 3)
    liquid = gaussian_filter(ImageStreams(1, "spatter", 3, 0, 8, "cpu").normal((32, 32), mean=cifar[0], std=cifar[1]),
                             float(cifar[2]), "nearest")
    expected = torch.remainder(torch.trunc(torch.where(liquid < cifar[3], 0.0, liquid) * 255.0).to(torch.int32), 256)
    assert torch.equal(weather._liquid_u8(liquid, cifar[3]).to(torch.int32), expected)


def test_equalize_hist_scale_is_a_rounded_float32_quotient():
    """OpenCV divides once in float32 (255.f / d); 255 * (1 / d) differs in the last bit for some d, which moves
    a table entry where cum * scale sits at a rounding boundary: find such a case and check it."""
    total = 64 * 64
    for d in range(2, total):
        cum = np.arange(1, d)
        good = np.round(cum * (np.float32(255) / np.float32(d)))
        bad = np.round(cum * (np.float32(255) * (np.float32(1) / np.float32(d))))
        if (good != bad).any():
            k = int(cum[np.flatnonzero(good != bad)[0]])
            break
    img = np.full(total, 2)
    img[:total - d] = 0  # the first level holds total - d pixels, level 1 holds k, level 2 the rest
    img[total - d:total - d + k] = 1
    eq = imgproc.equalize_hist(torch.from_numpy(img.reshape(1, 64, 64)), 3).numpy().ravel()
    assert eq[total - d] == np.round(k * (np.float32(255) / np.float32(d)))

