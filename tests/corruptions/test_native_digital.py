"""The native kernels of the colour / digital corruptions and fog (corruptions/native/digital.c) give exactly the
default path's bytes: natural photographs and edge-case pixels (black, grey, saturated), every severity, the
imagenet and cifar profiles, numpy (interleaved) and tensor (planar) batches, odd sizes, and several threads."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qact_cli import native
from qact_cli.corruptions import corrupt
from qact_cli.corruptions.native import digital as native_digital
from fixtures_images import natural

NAMES = ("brightness", "saturate", "contrast", "pixelate", "fog")

pytestmark = pytest.mark.skipif(not native_digital.available(), reason="no C compiler: the native kernels cannot build")


@pytest.fixture(autouse=True)
def _restore_kernel():
    yield
    native.set_kernel(None)


def _edge_cases(n: int, h: int, w: int) -> np.ndarray:
    """Random pixels with rows of black, white, grey (all channels equal) and one-channel-zero pixels."""
    rs = np.random.RandomState(h * w + n)
    a = rs.randint(0, 256, (n, h, w, 3)).astype(np.uint8)
    a[:, 0] = 0
    a[:, 1] = 255
    a[:, 2] = a[:, 2, :, :1]
    a[:, 3, :, 1] = 0
    return a


def _both(images, name: str, severity: int, profile: str, seed: int = 0):
    native.set_kernel("torch")
    want = corrupt(images, name, severity, profile=profile, seed=seed)
    native.set_kernel("native")
    got = corrupt(images, name, severity, profile=profile, seed=seed)
    return np.asarray(want), np.asarray(got)


CASES = [((224, 224), 1, "imagenet"), ((224, 224), 3, "imagenet"), ((32, 32), 1, "cifar"), ((32, 32), 17, "cifar"),
         ((37, 53), 3, "cifar"), ((97, 61), 2, "imagenet")]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("size,n,profile", CASES)
def test_native_equals_default(name, size, n, profile):
    for images in (natural(size, n, seed=n), _edge_cases(n, *size)):
        for severity in range(1, 6):
            for batch in (images, torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()):
                want, got = _both(batch, name, severity, profile)
                assert got.shape == want.shape and got.dtype == want.dtype
                assert np.array_equal(got, want), (name, size, n, severity, type(batch).__name__)


@pytest.mark.parametrize("name", NAMES)
def test_native_strided_and_grey_inputs(name):
    images = natural((48, 40), 5, seed=2)
    flipped = images[:, ::-1, :, ::-1]  # a non-contiguous numpy view
    planar = torch.from_numpy(images).permute(0, 3, 1, 2)  # a channels-last tensor, not contiguous
    grey = torch.from_numpy(images[..., 1].copy())[:, None]  # (N, 1, H, W): broadcast to three channels
    for batch in (flipped, planar, planar[:, :, ::2], grey, images[..., 0]):
        for severity in (2, 5):
            want, got = _both(batch, name, severity, "cifar")
            assert np.array_equal(got, want), (name, severity)


@pytest.mark.parametrize("name", NAMES)
def test_native_threads_give_the_same_bytes(name):
    images = natural((224, 224), 5, seed=4)
    threads = torch.get_num_threads()
    try:
        native.set_kernel("native")
        torch.set_num_threads(1)
        one = np.asarray(corrupt(images, name, 4, profile="imagenet"))
        torch.set_num_threads(3)
        several = np.asarray(corrupt(images, name, 4, profile="imagenet"))
    finally:
        torch.set_num_threads(threads)
    native.set_kernel("torch")
    assert np.array_equal(one, several)
    assert np.array_equal(one, np.asarray(corrupt(images, name, 4, profile="imagenet")))


def test_wrappers_decline_what_they_do_not_cover():
    x = torch.from_numpy(natural((32, 32), 2)).permute(0, 3, 1, 2).contiguous()
    native.set_kernel("torch")
    assert native_digital.contrast(x, 0.4) is None  # not selected
    native.set_kernel("native")
    assert native_digital.contrast(x[:, :, ::2], 0.4) is None  # strided
    assert native_digital.contrast(x.float(), 0.4) is None  # not uint8
    assert native_digital.contrast(x, 0.4) is not None
