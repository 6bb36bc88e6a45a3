"""elastic_transform's samplers (corruptions/warp.py) against the straightforward formulation they replace:
float64 coordinates for every pixel, rounded to OpenCV's 1/32 grid, folded with remainder/where, four clamped taps
blended with torch.lerp. The fast path must give the same bytes (it only changes how the same numbers are found)."""

import numpy as np
import pytest
import torch

from qact_cli.corruptions import digital, warp
from qact_cli.corruptions.base import unit, unit_to_uint8
from qact_cli.corruptions.filters import gaussian_filter
from qact_cli.corruptions.profiles import PROFILES, params
from qact_cli.corruptions.rng import ImageStreams


def fold_plain(c, n, mode):
    """Float coordinates folded into [0, n-1]: reflect-101 about the edge pixels, or scipy 'reflect' about the
    image edges and then clamped to the outer pixel centres."""
    if n == 1:
        return torch.zeros_like(c)
    if mode == "reflect101":
        c = torch.remainder(c, 2.0 * (n - 1))
        return torch.where(c > n - 1, 2.0 * (n - 1) - c, c)
    c = torch.remainder(c + 0.5, 2.0 * n) - 0.5
    return torch.where(c > n - 0.5, 2.0 * n - 1.0 - c, c).clamp_(0.0, n - 1.0)


def sample_plain(img, ys, xs, mode):
    n, c, h, w = img.shape
    ys, xs = fold_plain(ys, h, mode), fold_plain(xs, w, mode)
    y0f, x0f = torch.floor(ys), torch.floor(xs)
    fy, fx = (ys - y0f).reshape(n, 1, -1), (xs - x0f).reshape(n, 1, -1)
    y0, x0 = y0f.long(), x0f.long()
    r0, r1, x1 = y0 * w, (y0 + 1).clamp(max=h - 1) * w, (x0 + 1).clamp(max=w - 1)
    planes = img.reshape(n, c, h * w)

    def tap(idx):
        return planes.gather(2, idx.reshape(n, 1, -1).expand(n, c, -1))

    top, bottom = torch.lerp(tap(r0 + x0), tap(r0 + x1), fx), torch.lerp(tap(r1 + x0), tap(r1 + x1), fx)
    return torch.lerp(top, bottom, fy).reshape(n, c, h, w)


def elastic_plain(x, c, rng):
    alpha, sigma, shift = c
    n, _, h, w = x.shape
    cx, cy, sq = w // 2, h // 2, min(h, w) // 3
    pts1 = np.array([[cx + sq, cy + sq], [cx + sq, cy - sq], [cx - sq, cy - sq]], dtype=np.float32)
    pts2 = pts1[None] + rng.scalar_uniform(-shift, shift, 6).numpy().reshape(n, 3, 2).astype(np.float32)
    src = np.concatenate([np.broadcast_to(pts1, pts2.shape), np.ones((n, 3, 1))], -1)
    m = np.linalg.solve(src, pts2.astype(np.float64)).transpose(0, 2, 1)
    inv = torch.as_tensor(np.linalg.inv(np.concatenate([m, np.tile([[[0.0, 0, 1]]], (n, 1, 1))], 1))[:, :2])
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    sx = inv[:, 0, 0, None, None] * xx + inv[:, 0, 1, None, None] * yy + inv[:, 0, 2, None, None]
    sy = inv[:, 1, 0, None, None] * xx + inv[:, 1, 1, None, None] * yy + inv[:, 1, 2, None, None]
    sx, sy = (torch.floor(sx * 32 + 0.5) / 32).float(), (torch.floor(sy * 32 + 0.5) / 32).float()
    v = sample_plain(unit(x), sy, sx, "reflect101")
    if alpha != 0:
        dx = gaussian_filter(rng.uniform((h, w), -1.0, 1.0), float(sigma), "symmetric", truncate=3.0) * alpha
        dy = gaussian_filter(rng.uniform((h, w), -1.0, 1.0), float(sigma), "symmetric", truncate=3.0) * alpha
        v = sample_plain(v, yy.float() + dy, xx.float() + dx, "symmetric")
    return unit_to_uint8(v)


def _images(n, h, w, seed):
    rs = np.random.RandomState(seed)
    smooth = np.cumsum(np.cumsum(rs.randint(-9, 10, (n, 3, h, w)), 2), 3)  # flat areas and edges, like photos
    return torch.from_numpy((smooth % 256).astype(np.uint8))


def _same(c, shape, seed, n=2):
    x = _images(n, *shape, seed)
    streams = lambda: ImageStreams(seed, "elastic_transform", 3, 0, n, torch.device("cpu"))  # noqa: E731
    ours, plain = digital.elastic_transform(x, c, streams()), elastic_plain(x, c, streams())
    assert torch.equal(ours, plain), f"{int((ours != plain).sum())} values differ for c={c}, shape={shape}"


@pytest.mark.parametrize("profile", PROFILES)
def test_same_bytes_as_plain_formulation(profile):
    for severity in range(1, 6):
        c = params(profile, "elastic_transform", severity)
        for seed, shape in enumerate([(17, 40), (32, 32), (45, 23)]):
            _same(c, shape, seed)


def test_same_bytes_large_and_non_square():
    for severity in (1, 3, 5):
        _same(params("imagenet", "elastic_transform", severity), (150, 100), severity, n=1)


def test_same_bytes_far_outside_the_image():
    # jitter of several image sizes: the affine source folds more than once (remainder path); displacements of
    # 1-2 image sizes: the map_coordinates fold wraps whole periods; moderate ones take the one-period path
    for c in [(0.0, 0.0, 70.0), (60.0, 0.5, 2.0), (18.0, 1.0, 1.0), (3.0, 2.0, 0.5)]:
        for seed in range(3):
            _same(c, (20, 24), seed)


def test_reflect101_fold_matches_float_fold():
    for size in (1, 2, 16, 37):
        edge = 32 * (size - 1)
        for lo, hi in [(0, edge), (-edge, 2 * edge), (-7 * edge - 100, 9 * edge + 5)]:
            q = torch.arange(lo, hi + 1, dtype=torch.int32)
            plain = fold_plain(q.float() / 32, size, "reflect101")
            warp._fold_reflect101(q, size, lo, hi)
            assert torch.equal(q.float() / 32, plain)


def test_symmetric_fold_matches_float_fold():
    # every branch of _fold_symmetric, both axes (border bands), displacements at the edges of the branches
    rs = np.random.RandomState(0)
    for size in (1, 3, 16, 40):
        for dmin, dmax in [(-0.2, 0.3), (-0.5, 0.0), (-0.7, 0.9), (-2.7, -1.1), (-size, size - 1.01),
                           (-3.0 * size, 2.5 * size), (-3.0 * size, -0.6)]:
            d = rs.uniform(dmin, dmax, (2, size, size)).astype(np.float32)
            d.flat[:4] = [dmin, dmax, np.nextafter(np.float32(dmin), 0), -0.5]
            d = torch.from_numpy(np.clip(d, dmin, dmax))
            lo, hi = float(d.min()), float(d.max())
            for dim, index in [(-1, torch.arange(size)), (-2, torch.arange(size)[:, None])]:
                c = d + index.float()
                assert torch.equal(warp._fold_symmetric(c.clone(), size, lo, hi, dim), fold_plain(c, size, "symmetric"))
