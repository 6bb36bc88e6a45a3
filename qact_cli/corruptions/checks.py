"""The one input check of the corruptions: `corrupt()`, the writer (`write_corrupted`, `write_preview`) and the
`qact corrupt` job all validate images, corruption names, severities, profile and format here, so a bad
input gets the same one-line message and exit code (docs/reference.md, exit codes) whichever door it used.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..errors import InputError, UsageError
from ..suggest import unknown
from .base import CorruptionSpec, lookup, names
from .profiles import PROFILES, resolve_profile

MIN_SIZE = 16  # the smallest image side the corruptions accept
FORMATS = ("npy", "jpeg", "png")


def registered_names() -> tuple[str, ...]:
    """Every registered corruption, the benchmark's 15 first."""
    return names("common") + names("extra")


def get_corruption(name) -> CorruptionSpec:
    """The registered corruption for a name or for the corruption function itself (as timm's lookups accept
    either); a UsageError names the valid ones."""
    spec = lookup(name)
    if spec is None:
        raise UsageError(unknown("corruption", getattr(name, "__name__", name), registered_names()))
    return spec


def check_name(name) -> str:
    """The registered name of `name` (a name or the corruption function); a UsageError if there is none."""
    return get_corruption(name).name


def check_severity(severity, allow_zero: bool = False) -> int:
    """`severity` as an int in 1..5 (0..5 with allow_zero); a UsageError otherwise (bools and floats too)."""
    lo = 0 if allow_zero else 1
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)) or not lo <= int(severity) <= 5:
        raise UsageError(f"severity {severity!r} is out of range; use an integer {lo}..5")
    return int(severity)


def check_profile(profile: str, what: str = "profile") -> str:
    """`profile` if it is "auto" or a known profile; `what` names it in the message (e.g. "--profile")."""
    if profile != "auto" and profile not in PROFILES:
        raise UsageError(unknown(what, profile, ("auto", *PROFILES)))
    return profile


def used_profile(profile: str, h: int, w: int) -> str:
    """The profile that applies to (h, w) images: `profile` itself, or the one "auto" picks for that size."""
    return resolve_profile(h, w) if check_profile(profile) == "auto" else profile


def check_format(fmt: str, what: str = "format") -> str:
    """`fmt` if it is one of the output formats of the writer (npy, jpeg, png)."""
    if fmt not in FORMATS:
        raise UsageError(unknown(what, fmt, FORMATS))
    return fmt


def check_request(corruptions, severities, fmt: str = "npy", profile: str = "auto") -> tuple[list[str], list[int]]:
    """A writer request: the corruption names (a name, a function or a sequence of them) and the severities (an int
    or a sequence; 1..5), neither empty nor repeating, plus a valid format and profile."""
    asked = [corruptions] if isinstance(corruptions, str) or callable(corruptions) else list(corruptions)
    if not asked:
        raise UsageError(f"no corruptions asked for; valid: {', '.join(registered_names())}")
    names_ = [check_name(c) for c in asked]
    sev: Sequence = [severities] if isinstance(severities, (int, np.integer)) else list(severities)
    if not sev:
        raise UsageError("no severities asked for; use 1..5")
    sev = [check_severity(s) for s in sev]
    if len(set(names_)) != len(names_) or len(set(sev)) != len(sev):
        raise UsageError("corruptions and severities must not repeat")
    check_format(fmt)
    check_profile(profile)
    return names_, sev


def check_images(images, where=None, allow_empty: bool = False) -> tuple[int, int, int]:
    """(N, H, W) of a batch of uint8 images, or an InputError naming `where` (a path) and what to do.

    A torch tensor is (N, 3, H, W) or (N, 1, H, W); anything else with a shape and a dtype (numpy arrays,
    memmaps, lazy row views) is (N, H, W, 3), (N, H, W, 1) or (N, H, W). Images under MIN_SIZE pixels a side and,
    unless allow_empty, an empty batch are refused."""
    pre = f"{where}: " if where else ""
    shape, dtype = getattr(images, "shape", None), getattr(images, "dtype", None)
    if shape is None or dtype is None:
        raise InputError(f"{pre}images must be a uint8 torch.Tensor or numpy array (N, H, W, 3), got "
                         f"{type(images).__name__}")
    shape = tuple(int(s) for s in shape)
    tensor = isinstance(images, torch.Tensor)
    if (dtype != torch.uint8) if tensor else (np.dtype(dtype) != np.uint8):
        raise InputError(f"{pre}images must be uint8, got {dtype}; convert with (x * 255).round() or "
                         ".astype(uint8) first")
    if tensor:
        if len(shape) != 4 or shape[1] not in (1, 3):
            raise InputError(f"{pre}tensor images must be (N, 3, H, W) or (N, 1, H, W); got {shape}")
        n, h, w = shape[0], shape[2], shape[3]
    else:
        if not (len(shape) == 3 or (len(shape) == 4 and shape[-1] in (1, 3))):
            raise InputError(f"{pre}numpy images must be (N, H, W, 3), (N, H, W, 1) or (N, H, W); got {shape}")
        n, h, w = shape[:3]
    if n == 0 and not allow_empty:
        raise InputError(f"{pre}no images to corrupt (N = 0)")
    if h < MIN_SIZE or w < MIN_SIZE:
        raise InputError(f"{pre}images are {h}x{w}; corruptions need at least {MIN_SIZE}x{MIN_SIZE} pixels")
    return n, h, w
