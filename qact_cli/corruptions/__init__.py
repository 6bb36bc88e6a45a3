"""ImageNet-C / CIFAR-10-C style corruptions, batched in torch (corruptions.md §1, interface §3 and §7).

    from qact_cli.corruptions import corrupt, CORRUPTIONS, COMMON, EXTRA
    out = corrupt(images, "fog", 3, profile="cifar", seed=0)

`images` is uint8: a torch tensor (N, 3, H, W) on any device, or a numpy array (N, H, W, 3); grayscale
(N, 1, H, W) / (N, H, W) / (N, H, W, 1) is corrupted as RGB and returned in its own layout. The output has
the input's type, layout and device. Every image's randomness derives from (seed, corruption, severity,
start_index + i), so chunked calls with matching `start_index` give the same bytes as one call.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import InputError, UsageError
from . import blur, digital, noise, weather  # noqa: F401  (they register the corruptions)
from .base import REGISTRY
from .profiles import FROST_SCALE, PROFILES, params, resolve_profile
from .rng import ImageStreams

COMMON = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
          "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression")
EXTRA = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
CORRUPTIONS = COMMON + EXTRA
DETERMINISTIC = ("defocus_blur", "zoom_blur", "brightness", "contrast", "pixelate", "jpeg_compression",
                 "gaussian_blur", "saturate")
MIN_SIZE = 16
# Images per internal batch ~ this many pixels: small enough that a batch's intermediates stay in cache,
# except where per-row work makes large batches pay (spatter's row-by-row distance transform).
_CHUNK_PIXELS = {"spatter": 1 << 21}
_DEFAULT_CHUNK_PIXELS = 1 << 17

__all__ = ["corrupt", "CORRUPTIONS", "COMMON", "EXTRA", "DETERMINISTIC", "PROFILES", "resolve_profile", "check_name",
           "check_severity"]


def check_name(name: str) -> str:
    if name not in REGISTRY:
        raise UsageError(f"unknown corruption {name!r}; valid: {', '.join(CORRUPTIONS)}")
    return name


def check_severity(severity, allow_zero: bool = False) -> int:
    lo = 0 if allow_zero else 1
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)) or not lo <= int(severity) <= 5:
        raise UsageError(f"severity {severity!r} is out of range; use an integer {lo}..5")
    return int(severity)


def _check_profile(profile: str, h: int, w: int) -> str:
    if profile == "auto":
        return resolve_profile(h, w)
    if profile not in PROFILES:
        raise UsageError(f"unknown profile {profile!r}; choose auto, {', '.join(PROFILES)}")
    return profile


def _to_nchw(images) -> tuple[torch.Tensor, callable]:
    """uint8 input -> (N, 3, H, W) tensor, and the function that puts a result back into the input's form."""
    if isinstance(images, torch.Tensor):
        x, is_numpy = images, False
    elif isinstance(images, np.ndarray):
        x, is_numpy = images, True
    else:
        raise InputError(f"images must be a uint8 torch.Tensor or numpy array, got {type(images).__name__}")
    if x.dtype not in (torch.uint8, np.uint8):
        raise InputError(f"images must be uint8, got {x.dtype}; convert with (x * 255).round() or .astype(uint8) first")
    shape = tuple(x.shape)
    if is_numpy:
        if not x.flags.writeable:  # e.g. a read-only memmap: torch wants arrays it could write to
            x = x.copy()
        if x.ndim == 3 or (x.ndim == 4 and shape[-1] == 1):
            t = torch.from_numpy(np.ascontiguousarray(x.reshape(shape[:3])))[:, None]
        elif x.ndim == 4 and shape[-1] == 3:
            # numpy's transposing copy of uint8 is ~3x faster than torch's .contiguous() on the permuted view
            t = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
        else:
            raise InputError(f"numpy images must be (N, H, W, 3), (N, H, W, 1) or (N, H, W); got {shape}")
    else:
        if x.ndim != 4 or shape[1] not in (1, 3):
            raise InputError(f"tensor images must be (N, 3, H, W) or (N, 1, H, W); got {shape}")
        t = x
    grey = t.shape[1] == 1
    if grey:
        t = t.expand(-1, 3, -1, -1)

    def back(out: torch.Tensor):
        if grey:  # ITU-R 601 luma, rounded (PIL's convert("L"))
            f = out.to(torch.float32)
            out = torch.floor(0.299 * f[:, 0:1] + 0.587 * f[:, 1:2] + 0.114 * f[:, 2:3] + 0.5).clamp_(0, 255)
            out = out.to(torch.uint8)
        if not is_numpy:
            return out
        # stacking the channel planes writes NHWC in one pass, ~2x faster than a permuted copy of uint8
        arr = torch.stack(out.cpu().unbind(1), dim=-1).numpy() if out.shape[1] > 1 else out.cpu().numpy()
        return np.ascontiguousarray(arr.reshape(shape))

    return t, back


def corrupt(images, name: str, severity: int, profile: str = "auto", seed: int = 0, start_index: int = 0):
    """Corrupt a batch of uint8 images with `name` at `severity` (1..5; 0 returns a copy).

    profile: "auto" (<= 48 px cifar, <= 128 px tiny, else imagenet), "cifar", "tiny" or "imagenet" sets the
    reference parameters; shape-dependent details (borders, fractal size, crops, zoom centre) follow the
    images' actual size (>= 16 px). Deterministic for a given (seed, start_index) and device type.
    """
    check_name(name)
    severity = check_severity(severity, allow_zero=True)
    x, back = _to_nchw(images)
    n, _, h, w = x.shape
    if h < MIN_SIZE or w < MIN_SIZE:
        raise InputError(f"images are {h}x{w}; corruptions need at least {MIN_SIZE}x{MIN_SIZE} pixels")
    profile = _check_profile(profile, h, w)
    if severity == 0 or n == 0:
        return back(x.clone())
    c = params(profile, name, severity)
    if name == "frost":
        c = (*c, FROST_SCALE[profile])
    fn = REGISTRY[name]
    device = x.device
    work = x if device.type in ("cpu", "cuda") else x.cpu()  # MPS lacks float64 and some kernels used here
    step = max(1, _CHUNK_PIXELS.get(name, _DEFAULT_CHUNK_PIXELS) // (h * w))
    parts = []
    with torch.no_grad():
        for a in range(0, n, step):
            xb = work[a:a + step].contiguous()
            rng = ImageStreams(seed, name, severity, start_index + a, len(xb), xb.device)
            parts.append(fn(xb, c, rng))
    out = torch.cat(parts) if len(parts) > 1 else parts[0]
    return back(out.to(device))
