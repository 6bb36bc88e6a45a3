"""The blur family's opt-in C kernels (QACT_KERNEL=native) against the default torch path: the same images
within +-1 grey level on every pixel (float sums in another order), at both profiles, several severities,
batches of 1 and odd sizes, non-contiguous input, and the same bytes whatever the number of threads."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qact_cli import native
from qact_cli.corruptions import corrupt, filters
from qact_cli.corruptions.base import unit, unit_to_uint8
from qact_cli.corruptions.blur import _glass_shuffle_map, disk_columns
from qact_cli.corruptions.profiles import TABLES
from qact_cli.corruptions.native import blur as native_blur
from tests.fixtures_images import natural

needs_compiler = pytest.mark.skipif(not native_blur.available(), reason="no C compiler: blur.c cannot be built")
pytestmark = needs_compiler

BLURS = ("gaussian_blur", "motion_blur", "defocus_blur", "glass_blur")
# the other corruptions whose smoothing runs through filters.gaussian_filter / filters.motion_blur
CALLERS = ("snow", "spatter", "elastic_transform")
PROFILES = (((224, 224), "imagenet"), ((32, 32), "cifar"))


@pytest.fixture
def kernel():
    """Select a kernel for the test; the process default comes back afterwards."""
    yield native.set_kernel
    native.set_kernel(None)


def _images(size, n, seed=0) -> torch.Tensor:
    return torch.from_numpy(natural(size, n, seed)).permute(0, 3, 1, 2).contiguous()


def _both(kernel, images, name, severity, profile):
    kernel("torch")
    want = torch.as_tensor(np.asarray(corrupt(images, name, severity, profile=profile, seed=3)))
    kernel("native")
    got = torch.as_tensor(np.asarray(corrupt(images, name, severity, profile=profile, seed=3)))
    return got, want


def _within_one(got, want):
    assert got.shape == want.shape and got.dtype == want.dtype == torch.uint8
    diff = (got.int() - want.int()).abs()
    assert int(diff.max()) <= 1, f"{int((diff > 1).sum())} values differ by more than 1 grey level"
    assert float((diff > 0).float().mean()) < 0.05  # rounding flips, not another filter


@pytest.mark.parametrize("size,profile", PROFILES)
@pytest.mark.parametrize("name", BLURS + CALLERS)
@pytest.mark.parametrize("severity", (1, 3, 5))
def test_native_matches_the_default_path(name, severity, size, profile, kernel):
    n = 3 if size[0] > 100 else 5
    _within_one(*_both(kernel, _images(size, n), name, severity, profile))


@pytest.mark.parametrize("name", BLURS)
def test_single_image_and_non_square(name, kernel):
    _within_one(*_both(kernel, _images((40, 57), 1, seed=2), name, 2, "cifar"))
    _within_one(*_both(kernel, _images((150, 131), 1, seed=4), name, 4, "imagenet"))


@pytest.mark.parametrize("name", BLURS)
def test_non_contiguous_input(name, kernel):
    base = _images((64, 48), 3, seed=1)
    channels_last = base.contiguous(memory_format=torch.channels_last)
    cropped = base[:, :, 5:61, 3:45]  # rows with gaps between them
    for x in (channels_last, cropped):
        assert not x.is_contiguous()
        _within_one(*_both(kernel, x, name, 3, "tiny"))
    kernel("native")  # a strided input gives the bytes of its contiguous copy
    a = torch.as_tensor(np.asarray(corrupt(cropped, name, 3, profile="tiny", seed=3)))
    b = torch.as_tensor(np.asarray(corrupt(cropped.contiguous(), name, 3, profile="tiny", seed=3)))
    assert torch.equal(a, b)


@pytest.mark.parametrize("name", BLURS + ("snow",))
def test_threads_give_the_same_bytes(name, kernel):
    images = _images((96, 96), 7, seed=5)
    kernel("native")
    before = torch.get_num_threads()
    outs = []
    try:
        for threads in (1, 3):
            torch.set_num_threads(threads)
            outs.append(torch.as_tensor(np.asarray(corrupt(images, name, 3, profile="tiny", seed=1))))
    finally:
        torch.set_num_threads(before)
    assert torch.equal(outs[0], outs[1])


@pytest.mark.parametrize("mode", ("nearest", "symmetric", "reflect101"))
@pytest.mark.parametrize("sigma,truncate,shape", [(3.0, 4.0, (2, 3, 50, 41)), (0.7, 4.0, (5, 9, 6)),
                                                  (6.0, 3.0, (1, 2, 13, 70)), (2.0, 4.0, (4, 1, 1))])
def test_gaussian_filter_floats(mode, sigma, truncate, shape, kernel):
    """filters.gaussian_filter itself: every border mode (folds reaching over the image too), any leading
    shape, float32 in and out, to float rounding of the torch path."""
    x = torch.rand(shape, generator=torch.Generator().manual_seed(0)) * 255
    kernel("torch")
    want = filters.gaussian_filter(x, sigma, mode, truncate)
    kernel("native")
    got = filters.gaussian_filter(x, sigma, mode, truncate)
    assert got.dtype == torch.float32 and got.shape == want.shape
    torch.testing.assert_close(got, want, atol=2e-3, rtol=1e-5)


@pytest.mark.parametrize("dtype", (torch.uint8, torch.float32))
@pytest.mark.parametrize("radius,sigma,size", [(15, 8.0, (40, 37)), (6, 2.0, (32, 32)), (12, 3.0, (5, 9))])
def test_motion_blur_floats(dtype, radius, sigma, size, kernel):
    """filters.motion_blur itself (snow hands it a float layer): any angle, taps that reach past small images."""
    g = torch.Generator().manual_seed(1)
    x = (torch.rand((6, 2, *size), generator=g) * 255).floor().to(dtype)
    angle = torch.rand(6, generator=g, dtype=torch.float64) * 360 - 180
    kernel("torch")
    want = filters.motion_blur(x, radius, sigma, angle)
    kernel("native")
    got = filters.motion_blur(x, radius, sigma, angle)
    assert got.dtype == want.dtype == torch.float32
    torch.testing.assert_close(got, want, atol=2e-3, rtol=1e-5)


def test_not_selected_or_not_applicable(kernel):
    """The wrappers step aside (None) where their kernel does not apply: the default path runs."""
    x = _images((32, 32), 2)
    kernel("torch")
    assert native_blur.gaussian_filter(x, (0.25, 0.5, 0.25), "nearest") is None
    kernel("native")
    assert native_blur.gaussian_filter(x.double(), (0.25, 0.5, 0.25), "nearest") is None
    assert native_blur.defocus_blur(x.float(), (0.1, 0.8), (0,), 1.0) is None
    assert native_blur.gaussian_filter(x, (0.25, 0.5, 0.25), "wrap") is None
    assert native_blur.gaussian_filter(x, (0.2, 0.5, 0.3), "nearest") is None  # not symmetric
    assert native_blur.gaussian_filter(x.float().requires_grad_(), (0.25, 0.5, 0.25), "nearest") is None


@pytest.mark.parametrize("sigma,size", [(1.0, (224, 224)), (0.4, (32, 32)), (1.5, (40, 57))])
def test_unit_entry_gives_the_float_entry_bytes(sigma, size, kernel):
    """glass_blur's 8-bit entry (unit=True) is exactly unit_to_uint8(gaussian_filter(unit(x))) with the native
    float filter, so native glass_blur gives the bytes of its float formulation."""
    kernel("native")
    x = _images(size, 3, seed=6)
    taps = filters.gaussian_weights(sigma)
    want = unit_to_uint8(filters.gaussian_filter(unit(x), sigma, "nearest"))
    got = native_blur.gaussian_filter(x, taps, "nearest", torch.uint8, unit=True)
    assert torch.equal(got, want)


class _Codes:
    """Stands in for ImageStreams: randint gives the test's codes."""

    def __init__(self, codes):
        self.device, self.codes = torch.device("cpu"), codes

    def __len__(self):
        return self.codes.shape[0]

    def randint(self, low, high, shape):
        assert low == 0 and tuple(shape) == tuple(self.codes.shape[1:])
        return self.codes


@pytest.mark.parametrize("n,c,h,w,d,iters", [(2, 3, 13, 11, 2, 3), (3, 3, 16, 21, 1, 2), (1, 3, 25, 19, 3, 2),
                                             (2, 3, 40, 33, 4, 1), (2, 1, 14, 15, 2, 2), (2, 5, 17, 12, 2, 2)])
def test_glass_shuffle_is_the_default_map(n, c, h, w, d, iters, kernel):
    """The C swap loop moves the same pixels as the default path's shuffle map (exact: integer moves), for 3
    channels (one word per pixel), fewer, and more (a plane at a time)."""
    g = torch.Generator().manual_seed(h * w + d)
    levels = torch.randint(0, 256, (n, c, h, w), generator=g, dtype=torch.uint8)
    codes = torch.randint(0, 4 * d * d, (n, iters, h - 2 * d, w - 2 * d), generator=g, dtype=torch.int32)
    src = _glass_shuffle_map(n, h, w, d, iters, _Codes(codes)).long()  # (n, h*w) into the batch's n*h*w pixels
    per_image = levels.permute(1, 0, 2, 3).reshape(c, n * h * w)
    want = per_image[:, src.view(-1)].view(c, n, h, w).permute(1, 0, 2, 3)
    got = native_blur.glass_shuffle(levels.clone(), codes, d)
    assert torch.equal(got, want)


def test_the_kernels_apply_to_what_the_corruptions_pass(kernel):
    """The wrappers take what the blur corruptions hand them (else the tests above would compare the default path
    with itself): scipy's Gaussian taps at every sigma of the tables, motion taps, severity 3's disks."""
    kernel("native")
    x = _images((32, 32), 2)
    for table in TABLES.values():
        for sigma in table["gaussian_blur"] + [g[0] for g in table["glass_blur"]]:
            taps = filters.gaussian_weights(float(sigma))
            assert native_blur.gaussian_filter(x, taps, "nearest", torch.uint8) is not None
        m = table["motion_blur"][2]
        angle = torch.tensor([-30.0, 12.5], dtype=torch.float64)
        assert native_blur.motion_blur(x, *filters.motion_taps(m[0], m[1], angle), out_dtype=torch.uint8) is not None
        columns = disk_columns(*(float(v) for v in table["defocus_blur"][2]))
        assert columns is not None and native_blur.defocus_blur(x, *columns) is not None
