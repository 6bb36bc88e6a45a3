"""The eight deterministic corruptions against straightforward numpy / scipy / scikit-image / PIL versions of
the reference formulas (Hendrycks' make_cifar_c.py / make_imagenet_c.py): within one grey level on at least
98% of the pixels."""

from __future__ import annotations

import io

import numpy as np
import torch
import pytest
from PIL import Image
from scipy import ndimage
from skimage import color, filters

from qact_cli.corruptions import corrupt
from qact_cli.corruptions.profiles import params
from fixtures_images import natural


def _u8(v: np.ndarray) -> np.ndarray:
    return np.uint8(np.clip(v, 0, 1) * 255)  # the reference truncates


def ref_contrast(img, c):
    x = img / 255.0
    m = x.mean(axis=(0, 1), keepdims=True)
    return _u8((x - m) * c + m)


def ref_brightness(img, c):
    hsv = color.rgb2hsv(img / 255.0)
    hsv[..., 2] = np.clip(hsv[..., 2] + c, 0, 1)
    return _u8(color.hsv2rgb(hsv))


def ref_saturate(img, c):
    hsv = color.rgb2hsv(img / 255.0)
    hsv[..., 1] = np.clip(hsv[..., 1] * c[0] + c[1], 0, 1)
    return _u8(color.hsv2rgb(hsv))


def ref_gaussian_blur(img, c):
    return _u8(filters.gaussian(img / 255.0, sigma=c, channel_axis=-1))


def ref_defocus_blur(img, c):
    radius, alias = c
    grid, ksize = (np.arange(-8, 9), 3) if radius <= 8 else (np.arange(-radius, radius + 1), 5)
    xx, yy = np.meshgrid(grid, grid)
    disk = (xx**2 + yy**2 <= radius**2).astype(np.float64)
    disk /= disk.sum()
    t = np.arange(ksize) - (ksize - 1) / 2  # cv2.getGaussianKernel(ksize, alias)
    g = np.exp(-t**2 / (2 * alias**2))
    g /= g.sum()
    kernel = ndimage.correlate1d(ndimage.correlate1d(disk, g, axis=0, mode="mirror"), g, axis=1, mode="mirror")
    x = img / 255.0  # cv2.filter2D per channel: correlation, BORDER_REFLECT_101 (= scipy "mirror")
    return _u8(np.stack([ndimage.correlate(x[..., ch], kernel, mode="mirror") for ch in range(3)], -1))


def ref_zoom_blur(img, c):
    x = (img / 255.0).astype(np.float32)
    h = x.shape[0]
    out = np.zeros_like(x)
    for z in c:
        ch = int(np.ceil(h / z))
        top = (h - ch) // 2
        zoomed = ndimage.zoom(x[top:top + ch, top:top + ch], (z, z, 1), order=1)
        trim = (zoomed.shape[0] - h) // 2
        out += zoomed[trim:trim + h, trim:trim + h]
    return _u8((x + out) / (len(c) + 1))


def ref_pixelate(img, c):
    h, w = img.shape[:2]
    small = Image.fromarray(img).resize((int(w * c), int(h * c)), Image.BOX)
    return np.asarray(small.resize((w, h), Image.BOX))


def ref_jpeg_compression(img, c):
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=c)
    return np.asarray(Image.open(buf).convert("RGB"))


REFS = {"contrast": ref_contrast, "brightness": ref_brightness, "saturate": ref_saturate,
        "gaussian_blur": ref_gaussian_blur, "defocus_blur": ref_defocus_blur, "zoom_blur": ref_zoom_blur,
        "pixelate": ref_pixelate, "jpeg_compression": ref_jpeg_compression}

CASES = ([("cifar", 32, s, 4) for s in range(1, 6)] + [("tiny", 64, s, 2) for s in (1, 3, 5)]
         + [("imagenet", 224, s, 1) for s in (2, 5)])


@pytest.mark.parametrize("name", sorted(REFS))
@pytest.mark.parametrize("profile,size,severity,count", CASES)
def test_matches_reference(name, profile, size, severity, count):
    x = natural((size, size), count, seed=severity)
    c = params(profile, name, severity)
    ref = np.stack([REFS[name](img, c) for img in x]).astype(int)
    diff = np.abs(corrupt(x, name, severity, profile=profile).astype(int) - ref)
    assert (diff <= 1).mean() >= 0.98, f"{(diff <= 1).mean():.4f} within 1, max {diff.max()}"
    assert (diff == 0).mean() >= 0.75  # a systematic one-level shift would fail here
    if name in ("pixelate", "jpeg_compression", "contrast"):
        assert diff.max() == 0  # integer pipelines (or plain float math): bit-exact


@pytest.mark.parametrize("size,c", [(32, 0.6), (64, 0.25), (224, 0.4), (37, 0.75)])
def test_box_resize_emulation_is_pillow(size, c):
    """pixelate's path for non-CPU devices (Pillow's BOX resampling in integer torch ops) is bit-exact."""
    from qact_cli.corruptions.filters import pil_box_resize

    x = natural((size, size + 3), 2, seed=1)
    t = torch.from_numpy(x).permute(0, 3, 1, 2).to(torch.int32)
    sh, sw = int(size * c), int((size + 3) * c)
    out = pil_box_resize(pil_box_resize(t, sh, sw), size, size + 3).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    ref = np.stack([np.asarray(Image.fromarray(img).resize((sw, sh), Image.BOX).resize((size + 3, size), Image.BOX))
                    for img in x])
    assert np.array_equal(out, ref)


@pytest.mark.parametrize("h,w", [(16, 16), (17, 23), (37, 41), (100, 31), (64, 64), (224, 300)])
def test_box_reduction_is_pillow(h, w):
    """pixelate's CPU reduction (numpy running sums, one gather per pass) is Pillow's BOX resize, horizontal
    pass then vertical, at every profile's factors, square or not. The reference is two one-axis Pillow calls:
    Pillow >= 13 picks the order of the passes itself when the image is not square (rounding differs by one
    level then); the reference generator's Pillow always resampled rows first."""
    from qact_cli.corruptions.digital import _box_reduce

    x = natural((h, w), 3, seed=h)
    for c in (0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.5, 0.4, 0.3, 0.25):
        sh, sw = int(h * c), int(w * c)
        ref = np.stack([np.asarray(Image.fromarray(np.asarray(Image.fromarray(img).resize((sw, h), Image.BOX)))
                                   .resize((sw, sh), Image.BOX)) for img in x])
        got = _box_reduce(_box_reduce(x, 3 * h, w, sw, 3), 3, h, sh, sw * 3).reshape(3, sh, sw, 3)
        assert np.array_equal(got, ref), c


@pytest.mark.parametrize("n_in", [3, 7, 13, 19, 22, 25, 38, 44, 67, 89, 112, 134, 157])
def test_box_enlargement_is_a_gather(n_in):
    """pixelate's enlargement: Pillow's BOX taps for an enlargement are one whole source pixel each."""
    from qact_cli.corruptions.filters import pil_box_enlarge_source

    rs = np.random.RandomState(n_in)
    for n_out in sorted({n_in + 1, 2 * n_in - 1, 2 * n_in + 1, 3 * n_in + 2, 32, 64, 224} - set(range(n_in + 1))):
        img = rs.randint(0, 256, (5, n_in, 3)).astype(np.uint8)
        ref = np.asarray(Image.fromarray(img).resize((n_out, 5), Image.BOX))
        assert np.array_equal(img[:, pil_box_enlarge_source(n_in, n_out)], ref), (n_in, n_out)


@pytest.mark.parametrize("name", ["brightness", "saturate"])
@pytest.mark.parametrize("profile,size", [("cifar", 32), ("tiny", 64), ("imagenet", 224)])
def test_hsv_extremes_match_reference(name, profile, size):
    """black, white, grey and pure primaries (HSV's special cases: V = 0, S = 0, hue sectors) at every severity."""
    x = natural((size, size), 2, seed=7)
    x[0, :4] = 0
    x[0, 4:8] = 255
    x[0, 8:12, :, 1:] = x[0, 8:12, :, :1]  # grey
    for ch in range(3):
        x[1, 4 * ch:4 * ch + 4] = 0
        x[1, 4 * ch:4 * ch + 4, :, ch] = np.arange(size, dtype=np.uint8) * (255 // size)
    for severity in range(1, 6):
        c = params(profile, name, severity)
        ref = np.stack([REFS[name](img, c) for img in x]).astype(int)
        diff = np.abs(corrupt(x, name, severity, profile=profile).astype(int) - ref)
        assert diff.max() <= 1 and (diff == 0).mean() >= 0.75, (severity, diff.max(), (diff == 0).mean())


@pytest.mark.parametrize("name", ["pixelate", "jpeg_compression", "brightness"])
def test_result_is_fresh_memory(name):
    """Corruptions on interleaved pixels may hand back their own result array: never the caller's images."""
    x = natural((32, 32), 3, seed=2)
    keep = x.copy()
    out = corrupt(x, name, 3, profile="cifar")
    assert not np.shares_memory(out, x) and np.array_equal(x, keep)
    same = corrupt(x, name, 0, profile="cifar")
    assert np.array_equal(same, x) and not np.shares_memory(same, x)
