"""ImageNet-C / CIFAR-10-C style corruptions, batched in torch (Hendrycks and Dietterich, ICLR 2019; the
reference generators make_imagenet_c.py and make_cifar_c.py; fidelity notes in docs/corruption-fidelity.md).

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

from ..native import kernel as native_kernel
from ..errors import InputError, UsageError
# The families register their corruptions as they are imported (@register in base.py). Import order, then
# order of definition, is the benchmark's listing order: noise, blur, weather, digital, as in Hendrycks' tables.
from . import noise, blur, weather, digital  # noqa: F401,I001
from .base import CorruptionSpec, lookup, names, truncate_u8
from .checks import MIN_SIZE, check_images, check_name, check_profile, check_severity, get_corruption, used_profile
from .profiles import PROFILES, params, resolve_profile
from .rng import ImageStreams

COMMON = names("common")
EXTRA = names("extra")
CORRUPTIONS = COMMON + EXTRA
DETERMINISTIC = tuple(n for n in CORRUPTIONS if lookup(n).deterministic)  # same bytes whatever the seed

__all__ = ["corrupt", "CORRUPTIONS", "COMMON", "EXTRA", "DETERMINISTIC", "PROFILES", "MIN_SIZE", "resolve_profile",
           "check_name", "check_severity", "check_profile", "check_images", "get_corruption", "CorruptionSpec"]


class _Batch:
    """The caller's uint8 images seen as (N, 3, H, W) tensor chunks, and the output in the caller's form.

    Layout changes happen chunk by chunk, so each stays in cache; numpy (N, H, W, 3) input is transposed by
    numpy (its uint8 transposes run ~4x faster than torch's), and results are written back one channel plane at
    a time into the final array (interleaving 3 channels in one copy is the slow direction for both libraries).
    """

    def __init__(self, images):
        check_images(images, allow_empty=True)  # uint8, a known layout, >= MIN_SIZE pixels a side
        if isinstance(images, torch.Tensor):
            x, self.is_numpy = images, False
        elif isinstance(images, np.ndarray):
            x, self.is_numpy = images, True
        else:
            raise InputError(f"images must be a uint8 torch.Tensor or numpy array, got {type(images).__name__}")
        self.shape = tuple(x.shape)
        if self.is_numpy:
            self.grey, self.hwc = x.ndim == 3 or self.shape[-1] == 1, x.ndim == 4 and self.shape[-1] == 3
            if self.grey:
                x = x.reshape(self.shape[:3])[:, None]
            self.device = torch.device("cpu")
        else:
            self.grey, self.hwc, self.device = self.shape[1] == 1, False, x.device
        self.x = x
        self.n = self.shape[0]
        self.hw = tuple(x.shape[1:3]) if self.hwc else tuple(x.shape[2:4])
        self.out = None

    def chunk(self, a: int, b: int, interleaved: bool = False) -> torch.Tensor:
        """Images a..b-1 as a contiguous (n, 3, H, W) uint8 tensor on a device the kernels support; with
        `interleaved`, numpy (N, H, W, 3) input comes as a channels-last view of itself (no transpose)."""
        x = self.x[a:b]
        if self.is_numpy and interleaved and self.hwc:
            return torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2)
        if self.is_numpy:
            t = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2) if self.hwc else x))
        else:
            t = x if self.device.type in ("cpu", "cuda") else x.cpu()  # MPS lacks float64 and some kernels used here
            t = t.contiguous()
        return t.expand(-1, 3, -1, -1) if self.grey else t

    def put(self, a: int, b: int, out: torch.Tensor) -> None:
        """Store the corrupted images a..b-1 ((n, 3, H, W) uint8) in the output."""
        if self.grey:  # ITU-R 601 luma, rounded (PIL's convert("L"))
            f = out.to(torch.float32)
            out = truncate_u8(torch.floor(0.299 * f[:, 0:1] + 0.587 * f[:, 1:2] + 0.114 * f[:, 2:3] + 0.5).clamp_(0, 255))
        hwc_result = out.shape[1] == 3 and out.is_contiguous(memory_format=torch.channels_last)
        if self.out is None and (a, b) == (0, self.n) and self.is_numpy and self.hwc and hwc_result \
                and out.device.type == "cpu" and not np.may_share_memory(out.numpy(), self.x):
            self.out = out.permute(0, 2, 3, 1).numpy()  # one chunk, fresh interleaved pixels: they are the result
            return
        if self.out is None:
            self.out = np.empty(self.shape, np.uint8) if self.is_numpy else torch.empty(self.shape, dtype=torch.uint8,
                                                                                          device=self.device)
        if not self.is_numpy:
            if hwc_result and out.device.type == "cpu" and self.device.type == "cpu":  # numpy de-interleaves faster
                dst, src = self.out[a:b].numpy(), out.permute(0, 2, 3, 1).numpy()
                for c in range(3):
                    dst[:, c] = src[..., c]
            else:
                self.out[a:b] = out.to(self.device)
            return
        if self.hwc and hwc_result:  # codecs and Pillow hand back interleaved pixels: copy them as they are
            self.out[a:b] = out.cpu().permute(0, 2, 3, 1).numpy()
            return
        out = out.cpu().numpy()
        if self.hwc:
            for c in range(3):
                self.out[a:b, ..., c] = out[:, c]
        else:
            self.out[a:b] = out.reshape(self.out[a:b].shape)

    def result(self):
        return self.out


def corrupt(images, name, severity: int, profile: str = "auto", seed: int = 0, start_index: int = 0,
            indices=None):
    """Corrupt a batch of uint8 images with `name` (a name or the corruption function) at `severity` (1..5;
    0 returns a copy).

    profile: "auto" (<= 48 px cifar, <= 128 px tiny, else imagenet), "cifar", "tiny" or "imagenet" sets the
    reference parameters; shape-dependent details (borders, fractal size, crops, zoom centre) follow the
    images' actual size (>= 16 px). Deterministic for a given (seed, start_index) and device type.
    indices: the dataset indices of the images (any N integers), when they are not the run start_index..;
    image i is then corrupted exactly as it would be at that place of a whole-dataset call.
    """
    spec = get_corruption(name)
    severity = check_severity(severity, allow_zero=True)
    batch = _Batch(images)
    n, (h, w) = batch.n, batch.hw
    if indices is not None:
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(indices) != n:
            raise UsageError(f"indices has {len(indices)} entries for {n} images")
    profile = used_profile(profile, h, w)
    if n == 0:
        return images.copy() if batch.is_numpy else images.clone()
    c = params(profile, spec.name, severity) if severity else None
    chunk = spec.native_chunk_pixels if spec.native_chunk_pixels and native_kernel() == "native" else spec.chunk_pixels
    step = max(1, chunk // (h * w))
    with torch.no_grad():
        for a in range(0, n, step):
            b = min(n, a + step)
            xb = batch.chunk(a, b, spec.interleaved)
            if severity == 0:
                out = xb
            else:
                rng = ImageStreams(seed, spec.name, severity, start_index + a, b - a, xb.device,
                                   indices=None if indices is None else indices[a:b])
                out = spec.fn(xb, c, rng)
            batch.put(a, b, out)
    return batch.result()
