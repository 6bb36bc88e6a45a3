"""What every corruption shares: the registry, and the conversions in and out of uint8.

A corruption is `fn(x, c, rng) -> uint8`, with x a uint8 tensor (N, 3, H, W) on any device, c the
reference parameters for the severity (profiles.py), rng the batch's per-image `ImageStreams`.
The reference ends with `np.uint8(np.clip(v, 0, 1) * 255)`, which truncates; `unit_to_uint8` does the same.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from .rng import ImageStreams

Corruption = Callable[[torch.Tensor, object, ImageStreams], torch.Tensor]
REGISTRY: dict[str, Corruption] = {}


def register(fn: Corruption) -> Corruption:
    REGISTRY[fn.__name__] = fn
    return fn


def unit(x: torch.Tensor) -> torch.Tensor:
    """uint8 -> float32 in [0, 1] (x / 255)."""
    return x.to(torch.float32).div_(255.0)


def truncate_u8(v: torch.Tensor) -> torch.Tensor:
    """Float values already in [0, 255] -> uint8 by truncation. On the CPU torch's float->uint8 cast is a scalar
    loop (~1.7 ns per value, more than the rest of a simple corruption); numpy's cast is vectorised (~0.15 ns)."""
    if v.device.type == "cpu":
        return torch.from_numpy(v.numpy().astype(np.uint8))
    return v.to(torch.uint8)


# The corruptions work batch by batch on temporaries of a few MB, more than the L2 cache: every fresh
# tensor is memory traffic, so the chains below and in the corruptions run in place where they can.


def unit_to_uint8(v: torch.Tensor) -> torch.Tensor:
    """np.uint8(np.clip(v, 0, 1) * 255): clip, scale, truncate. Consumes v (a temporary): it is overwritten."""
    return truncate_u8(v.clamp_(0.0, 1.0).mul_(255.0))


def to_uint8(v: torch.Tensor) -> torch.Tensor:
    """np.uint8(np.clip(v, 0, 255)) for values already on the 0..255 scale (truncation). Consumes v."""
    return truncate_u8(v.clamp_(0.0, 255.0))


def to_hwc(x: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) uint8 CPU tensor -> contiguous (N, H, W, 3) numpy array, for the codecs and Pillow, which
    want interleaved pixels. numpy writes one channel plane at a time ~4x faster than either library's
    interleaving copy; a tensor that is already a channels-last view costs nothing."""
    if x.is_contiguous(memory_format=torch.channels_last):
        return x.permute(0, 2, 3, 1).numpy()
    src = x.numpy()
    out = np.empty((src.shape[0], src.shape[2], src.shape[3], src.shape[1]), np.uint8)
    for c in range(src.shape[1]):
        out[..., c] = src[:, c]
    return out


def from_hwc(a: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 array -> (N, 3, H, W) tensor view (channels-last strides; no copy)."""
    return torch.from_numpy(a).permute(0, 3, 1, 2)


def gray(x: torch.Tensor) -> torch.Tensor:
    """cv2.COLOR_RGB2GRAY on float RGB (N, 3, H, W) -> (N, 1, H, W)."""
    return 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
