"""The random corruptions: their distributions, and their deterministic cores against straightforward
versions of the reference algorithms (given the same random draws)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage, stats

from qact_cli.corruptions import blur, corrupt, digital, filters, imgproc, weather
from qact_cli.corruptions.profiles import params
from fixtures_images import natural


def flat(value: int, n: int = 8, size: int = 32) -> np.ndarray:
    return np.full((n, size, size, 3), value, np.uint8)


def test_gaussian_and_speckle_noise_std():
    x = flat(128)
    c = params("tiny", "gaussian_noise", 3)  # 0.12: far from the clip at 0 and 1
    d = corrupt(x, "gaussian_noise", 3, profile="tiny").astype(float) - 128
    assert abs(d.std() / (c * 255) - 1) < 0.03
    assert abs(d.mean() + 0.5) < 0.6  # truncation toward zero costs half a level on average
    c = params("cifar", "speckle_noise", 5)
    d = corrupt(x, "speckle_noise", 5, profile="cifar").astype(float) - 128
    assert abs(d.std() / (c * 128) - 1) < 0.03


@pytest.mark.parametrize("value,profile,severity", [(102, "cifar", 5), (30, "imagenet", 2), (255, "tiny", 4)])
def test_shot_noise_is_poisson(value, profile, severity):
    c = params(profile, "shot_noise", severity)
    out = corrupt(flat(value, 16), "shot_noise", severity, profile=profile).ravel()
    lam = value / 255 * c
    # the counts k map to floor(min(k / c, 1) * 255): compare that distribution with Poisson(lam)
    ks = np.arange(int(lam + 12 * math.sqrt(lam) + 20))
    levels = np.floor(np.minimum(ks / c, 1) * 255).astype(int)
    expected = np.bincount(levels, weights=stats.poisson.pmf(ks, lam), minlength=256)
    observed = np.bincount(out, minlength=256)
    keep = expected * len(out) >= 5
    obs, exp = observed[keep], expected[keep] * len(out)
    exp *= obs.sum() / exp.sum()
    chi2 = ((obs - exp) ** 2 / exp).sum()
    assert stats.chi2.sf(chi2, max(1, keep.sum() - 1)) > 1e-4


def test_impulse_noise_fraction():
    x = flat(128, 16)
    c = params("imagenet", "impulse_noise", 4)
    out = corrupt(x, "impulse_noise", 4, profile="imagenet")
    assert set(np.unique(out)) <= {0, 128, 255}
    assert abs((out == 255).mean() - c / 2) < 0.01 and abs((out == 0).mean() - c / 2) < 0.01
    # independently per channel: all three hit together only with probability c^3
    hit = out != 128
    assert hit.all(-1).mean() < 2 * c**3 + 0.002


class FixedDraws:
    """Stands in for ImageStreams where a test supplies the random numbers itself."""

    def __init__(self, n, randint=None, scalar=None, fields=()):
        self.device, self._n = torch.device("cpu"), n
        self._randint, self._scalar, self._fields = randint, scalar, list(fields)

    def __len__(self):
        return self._n

    def randint(self, low, high, shape):
        return self._randint

    def scalar_uniform(self, low, high, k=1):
        return torch.as_tensor(self._scalar, dtype=torch.float64).reshape(self._n, k)

    def uniform(self, shape, low, high):
        return self._fields.pop(0)


def test_glass_shuffle_matches_the_reference_loop():
    h, w, d, iters, n = 13, 11, 2, 3, 2
    rs = np.random.RandomState(0)
    hs, ws = np.arange(h - d, d, -1), np.arange(w - d, d, -1)
    offs = rs.randint(-d, d, size=(n, iters, len(hs), len(ws), 2))
    codes = (offs[..., 1] + d) * 2 * d + offs[..., 0] + d  # the engine draws one code per visit
    ascending = torch.from_numpy(np.ascontiguousarray(codes[:, :, ::-1, ::-1]))  # the engine's draw order
    src = blur._glass_shuffle_map(n, h, w, d, iters, FixedDraws(n, randint=ascending))
    src = src - torch.arange(n)[:, None] * (h * w)  # batch-flat indices -> per image
    for i in range(n):
        x = np.arange(h * w).reshape(h, w, 1).repeat(3, -1)  # pixel ids
        for it in range(iters):  # the reference loop, swap statement and all
            for a, hh in enumerate(hs):
                for b, ww in enumerate(ws):
                    dx, dy = offs[i, it, a, b]
                    x[hh, ww], x[hh + dy, ww + dx] = x[hh + dy, ww + dx], x[hh, ww]
        assert np.array_equal(src[i].numpy(), x[..., 0].ravel())


def test_motion_blur_matches_a_shift_and_add_oracle():
    rs = np.random.RandomState(1)
    img = rs.rand(2, 3, 20, 24).astype(np.float32) * 255
    angles = np.array([-37.0, 12.5])
    radius, sigma = 6, 2.5
    ours = filters.motion_blur(torch.from_numpy(img), radius, sigma, torch.from_numpy(angles)).numpy()
    k = np.exp(-np.arange(2 * radius + 1) ** 2 / (2 * sigma**2))
    k /= k.sum()
    for i, a in enumerate(np.deg2rad(angles)):
        ref = np.zeros((3, 20, 24))
        yy, xx = np.mgrid[0:20, 0:24]
        for t in range(2 * radius + 1):  # ImageMagick's taps: the pixel ceil(t*(sin, cos) - 0.5) away
            dy, dx = math.ceil(t * math.sin(a) - 0.5), math.ceil(t * math.cos(a) - 0.5)
            ref += k[t] * img[i][:, np.clip(yy + dy, 0, 19), np.clip(xx + dx, 0, 23)]
        assert np.abs(ours[i] - ref).max() < 1e-3


def test_elastic_identity_and_displacement():
    x = torch.from_numpy(natural((32, 32), 2)).permute(0, 3, 1, 2).contiguous()
    still = FixedDraws(2, scalar=np.zeros((2, 6)))
    assert torch.equal(digital.elastic_transform(x, (0.0, 0.0, 2.0), still), x)
    # with no affine jitter the displacement step is scipy map_coordinates(order=1, mode="reflect")
    rs = np.random.RandomState(2)
    fields = [torch.from_numpy(rs.uniform(-1, 1, (2, 32, 32)).astype(np.float32)) for _ in range(2)]
    alpha, sigma = 3.0, 1.5
    out = digital.elastic_transform(x, (alpha, sigma, 2.0), FixedDraws(2, scalar=np.zeros((2, 6)), fields=list(fields)))
    for i in range(2):
        dx = ndimage.gaussian_filter(fields[0][i].numpy().astype(np.float64), sigma, mode="reflect", truncate=3) * alpha
        dy = ndimage.gaussian_filter(fields[1][i].numpy().astype(np.float64), sigma, mode="reflect", truncate=3) * alpha
        yy, xx = np.mgrid[0:32, 0:32]
        img = x[i].numpy().astype(np.float64) / 255
        ref = np.stack([ndimage.map_coordinates(ch, [yy + dy, xx + dx], order=1, mode="reflect") for ch in img])
        diff = np.abs(out[i].numpy().astype(int) - np.uint8(np.clip(ref, 0, 1) * 255))
        assert (diff <= 1).mean() > 0.99


def test_chamfer_distance_is_the_5x5_path_metric():
    rs = np.random.RandomState(3)
    zero = rs.rand(3, 17, 19) < 0.03
    zero[2] = False  # no source at all: OpenCV reports distances from 8192 up (its "infinity")
    ours = imgproc.chamfer_distance(torch.from_numpy(zero)).numpy()
    moves = [(dy, dx, c) for dy in range(-2, 3) for dx in range(-2, 3)
             for c in [{1: 1.0, 2: 1.4, 5: 2.1969}.get(dy * dy + dx * dx)] if c]
    for i in range(2):  # Bellman-Ford over the 16-neighbour chamfer graph
        dist = np.where(zero[i], 0.0, np.inf)
        for _ in range(40):
            p = np.pad(dist, 2, constant_values=np.inf)
            dist = np.min([dist] + [p[2 + dy:19 + dy, 2 + dx:21 + dx] + c for dy, dx, c in moves], axis=0)
        assert np.abs(ours[i] - dist).max() < 1e-3
    assert np.all(ours[2] >= 8192)


def test_canny_and_equalize_hist():
    img = np.zeros((1, 24, 24), np.int64)
    img[0, 6:18, 8:16] = 200
    edges = imgproc.canny(torch.from_numpy(img), 50, 150)[0].numpy()
    inside, outside = np.zeros((24, 24), bool), np.ones((24, 24), bool)
    inside[8:16, 10:14], outside[4:20, 6:18] = True, False
    assert edges.any() and not edges[inside].any() and not edges[outside].any()
    rs = np.random.RandomState(4)
    x = (rs.rand(2, 16, 16) * 40 + 30).astype(np.int64)
    eq = imgproc.equalize_hist(torch.from_numpy(x)).numpy()
    for i in range(2):  # cv2.equalizeHist: lut = round(255 * (cdf - cdf_first) / (N - hist_first))
        hist = np.bincount(x[i].ravel(), minlength=256)
        first = np.flatnonzero(hist)[0]
        cum = np.cumsum(hist) - hist[first]
        lut = np.clip(np.round(cum * np.float32(255.0 / (x[i].size - hist[first]))), 0, 255)
        lut[:first + 1] = 0
        assert np.array_equal(eq[i], lut[x[i]])


def test_plasma_fractal():
    class Streams(FixedDraws):
        def uniform(self, shape, low, high):
            return torch.from_numpy(np.random.RandomState(5).uniform(low, high, (self._n, *shape))).float()

    m = weather.plasma_fractal(Streams(2), 32, 2.0)
    assert m.shape == (2, 32, 32)
    assert torch.allclose(m.amin((1, 2)), torch.zeros(2)) and torch.allclose(m.amax((1, 2)), torch.ones(2))
    assert 0.2 < float(m.mean()) < 0.8


@pytest.mark.parametrize("profile,size", [("cifar", (32, 32)), ("imagenet", (64, 80))])
def test_weather_invariants(profile, size):
    x = natural(size, 6)
    xf = x.astype(float)
    for s in (1, 3):  # water drops only add colour
        assert (corrupt(x, "spatter", s, profile=profile).astype(float) >= xf - 1).all()
    a, b, _ = params(profile, "frost", 3)
    assert (corrupt(x, "frost", 3, profile=profile).astype(float) >= np.minimum(np.floor(a * xf), 255) - 1).all()
    assert corrupt(x, "snow", 3, profile=profile).mean() > x.mean() + 5
    assert corrupt(x, "fog", 5, profile=profile).std() < x.std()
    textures = weather.frost_images()
    assert len(textures) == 6 and all(t.ndim == 3 and t.shape[2] == 3 for t in textures)


def test_image_streams_are_uniform_and_per_image():
    from qact_cli.corruptions.rng import ImageStreams

    s = ImageStreams(0, "glass_blur", 3, 10, 4, torch.device("cpu"))
    for low, high in ((-2, 2), (-3, 3), (-1, 1)):  # bit-cut and torch fallback ranges
        v = s.randint(low, high, (20000,))
        counts = np.bincount((v - low).ravel().numpy(), minlength=high - low)
        assert v.min() == low and v.max() == high - 1 and len(counts) == high - low
        assert stats.chisquare(counts).pvalue > 1e-4
    u = s.uniform((50000,), -1.0, 1.0)
    assert float(u.min()) >= -1 and float(u.max()) < 1 and abs(float(u.mean())) < 0.01
    assert abs(float(u.var()) - 1 / 3) < 0.01
    # image 11 draws the same numbers whether it is first in its batch or second
    alone = ImageStreams(0, "glass_blur", 3, 11, 1, torch.device("cpu")).uniform((100,), 0.0, 1.0)
    pair = ImageStreams(0, "glass_blur", 3, 10, 2, torch.device("cpu")).uniform((100,), 0.0, 1.0)
    assert torch.equal(alone[0], pair[1]) and not torch.equal(pair[0], pair[1])


def test_frost_is_a_crop_of_a_used_texture():
    """On a black image frost is trunc(b * crop): find each crop in the (resized) textures, never in frost6."""
    a, b, _ = params("cifar", "frost", 2)
    out = corrupt(np.zeros((4, 32, 32, 3), np.uint8), "frost", 2, profile="cifar", seed=3)
    from qact_cli.corruptions.profiles import FROST_SCALE

    bank = [t.permute(1, 2, 0).numpy() for t in weather._frost_bank(float(FROST_SCALE["cifar"]), 32, 32)]
    for img in out:
        found = False
        for tex in bank:
            scaled = np.floor(b * tex.astype(np.float32)).clip(0, 255).astype(np.uint8)
            win = np.lib.stride_tricks.sliding_window_view(scaled[..., 0], (2, 2))
            ys, xs = np.nonzero((win == img[:2, :2, 0]).all((-1, -2)))
            found |= any(np.array_equal(scaled[y:y + 32, x:x + 32], img) for y, x in zip(ys, xs))
        assert found


@pytest.mark.parametrize("c", [500.0, 100.0, 12.0, 3.0])
def test_shot_noise_alias_table_holds_the_poisson_levels(c):
    """Every row of the alias table gives each output level the Poisson probability of the counts that map to it,
    to the table's 2^-32 resolution (one unit of rounding per level)."""
    from qact_cli.corruptions import noise

    entries = noise._poisson_table(c).reshape(256, 256).astype(np.int64)
    threshold, alias = entries >> 8, entries & 255
    cols = np.broadcast_to(np.arange(256), (256, 256))
    rows = np.broadcast_to(np.arange(256)[:, None], (256, 256))
    own = np.where(alias == cols, 1 << 24, threshold)  # a column's mass that stays with its own level
    mass = np.zeros((256, 256), np.int64)
    np.add.at(mass, (rows, cols), own)
    np.add.at(mass, (rows, alias), (1 << 24) - own)
    ks = np.arange(int(c + 12 * math.sqrt(c) + 30))
    levels = np.floor(np.minimum(ks / c, 1) * 255).astype(int)
    for v in range(256):
        expected = np.bincount(levels, weights=stats.poisson.pmf(ks, v / 255 * c), minlength=256)
        assert np.abs(mass[v] / 2.0**32 - expected).max() < 3 * 2.0**-32


def test_alias_sampling_is_the_same_on_numpy_and_torch():
    """The CPU path (numpy views) and the device path (torch int32) draw the same bytes from the same words."""
    import sys

    from qact_cli.corruptions import noise
    from qact_cli.corruptions.rng import ImageStreams

    x = torch.from_numpy(np.random.RandomState(2).randint(0, 256, (3, 3, 17, 19)).astype(np.uint8))
    table = noise._poisson_table(7.0)
    fast = noise._sample(x, table, ("test", 7.0), ImageStreams(4, "shot_noise", 2, 0, 3, "cpu"))
    order = sys.byteorder
    try:
        sys.byteorder = "big"  # takes the torch path on the CPU
        plain = noise._sample(x, table, ("test", 7.0), ImageStreams(4, "shot_noise", 2, 0, 3, "cpu"))
    finally:
        sys.byteorder = order
    assert torch.equal(fast, plain) and fast.shape == x.shape


def test_splitmix_streams_are_the_same_in_numpy_and_torch():
    from qact_cli.corruptions import rng

    seeds = np.array([0, 1, 2**63 + 5, 2**64 - 1], dtype=np.uint64)
    a = rng.splitmix64_numpy(seeds, 1000)
    b = rng.splitmix64_torch(torch.from_numpy(seeds.view(np.int64)), 1000).numpy().view(np.uint64)
    assert np.array_equal(a, b)
    # SplitMix64's published first output for state 0 (the increment added once, then the mix)
    assert int(a[0, 0]) == 0xE220A8397B1DCDAF
    bits = np.unpackbits(a[1:].view(np.uint8))  # every bit position about half ones
    assert abs(bits.mean() - 0.5) < 0.01
