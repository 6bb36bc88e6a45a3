"""Noise family: gaussian_noise, shot_noise, impulse_noise, speckle_noise (corruptions.md §1.1)."""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

from .base import register, unit, unit_to_uint8
from .filters import _on
from .rng import ImageStreams


@register
def gaussian_noise(x: torch.Tensor, c: float, rng: ImageStreams) -> torch.Tensor:
    """clip(x + N(0, c))."""
    v = unit(x)
    return unit_to_uint8(v.add_(rng.normal(tuple(x.shape[1:]), std=c)))


_U_BITS = 30  # uniforms as 30-bit integers: CDFs compared in units of 2^-30


@lru_cache(maxsize=16)
def _poisson_tables(c: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """Inversion tables for the 256 rates lam = (v / 255) * c of 8-bit inputs (flattened, one row per v):
    the CDFs F[v, k] as integers floor(F * 2^30), a guide G[v, j] = min{k : F[v, k] > j / 2^g} that starts
    the search within a step or two of the answer, and the output level of each count k,
    uint8(clip(k / c, 0, 1) * 255) as the reference computes it."""
    kmax = int(math.ceil(c + 10 * math.sqrt(c) + 10))  # P(count >= kmax) < 1e-20
    k = np.arange(kmax)
    log_fact = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, kmax)))])
    lam = np.arange(256)[:, None] / 255.0 * c
    with np.errstate(divide="ignore"):
        log_pmf = np.where(lam > 0, k * np.log(np.where(lam > 0, lam, 1.0)) - lam - log_fact, np.where(k == 0, 0.0, -np.inf))
    cdf = np.cumsum(np.exp(log_pmf), axis=1)
    cdf[:, -1] = 1.0  # the tail past kmax is folded into the last count
    guide_bits = int(math.ceil(math.log2(4 * kmax)))
    marks = np.arange(1 << guide_bits) / (1 << guide_bits)
    guide = np.stack([np.searchsorted(row, marks, side="right") for row in cdf])
    levels = np.uint8(np.clip(k / c, 0, 1) * 255)
    return np.floor(cdf * 2.0**_U_BITS).ravel(), guide.ravel(), levels, kmax, guide_bits


@register
def shot_noise(x: torch.Tensor, c: float, rng: ImageStreams) -> torch.Tensor:
    """clip(Poisson(x * c) / c): photon counts with c photons at full intensity. An 8-bit input has only 256
    rates, so counts are drawn by inversion, Poisson(lam) = min{k : u < F_lam(k)}, from tabulated CDFs."""
    cdf_np, guide_np, levels_np, kmax, guide_bits = _poisson_tables(float(c))
    dev = x.device
    cdf = _on(("poisson-cdf", c), lambda: cdf_np, dev, torch.int32)
    guide = _on(("poisson-guide", c), lambda: guide_np, dev, torch.int32)
    levels = _on(("poisson-levels", c), lambda: levels_np, dev, torch.uint8)
    u = rng.bits(x[0].numel(), _U_BITS).reshape(-1)
    level = x.reshape(-1).to(torch.int32)
    k = guide.index_select(0, (level << guide_bits) + (u >> (_U_BITS - guide_bits)))
    row = level * kmax
    k += cdf.index_select(0, row + k) <= u
    active = (cdf.index_select(0, row + k) <= u).nonzero().squeeze(1)
    while active.numel():  # a few values walk further up
        k[active] += 1
        active = active[cdf.index_select(0, row[active] + k[active]) <= u[active]]
    return levels.index_select(0, k).reshape(x.shape)


@register
def impulse_noise(x: torch.Tensor, c: float, rng: ImageStreams) -> torch.Tensor:
    """skimage random_noise(mode='s&p', amount=c): each value (every channel independently) is hit with
    probability c, and a hit value becomes 1 or 0 with equal odds."""
    u = rng.uniform(tuple(x.shape[1:]), 0.0, 1.0)  # u < c: hit; and within a hit, u < c/2: salt (odds 1:1)
    v = unit(x)
    v = torch.where(u < c, (u < c / 2).to(v.dtype), v)
    return unit_to_uint8(v)


@register
def speckle_noise(x: torch.Tensor, c: float, rng: ImageStreams) -> torch.Tensor:
    """clip(x + x * N(0, c))."""
    v = unit(x)
    return unit_to_uint8(v.addcmul_(v, rng.normal(tuple(x.shape[1:]), std=c)))
