"""Noise family: gaussian_noise, shot_noise, impulse_noise, speckle_noise (Hendrycks' make_imagenet_c.py /
make_cifar_c.py, functions of the same names; docs/corruption-fidelity.md, "Per corruption")."""

from __future__ import annotations

import math
import sys
from functools import lru_cache

import numpy as np
import torch

from .base import register
from .filters import device_constant
from .rng import ImageStreams


# gaussian, shot and speckle noise change every value independently, and an output's distribution depends only
# on the input's level: P(out = k | x), a 256 x 256 table per corruption and parameter (an 8-bit image has only
# 256 levels). Outputs are drawn from it by Walker's alias method (one table look-up and one comparison per value,
# however long the tails), with the probabilities held in units of 2^-32: closer to the reference's float64
# draws than float32 noise would be, and the same bytes on every device.
_COLUMNS = 256  # alias columns per input level: a 32-bit draw u picks one with its low byte ...
_BLOCK = 1 << 15  # values per block of the CPU sampler
_CAPACITY = 1 << 24  # ... and compares its top 24 bits with the column's threshold (2^-32 units per column)


def _alias_table(cdf: np.ndarray) -> np.ndarray:
    """Alias tables for the rows of `cdf` (256 input levels x 256 outputs, P(out <= k | x), float64), as (256 * 256,)
    uint32 entries threshold << 8 | alias: in column j of row x, a 24-bit r < threshold gives output j, else the
    alias. Built by pairing, in every row at once, the column of least remaining mass with the one of most
    (Robin Hood; each step completes one column)."""
    rows = np.arange(cdf.shape[0])
    cum = np.round(np.clip(cdf, 0.0, 1.0) * 2.0**32).astype(np.int64)
    cum[:, -1] = 1 << 32
    mass = np.diff(np.maximum.accumulate(cum, 1), axis=1, prepend=0)  # 2^-32 units, 2^32 per row
    threshold = np.zeros_like(mass)
    alias = np.broadcast_to(np.arange(_COLUMNS), mass.shape).copy()
    for_min, for_max = mass.copy(), mass  # completed columns: out of reach of argmin (2^40) and argmax (-1)
    for _ in range(_COLUMNS):
        low, high = for_min.argmin(1), for_max.argmax(1)
        m = for_min[rows, low]
        threshold[rows, low], alias[rows, low] = m, high
        rest = for_max[rows, high] - (_CAPACITY - m)  # low <= capacity <= high: the rest stays >= m >= 0
        for_min[rows, high], for_max[rows, high] = rest, rest
        for_min[rows, low], for_max[rows, low] = 1 << 40, -1
    full = threshold >= _CAPACITY  # a column that is its own output: any threshold works with itself as alias
    alias[full] = np.broadcast_to(np.arange(_COLUMNS), mass.shape)[full]
    threshold[full] = 0
    return ((threshold << 8) | alias).astype(np.uint32).ravel()


def _sample(x: torch.Tensor, table: np.ndarray, key: tuple, rng: ImageStreams) -> torch.Tensor:
    """Every value of the uint8 batch x replaced by a draw from its level's row of the alias `table`: one 32-bit
    word u per value, column j = u & 255, output j if (u | 255) < entry (unsigned: the top 24 bits of u below the
    threshold), else the entry's alias. numpy on the CPU (uint8 views of the words, no conversions), torch
    elsewhere; both give the same bytes."""
    n, count = x.shape[0], x[0].numel()
    words = rng.words((count + 1) // 2)
    if x.device.type == "cpu" and sys.byteorder == "little":
        u_all = words.numpy().view(np.uint32).reshape(n, -1)[:, :count].reshape(-1)
        col_all = words.numpy().view(np.uint8).reshape(n, -1, 4)[:, :count, 0].reshape(-1)  # u & 255
        x_all = x.numpy().reshape(-1)
        out = np.empty(n * count, np.uint8)
        idx = np.empty((min(n * count, _BLOCK), 2), np.uint8)  # uint16 level << 8 | column
        for a in range(0, n * count, _BLOCK):  # blocks of values whose temporaries stay in the L2 cache
            b = min(n * count, a + _BLOCK)
            u, col, ix, o = u_all[a:b], col_all[a:b], idx[:b - a], out[a:b]
            ix[:, 0] = col
            ix[:, 1] = x_all[a:b]
            entry = np.take(table, ix.view(np.uint16)[:, 0])
            pick = np.less(np.bitwise_or(u, np.uint32(0xFF)), entry)
            np.copyto(o, entry, casting="unsafe")  # the alias (the low byte); then a select without branches
            flip = np.bitwise_xor(col, o)  # (np.where mispredicts the random picks)
            flip *= pick
            o ^= flip  # alias ^ (column ^ alias) where picked
        return torch.from_numpy(out).reshape(x.shape)
    # int32 on the device: signed comparisons of values with the top bit flipped are the unsigned comparisons
    flipped = device_constant(("noise-alias",) + key, lambda: (table ^ np.uint32(1 << 31)).view(np.int32),
                              x.device, torch.int32)
    u = words.view(torch.int32)[:, :count]
    col = u & 0xFF
    entry = flipped.index_select(0, ((x.reshape(n, count).to(torch.int32) << 8) | col).reshape(-1)).view(n, count)
    pick = ((u | 0xFF) ^ -(1 << 31)) < entry
    return torch.where(pick, col, entry & 0xFF).to(torch.uint8).reshape(x.shape)


_LEVELS = np.arange(256, dtype=np.float64)


def _phi(z: np.ndarray) -> np.ndarray:
    """The standard normal CDF in float64 (accurate in both tails)."""
    return torch.special.ndtr(torch.from_numpy(np.asarray(z, dtype=np.float64))).numpy()


@lru_cache(maxsize=16)
def _gaussian_table(c: float) -> np.ndarray:
    """out = floor(255 clip(x/255 + c z, 0, 1)) = clip(x + floor(255 c z), 0, 255) for integer x (floor(x + y) =
    x + floor(y)): P(out <= k | x) = Phi((k + 1 - x) / (255 c)) below 255."""
    k, x = np.meshgrid(_LEVELS, _LEVELS)
    return _alias_table(_phi((k + 1 - x) / (255.0 * c)))


@lru_cache(maxsize=16)
def _speckle_table(c: float) -> np.ndarray:
    """out = floor(255 clip(x/255 + (x/255) c z, 0, 1)) = clip(x + floor(x c z), 0, 255):
    P(out <= k | x) = Phi((k + 1 - x) / (x c)) for x > 0; black stays black."""
    k, x = np.meshgrid(_LEVELS, _LEVELS)
    with np.errstate(divide="ignore", invalid="ignore"):
        cdf = _phi((k + 1 - x) / (x * c))
    cdf[0] = 1.0
    return _alias_table(cdf)


@lru_cache(maxsize=16)
def _poisson_table(c: float) -> np.ndarray:
    """Counts k ~ Poisson(lam = (x / 255) c) become uint8(clip(k / c, 0, 1) * 255) as the reference computes it;
    P(out <= level | x) sums the probabilities of the counts that give at most that level."""
    kmax = int(math.ceil(c + 10 * math.sqrt(c) + 10))  # P(count >= kmax) < 1e-20
    k = np.arange(kmax)
    log_fact = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, kmax)))])
    lam = _LEVELS[:, None] / 255.0 * c
    with np.errstate(divide="ignore"):
        log_pmf = np.where(lam > 0, k * np.log(np.where(lam > 0, lam, 1.0)) - lam - log_fact,
                           np.where(k == 0, 0.0, -np.inf))
    count_cdf = np.cumsum(np.exp(log_pmf), axis=1)
    levels = np.uint8(np.clip(k / c, 0, 1) * 255)  # nondecreasing in k
    last = np.searchsorted(levels, np.arange(256), side="right") - 1  # the largest count at or below each level
    return _alias_table(np.where(last >= 0, count_cdf[:, np.maximum(last, 0)], 0.0))


@register(group="common")
def gaussian_noise(x: torch.Tensor, c: float, rng: ImageStreams) -> torch.Tensor:
    """clip(x + N(0, c)), drawn per value from the exact distribution of the 8-bit result."""
    return _sample(x, _gaussian_table(float(c)), ("gaussian", float(c)), rng)


@register(group="common")
def shot_noise(x: torch.Tensor, c: float, rng: ImageStreams) -> torch.Tensor:
    """clip(Poisson(x * c) / c): photon counts with c photons at full intensity, drawn per value from the
    distribution of the 8-bit result."""
    return _sample(x, _poisson_table(float(c)), ("poisson", float(c)), rng)


# larger batches: the per-call work (a few dozen small ops over the hits) outweighs the per-value work
@register(group="common", chunk_pixels=1 << 20)
def impulse_noise(x: torch.Tensor, c: float, rng: ImageStreams) -> torch.Tensor:
    """skimage random_noise(mode='s&p', amount=c): each value (every channel independently) is hit with
    probability c, and a hit value becomes 1 or 0 with equal odds. Untouched values come back unchanged
    (uint8(v / 255 * 255) = v for all 256 levels), so only the hits are written: the gaps between successive
    hits of an image (its values in order) are independent geometric counts, floor(ln u / ln(1 - c)) for a
    53-bit u in (0, 1], and the word's lowest bit picks salt or pepper."""
    n, total = x.shape[0], x[0].numel()
    # each image's values plus one scratch slot, where the hits past the image's end land (no boolean masks)
    buf = torch.empty((n, total + 1), dtype=torch.uint8, device=x.device)
    out = buf[:, :total].view(x.shape)
    out.copy_(x)
    if c <= 0:
        return out
    hits = total * c  # expected per image; a block of words covers an image but for a ~1e-15 chance, else one more
    block = int(hits + 8 * math.sqrt(hits * (1 - c)) + 16)
    per_gap = 1.0 / math.log1p(-c) if c < 1 else 0.0
    base = torch.arange(n, device=x.device)[:, None] * (total + 1)
    last = torch.full((n, 1), -1, dtype=torch.int64, device=x.device)  # each image's last hit so far
    while bool((last < total).any()):
        words = rng.words(block)
        # ln u for u = (m + 1) / 2^53, m the word's top 53 bits (read as a signed shift, then offset by 2^52)
        log_u = (words >> 11).to(torch.float64).add_(2.0**52 + 1).log_().sub_(53 * math.log(2.0))
        at = torch.cumsum(log_u.mul_(per_gap).floor_().to(torch.int64).add_(1), 1).add_(last)  # the next hits
        last = at[:, -1:].clone()
        salt = (words & 1).to(torch.uint8).mul_(255)
        buf.view(-1).scatter_(0, at.clamp_(max=total).add_(base).view(-1), salt.view(-1))  # ~5x index_put_'s speed
    return out


@register(group="extra")
def speckle_noise(x: torch.Tensor, c: float, rng: ImageStreams) -> torch.Tensor:
    """clip(x + x * N(0, c)), drawn per value from the exact distribution of the 8-bit result."""
    return _sample(x, _speckle_table(float(c)), ("speckle", float(c)), rng)
