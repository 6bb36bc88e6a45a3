"""On-device batch transforms: uint8 -> normalised float, and the optional train augmentation."""

from __future__ import annotations

import torch


def to_model_input(x: torch.Tensor, mean, std) -> torch.Tensor:
    """(uint8 / 255 - mean) / std, float32 (N, 3, H, W), computed where `x` lives (after transfer)."""
    mean = torch.as_tensor(mean, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    std = torch.as_tensor(std, dtype=torch.float32, device=x.device).view(1, -1, 1, 1)
    return (x.float().div_(255.0) - mean).div_(std)


def crop_flip(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop with `pad` zero padding and horizontal flip, batched (the usual CIFAR augmentation)."""
    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None].expand(n, x.shape[1], h, w + 2 * pad)
    out = padded.gather(2, rows)
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :].expand(n, x.shape[1], h, w)
    out = out.gather(3, cols)
    flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)
    return torch.where(flip[:, None, None, None], out.flip(3), out)


# ITU-R 601-2 luma as Pillow's RGB -> "L" conversion computes it: L = (19595 R + 38470 G + 7471 B + 2^15) >> 16,
# i.e. 0.299 R + 0.587 G + 0.114 B in 16-bit fixed point, rounded half up (the weights sum to 2^16, so grey stays grey).
_LUMA_WEIGHTS = (19595, 38470, 7471)


def rgb_to_luma(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) RGB -> (N, 1, H, W) luma, computed where `x` lives. uint8 gives exactly Pillow's
    `Image.convert("L")`; floats (0..255 scale) get the same weights without the rounding."""
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"expected RGB images (N, 3, H, W), got {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        w = torch.tensor(_LUMA_WEIGHTS, dtype=torch.int32, device=x.device).view(1, 3, 1, 1)
        return ((x.to(torch.int32) * w).sum(1, keepdim=True) + (1 << 15)).bitwise_right_shift(16).to(torch.uint8)
    w = torch.tensor(_LUMA_WEIGHTS, dtype=torch.float64, device=x.device).div(1 << 16).to(x.dtype).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)
