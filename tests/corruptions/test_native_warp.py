"""The geometric family's opt-in C kernels (corruptions/native/warp.c) against the default torch path: the same
bytes for elastic_transform on natural images, both profiles, every severity, odd batch sizes and shapes,
non-contiguous input, several threads, and far-out folds. The native Gaussian filter (corruptions/native/blur.c,
within +-1 grey level of the torch filter, tested in test_native_blur.py) is kept off here, so that both sides
smooth with the same filter and the warp kernels' own bytes are compared."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qact_cli import native
from qact_cli.corruptions import corrupt, digital
from qact_cli.corruptions.native import blur as native_blur
from qact_cli.corruptions.native import warp as native_warp
from qact_cli.corruptions.rng import ImageStreams
from fixtures_images import natural

pytestmark = pytest.mark.skipif(native.library(native_warp.SOURCE, native_warp._SIGNATURES) is None,
                                reason="no C compiler: the native kernels cannot be built here")


@pytest.fixture(autouse=True)
def _torch_gaussian_filter(monkeypatch):
    monkeypatch.setattr(native_blur, "gaussian_filter", lambda *args, **kwargs: None)


def _both(fn):
    """fn() with the torch kernels, then with the native ones (the switch restored afterwards)."""
    try:
        native.set_kernel("torch")
        a = fn()
        native.set_kernel("native")
        b = fn()
    finally:
        native.set_kernel(None)
    return a, b


def _images(hw, n, seed=0):
    return torch.from_numpy(natural(hw, n, seed=seed)).permute(0, 3, 1, 2).contiguous()


@pytest.mark.parametrize("hw,profile,n", [((224, 224), "imagenet", 1), ((224, 224), "imagenet", 3),
                                          ((32, 32), "cifar", 5), ((32, 32), "cifar", 1), ((33, 45), "cifar", 3),
                                          ((64, 57), "tiny", 2)])
def test_elastic_same_bytes(hw, profile, n):
    x = _images(hw, n, seed=n)
    for severity in range(1, 6):
        a, b = _both(lambda: corrupt(x, "elastic_transform", severity, profile=profile, seed=7))
        assert torch.equal(a, b), (hw, profile, severity)


def test_elastic_non_contiguous_and_threads():
    x = _images((48, 40), 5, seed=2)
    strided = torch.from_numpy(natural((48, 40), 5, seed=2)).permute(0, 3, 1, 2)  # a channels-last view
    a, b = _both(lambda: corrupt(strided, "elastic_transform", 3, profile="cifar", seed=1))
    assert torch.equal(a, b)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(3)
        _, c = _both(lambda: corrupt(x, "elastic_transform", 3, profile="cifar", seed=1))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(a, c)


@pytest.mark.parametrize("c", [(0.0, 0.0, 70.0), (60.0, 0.5, 2.0), (18.0, 1.0, 1.0), (3.0, 2.0, 0.5)])
def test_elastic_far_outside_the_image(c):
    # jitter of several image sizes (the affine source folds more than once) and displacements of 1-2 image
    # sizes (the map_coordinates fold wraps whole periods): the C kernel's rare scalar folds
    x = _images((20, 24), 3, seed=5)
    for seed in range(3):
        def run():
            return digital.elastic_transform(x, c, ImageStreams(seed, "elastic_transform", 3, 0, 3, x.device))
        a, b = _both(run)
        assert torch.equal(a, b), (c, seed)


def test_elastic_wrapper_declines():
    x = _images((16, 16), 2)
    inv = np.tile(np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), (2, 1, 1))
    native.set_kernel("torch")
    try:
        assert native_warp.elastic(x, inv, None) is None  # not selected
        native.set_kernel("native")
        assert native_warp.elastic(x.float(), inv, None) is None  # not uint8
        assert torch.equal(native_warp.elastic(x, inv, None), x)  # the identity map
    finally:
        native.set_kernel(None)


@pytest.mark.parametrize("hwn", [(5, 7, 3), (32, 32, 16), (80, 61, 4), (224, 224, 2)])
def test_chamfer_same_integers(hwn):
    # both of the default path's small-weight regimes (<= 73 px, larger) and sparse to empty edge maps
    from qact_cli.corruptions import imgproc

    g = torch.Generator().manual_seed(sum(hwn))
    h, w, n = hwn
    density = torch.tensor([0.0, 0.002, 0.02, 0.3] * n)[:n]
    edges = ((torch.rand(h, w, n, generator=g) < density).to(torch.uint8) * 255)
    want = imgproc._chamfer_capped(edges.view(torch.int8).to(torch.int16), 20)[1:-1, 1:-1]
    native.set_kernel("native")
    try:
        got = native_warp.chamfer_capped(edges, 20)[1:-1, 1:-1]
    finally:
        native.set_kernel(None)
    assert torch.equal(got, want)


@pytest.mark.parametrize("hw,profile,n", [((224, 224), "imagenet", 3), ((32, 32), "cifar", 5), ((33, 45), "cifar", 1)])
def test_spatter_same_bytes(hw, profile, n):
    x = _images(hw, n, seed=n + 10)
    for severity in range(1, 6):
        a, b = _both(lambda: corrupt(x, "spatter", severity, profile=profile, seed=4))
        assert torch.equal(a, b), (hw, profile, severity)


def test_water_blend_same_bytes():
    # the default path's blend: addcmul (a fused multiply-add on the CPU), clamp, truncate
    from qact_cli.corruptions.base import truncate_u8

    g = torch.Generator().manual_seed(3)
    x = torch.randint(0, 256, (5, 3, 37, 41), dtype=torch.uint8, generator=g)
    m = torch.rand(5, 37, 41, generator=g) * 255 * 255
    factor = 0.6 / m.amax((1, 2), keepdim=True)
    color = torch.tensor([175.0, 238.0, 238.0]).view(1, 3, 1, 1)
    want = truncate_u8(torch.addcmul(x, (m * factor)[:, None], color).clamp_(0.0, 255.0))
    native.set_kernel("native")
    try:
        got = native_warp.water_blend(x, m, factor, (175.0, 238.0, 238.0))
    finally:
        native.set_kernel(None)
    assert torch.equal(got, want)
