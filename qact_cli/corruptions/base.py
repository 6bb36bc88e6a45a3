"""What every corruption shares: the registry, and the conversions in and out of uint8.

A corruption is `fn(x, c, rng) -> uint8`, with x a uint8 tensor (N, 3, H, W) on any device, c the
reference parameters for the severity (profiles.py), rng the batch's per-image `ImageStreams`.
The reference ends with `np.uint8(np.clip(v, 0, 1) * 255)`, which truncates; `unit_to_uint8` does the same.
"""

from __future__ import annotations

from typing import Callable

import torch

from .rng import ImageStreams

Corruption = Callable[[torch.Tensor, object, ImageStreams], torch.Tensor]
REGISTRY: dict[str, Corruption] = {}


def register(fn: Corruption) -> Corruption:
    REGISTRY[fn.__name__] = fn
    return fn


def unit(x: torch.Tensor) -> torch.Tensor:
    """uint8 -> float32 in [0, 1] (x / 255)."""
    return x.to(torch.float32) / 255.0


def unit_to_uint8(v: torch.Tensor) -> torch.Tensor:
    """np.uint8(np.clip(v, 0, 1) * 255): clip, scale, truncate."""
    return torch.clamp(v, 0.0, 1.0).mul_(255.0).to(torch.uint8)


def to_uint8(v: torch.Tensor) -> torch.Tensor:
    """np.uint8(np.clip(v, 0, 255)) for values already on the 0..255 scale (truncation)."""
    return torch.clamp(v, 0.0, 255.0).to(torch.uint8)


def gray(x: torch.Tensor) -> torch.Tensor:
    """cv2.COLOR_RGB2GRAY on float RGB (N, 3, H, W) -> (N, 1, H, W)."""
    return 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
