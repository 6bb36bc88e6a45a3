"""What every corruption shares: the registry, and the conversions in and out of uint8.

A corruption is `fn(x, c, rng) -> uint8`, with x a uint8 tensor (N, 3, H, W) on any device, c the
reference parameters for the severity (a number or a named record, profiles.py), rng the batch's
per-image `ImageStreams`. It joins the registry with `@register(group, deterministic, chunk_pixels, interleaved)`.
The reference ends with `np.uint8(np.clip(v, 0, 1) * 255)`, which truncates; `unit_to_uint8` does the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from .rng import ImageStreams

Corruption = Callable[[torch.Tensor, object, ImageStreams], torch.Tensor]
GROUPS = ("common", "extra")
# Images per internal batch ~ this many pixels: small enough that a batch's intermediates stay in cache,
# except where per-call work makes larger batches pay (a corruption registers its own budget then).
DEFAULT_CHUNK_PIXELS = 1 << 17


@dataclass(frozen=True)
class CorruptionSpec:
    """A registered corruption: the function and what the dispatcher and the listings need to know about it."""

    name: str
    fn: Corruption
    group: str  # "common" (the 15 of the benchmark) or "extra" (the 4 held-out ones of ImageNet-C)
    deterministic: bool  # the same image gives the same bytes whatever the seed
    chunk_pixels: int  # images per internal batch ~ this many pixels
    interleaved: bool = False  # works on (N, H, W, 3) pixels (Pillow, codecs, numpy per-pixel maths): numpy input
    # then arrives as a channels-last view (no transposes in and out); other input through `to_hwc`
    native_chunk_pixels: int | None = None  # the chunk under QACT_KERNEL=native, where its C kernel keeps one image's
    # work in cache whatever the chunk, so only the per-call Python work shrinks with larger chunks


# Filled by @register as the family modules are imported; the registration order is the listing order.
REGISTRY: dict[str, CorruptionSpec] = {}


def register(group: str, deterministic: bool = False, chunk_pixels: int = DEFAULT_CHUNK_PIXELS,
             interleaved: bool = False, native_chunk_pixels: int | None = None) -> Callable[[Corruption], Corruption]:
    """Decorator: register `fn` under its own name, with its group, determinism, chunking and pixel layout."""
    if group not in GROUPS:
        raise ValueError(f"corruption group must be one of {GROUPS}, got {group!r}")

    def add(fn: Corruption) -> Corruption:
        if fn.__name__ in REGISTRY:
            raise ValueError(f"corruption {fn.__name__!r} is registered twice")
        REGISTRY[fn.__name__] = CorruptionSpec(fn.__name__, fn, group, deterministic, chunk_pixels, interleaved,
                                                native_chunk_pixels)
        return fn

    return add


def names(group: str) -> tuple[str, ...]:
    """The registered names of one group, in registration order."""
    return tuple(s.name for s in REGISTRY.values() if s.group == group)


def lookup(name_or_fn: str | Corruption) -> CorruptionSpec | None:
    """The registered corruption for a name or for the function itself (None if it is not registered)."""
    if callable(name_or_fn):
        spec = REGISTRY.get(getattr(name_or_fn, "__name__", ""))
        return spec if spec is not None and spec.fn is name_or_fn else None
    return REGISTRY.get(name_or_fn) if isinstance(name_or_fn, str) else None


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


def planar(x: torch.Tensor) -> torch.Tensor:
    """A CPU channels-last view of interleaved pixels (a numpy batch, `interleaved=True`) as contiguous
    (N, 3, H, W), transposed by numpy (~4x faster than torch for uint8), for the default paths of corruptions
    whose native kernels read the interleaved pixels; anything else as it is."""
    if x.device.type == "cpu" and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return torch.from_numpy(np.ascontiguousarray(x.permute(0, 2, 3, 1).numpy().transpose(0, 3, 1, 2)))
    return x


def from_hwc(a: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 array -> (N, 3, H, W) tensor view (channels-last strides; no copy)."""
    return torch.from_numpy(a).permute(0, 3, 1, 2)


def gray(x: torch.Tensor) -> torch.Tensor:
    """cv2.COLOR_RGB2GRAY on float RGB (N, 3, H, W) -> (N, 1, H, W)."""
    return 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
