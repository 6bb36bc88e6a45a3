"""Noise family: gaussian_noise, shot_noise, impulse_noise, speckle_noise (Hendrycks' make_imagenet_c.py /
make_cifar_c.py, functions of the same names; docs/corruption-fidelity.md, "Per corruption")."""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

from .base import register, unit, unit_to_uint8
from .filters import device_constant
from .rng import ImageStreams


@register(group="common")
def gaussian_noise(x: torch.Tensor, c: float, rng: ImageStreams) -> torch.Tensor:
    """clip(x + N(0, c))."""
    v = unit(x)
    return unit_to_uint8(v.add_(rng.normal(tuple(x.shape[1:]), std=c)))


_U_BITS = 30  # uniforms as 30-bit integers: CDFs compared in units of 2^-30
_CELL_BITS = 10  # the top bits of u pick one of 1024 cells per rate


@lru_cache(maxsize=16)
def _poisson_tables(c: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Inversion tables for the 256 rates lam = (v / 255) * c of 8-bit inputs. A count is
    k = min{k : u < F_lam(k)} for a 30-bit uniform u, with the CDFs as integers F = floor(F * 2^30). Returns:
    - cells (256 * 1024,) int16: where every u of a cell (its top 10 bits) gives the same count, the output
      level of that count, uint8(clip(k / c, 0, 1) * 255) as the reference computes it; else -1 (a few
      percent of the cells, where a CDF step falls inside);
    - spans (256 * 1024,) int32: for those, the smallest and largest count of the cell (k_first | k_last << 16);
    - cdf (256 * kmax,) int32 and levels (kmax,) int16, to finish the search there."""
    kmax = int(math.ceil(c + 10 * math.sqrt(c) + 10))  # P(count >= kmax) < 1e-20
    k = np.arange(kmax)
    log_fact = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, kmax)))])
    lam = np.arange(256)[:, None] / 255.0 * c
    with np.errstate(divide="ignore"):
        log_pmf = np.where(lam > 0, k * np.log(np.where(lam > 0, lam, 1.0)) - lam - log_fact, np.where(k == 0, 0.0, -np.inf))
    cdf = np.cumsum(np.exp(log_pmf), axis=1)
    cdf[:, -1] = 1.0  # the tail past kmax is folded into the last count
    fint = np.floor(cdf * 2.0**_U_BITS).astype(np.int64)
    width = 1 << (_U_BITS - _CELL_BITS)
    first = np.arange(1 << _CELL_BITS) * width
    k_first = np.stack([np.searchsorted(row, first, side="right") for row in fint])  # count of F <= u
    k_last = np.stack([np.searchsorted(row, first + width - 1, side="right") for row in fint])
    levels = np.uint8(np.clip(k / c, 0, 1) * 255)
    cells = np.where(k_first == k_last, levels.astype(np.int16)[k_first], np.int16(-1))
    spans = (k_first | (k_last << 16)).astype(np.int32)
    return cells.ravel(), spans.ravel(), fint.astype(np.int32).ravel(), levels.astype(np.int16)


def _negative_positions(v: torch.Tensor) -> torch.Tensor:
    """Flat positions of v < 0 (v 1-D). numpy's compare and flatnonzero are ~4x faster than torch's on the CPU."""
    if v.device.type == "cpu":
        return torch.from_numpy(np.flatnonzero(v.numpy() < 0))
    return (v < 0).nonzero().squeeze(1)


@register(group="common")
def shot_noise(x: torch.Tensor, c: float, rng: ImageStreams) -> torch.Tensor:
    """clip(Poisson(x * c) / c): photon counts with c photons at full intensity. An 8-bit input has only 256
    rates, so counts are drawn by inversion from tabulated CDFs: one table look-up settles most draws, a short
    bisection between the cell's smallest and largest count the others."""
    cells_np, spans_np, cdf_np, levels_np = _poisson_tables(float(c))
    kmax = len(levels_np)
    dev = x.device
    cells = device_constant(("poisson-cells", c), lambda: cells_np, dev, torch.int16)
    u = rng.bits(x[0].numel(), _U_BITS).reshape(-1)
    level = x.reshape(-1).to(torch.int32)
    cell = (level << _CELL_BITS) | (u >> (_U_BITS - _CELL_BITS))
    out = cells.index_select(0, cell)
    open_ = _negative_positions(out)
    if open_.numel():
        spans = device_constant(("poisson-spans", c), lambda: spans_np, dev, torch.int32).index_select(0, cell[open_])
        cdf = device_constant(("poisson-cdf", c), lambda: cdf_np, dev, torch.int32)
        lo, hi = spans & 0xFFFF, spans >> 16  # the count is in [lo, hi]: the first k with u < F(k)
        row, uo = level[open_] * kmax, u[open_]
        for _ in range(int(hi.sub(lo).max()).bit_length()):
            mid = (lo + hi) >> 1
            below = uo < cdf.index_select(0, row + mid)
            hi = torch.where(below, mid, hi)
            lo = torch.where(below, lo, mid + 1)
        levels = device_constant(("poisson-levels", c), lambda: levels_np, dev, torch.int16)
        out[open_] = levels.index_select(0, lo)
    return out.to(torch.uint8).reshape(x.shape)


@register(group="common")
def impulse_noise(x: torch.Tensor, c: float, rng: ImageStreams) -> torch.Tensor:
    """skimage random_noise(mode='s&p', amount=c): each value (every channel independently) is hit with
    probability c, and a hit value becomes 1 or 0 with equal odds. Untouched values come back unchanged
    (uint8(v / 255 * 255) = v for all 256 levels), so the whole corruption stays in uint8."""
    # u = b / 2^24 for 24 random bits b: u < c  <=>  b < ceil(c * 2^24) (c in float32, as a float tensor
    # compares it); integer thresholds keep the comparisons in int32
    b = rng.bits(x[0].numel(), 24).reshape(x.shape)
    hit = math.ceil(float(np.float32(c)) * 2.0**24)
    salt = math.ceil(float(np.float32(c / 2)) * 2.0**24)
    return torch.where(b < hit, (b < salt).to(torch.uint8).mul_(255), x)


@register(group="extra")
def speckle_noise(x: torch.Tensor, c: float, rng: ImageStreams) -> torch.Tensor:
    """clip(x + x * N(0, c))."""
    v = unit(x)
    return unit_to_uint8(v.addcmul_(v, rng.normal(tuple(x.shape[1:]), std=c)))
