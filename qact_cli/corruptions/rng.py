"""Per-image random streams.

Every image gets its own streams, seeded from (seed, corruption, severity, global image index), so an image's
corruption never depends on which other images share its batch: corrupting 0..99 at once or in chunks (with
matching `start_index`) gives the same bytes. A stream is SplitMix64 (Steele, Lea & Flood, "Fast splittable
pseudorandom number generators", OOPSLA 2014: the state advances by a fixed odd constant and each output is a
mixed copy of it) started from the image's 64-bit seed. Its j-th output depends on the seed and j alone, so the
whole batch's draws are a few vectorised integer passes (no generator objects per image, no per-image calls),
and the same words come out on every device: numpy's uint64 arithmetic on the CPU, torch int64 on CUDA.
Large fields (noise, offsets) come from the "field" stream on the images' device, small per-image scalars
(angles, crop positions) from the "scalar" stream on the CPU, so that reading them never waits on the device.
Each draw continues its stream where the previous draw of the same `ImageStreams` stopped.
"""

from __future__ import annotations

import hashlib
import math
from functools import lru_cache

import numpy as np
import torch

# What generated sets (gen:NAME) record beside their seed: the same seed gives the same images only
# under the same streams (results from before these streams, which had no such key, are not comparable).
STREAMS = "splitmix64"
_GAMMA = 0x9E3779B97F4A7C15  # SplitMix64's increment (the golden ratio in 64-bit fixed point)
_MIX = ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB), (31, None))  # xor-shift, multiply; final xor-shift
_MASK64 = (1 << 64) - 1
_PER_IMAGE_NORMALS = 4096  # normal fields at least this large per image come from torch generators


def image_seed(seed: int, name: str, severity: int, index: int, stream: str) -> int:
    """A 64-bit seed for one image's `stream` (a stable hash; no Python `hash()` randomisation)."""
    key = f"{int(seed)}/{name}/{int(severity)}/{int(index)}/{stream}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little")


@lru_cache(maxsize=16)
def _steps(count: int) -> np.ndarray:
    """(j + 1) * gamma mod 2^64 for j < count: the state offsets of the next `count` outputs."""
    return np.arange(1, count + 1, dtype=np.uint64) * np.uint64(_GAMMA)


def splitmix64_numpy(states: np.ndarray, count: int) -> np.ndarray:
    """The next `count` SplitMix64 outputs after each of the (n,) uint64 `states`: (n, count) uint64."""
    z = _steps(count)[None, :] + states[:, None]
    t = np.empty_like(z)
    for shift, mul in _MIX:
        np.right_shift(z, np.uint64(shift), out=t)
        z ^= t
        if mul is not None:
            z *= np.uint64(mul)
    return z


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def splitmix64_torch(states: torch.Tensor, count: int) -> torch.Tensor:
    """The same words as `splitmix64_numpy`, in int64 torch ops on the states' device (two's-complement
    wrap-around; right shifts masked to be logical)."""
    steps = torch.arange(1, count + 1, dtype=torch.int64, device=states.device).mul_(_signed(_GAMMA))
    z = steps[None, :] + states[:, None]
    for shift, mul in _MIX:
        z ^= (z >> shift) & ((1 << (64 - shift)) - 1)
        if mul is not None:
            z *= _signed(mul)
    return z


class ImageStreams:
    """The random streams of the images `start_index .. start_index + n - 1` for one (corruption, severity)."""

    def __init__(self, seed: int, name: str, severity: int, start_index: int, n: int, device: torch.device,
                 indices=None):
        """`indices` (n global image indices, any order) replaces the run start_index .. start_index + n - 1."""
        self.device = torch.device(device)
        self.key = (seed, name, severity)
        self.indices = range(start_index, start_index + n) if indices is None else [int(i) for i in indices]
        if len(self.indices) != n:
            raise ValueError(f"{len(self.indices)} image indices for {n} images")
        self._seeds: dict[str, np.ndarray] = {}
        self._used = {"field": 0, "scalar": 0}  # words drawn so far from each stream

    def __len__(self) -> int:
        return len(self.indices)

    def _stream(self, stream: str) -> np.ndarray:
        seeds = self._seeds.get(stream)
        if seeds is None:
            seeds = self._seeds[stream] = np.array([image_seed(*self.key, i, stream) for i in self.indices],
                                                   dtype=np.uint64)
        return seeds

    def field(self) -> np.ndarray:
        """The images' field-stream seeds ((n,) uint64)."""
        return self._stream("field")

    def scalar(self) -> np.ndarray:
        """The images' scalar-stream seeds ((n,) uint64)."""
        return self._stream("scalar")

    @property
    def field_device(self) -> torch.device:
        return self.device if self.device.type == "cuda" else torch.device("cpu")

    def _advance(self, stream: str, seeds: np.ndarray, count: int) -> np.ndarray:
        """The stream states before the next `count` words, and the stream moved past them."""
        start = self._used[stream]
        self._used[stream] = start + count
        return seeds + np.uint64(start * _GAMMA & _MASK64)

    def words(self, count: int) -> torch.Tensor:
        """(n, count) int64: the next `count` 64-bit words of each image's field stream, on the images' device."""
        states = self._advance("field", self.field(), count)
        if self.field_device.type == "cpu":
            return torch.from_numpy(splitmix64_numpy(states, count).view(np.int64))
        return splitmix64_torch(torch.from_numpy(states.view(np.int64)).to(self.field_device), count)

    def bits(self, count: int, width: int) -> torch.Tensor:
        """(n, count) int32 holding independent uniform `width`-bit integers (width <= 31): each word is cut into
        8-, 16- or 32-bit lanes (the narrowest that holds `width` bits), masked to `width` bits."""
        lane = 8 if width <= 8 else 16 if width <= 16 else 32
        per = 64 // lane
        words = self.words((count + per - 1) // per)
        lanes = words.view({8: torch.uint8, 16: torch.int16, 32: torch.int32}[lane])[:, :count]
        return lanes.to(torch.int32) & ((1 << width) - 1)

    def uniform(self, shape: tuple[int, ...], low: float, high: float) -> torch.Tensor:
        """U[low, high) in float32 (24 random bits, as torch.rand): the top 24 bits of each 32-bit half of a word,
        read as a signed integer s, give (low + high) / 2 + s (high - low) / 2^24."""
        count = math.prod(shape)
        halves = self.words((count + 1) // 2).view(torch.int32)[:, :count]
        u = (halves >> 8).to(torch.float32).mul_((high - low) * 2.0**-24)
        if low + high:
            u = u.add_((low + high) / 2)
        return u.reshape(len(self), *shape)

    def normal(self, shape: tuple[int, ...], mean: float = 0.0, std: float = 1.0) -> torch.Tensor:
        """N(mean, std^2) in float32. A large field per image comes from torch's own normal_ (its fused Box-Muller
        kernel is the fastest normal sampler at hand) on a generator seeded with the image's next field word; a
        small one (< 4096 values, where a generator per image would cost more than the draws) from the Box-Muller
        transform of the words themselves: one word gives r cos(t) and r sin(t), r = sqrt(-2 ln u1) with a 24-bit
        u1 in (0, 1], t uniform in [-pi, pi)."""
        count = math.prod(shape)
        if count >= _PER_IMAGE_NORMALS:
            seeds = self.words(1).cpu()[:, 0] & ((1 << 63) - 1)
            out = torch.empty((len(self), count), dtype=torch.float32, device=self.field_device)
            for row, seed in zip(out, seeds.tolist()):  # one generator call per image, not per value
                g = torch.Generator(device=self.field_device)
                g.manual_seed(seed)
                row.normal_(mean, std, generator=g)
            return out.reshape(len(self), *shape)
        pairs = (count + 1) // 2
        words = self.words(pairs)
        r = (words & 0xFFFFFF).to(torch.float32).add_(1.0).mul_(2.0**-24).log_().mul_(-2.0).sqrt_().mul_(std)
        t = (words >> 40).to(torch.float32).mul_(2.0 * math.pi * 2.0**-24)  # signed 24 bits: t uniform in [-pi, pi)
        z = torch.empty((len(self), 2 * pairs), dtype=torch.float32, device=words.device)
        torch.cos(t, out=z[:, :pairs]).mul_(r)
        torch.sin(t, out=z[:, pairs:]).mul_(r)
        z = z[:, :count]
        if mean:
            z = z.add_(mean)
        return z.reshape(len(self), *shape)

    def randint(self, low: int, high: int, shape: tuple[int, ...]) -> torch.Tensor:
        """int32 integers in [low, high) (numpy's `randint` convention: `high` is never drawn): a power-of-two
        range is cut from random bits, any other range is floor(u * span / 2^32) of a 32-bit u (each value's
        probability within 2^-32 of 1 / span, like torch's `random_(low, high)`)."""
        span, count = high - low, math.prod(shape)
        width = max(1, (span - 1).bit_length())
        if span == 1 << width:
            v = self.bits(count, width)
        else:
            halves = self.words((count + 1) // 2).view(torch.int32)[:, :count]
            v = ((halves.to(torch.int64) & 0xFFFFFFFF) * span >> 32).to(torch.int32)
        return (v + low if low else v).reshape(len(self), *shape)

    def _scalar_words(self, k: int) -> np.ndarray:
        return splitmix64_numpy(self._advance("scalar", self.scalar(), k), k)

    def scalar_uniform(self, low: float, high: float, k: int = 1) -> torch.Tensor:
        """(n, k) float64 on the CPU (53-bit uniforms)."""
        u = (self._scalar_words(k) >> np.uint64(11)).astype(np.float64) * 2.0**-53
        return torch.from_numpy(u * (high - low) + low)

    def scalar_randint(self, highs: torch.Tensor | int) -> torch.Tensor:
        """One integer in [0, high) per image (int64 on the CPU); `highs` is one bound or one per image:
        floor(u * high / 2^32) of a 32-bit u."""
        highs = torch.as_tensor(highs, dtype=torch.int64).expand(len(self)).numpy().astype(np.uint64)
        u = self._scalar_words(1)[:, 0] >> np.uint64(32)
        return torch.from_numpy(((u * highs) >> np.uint64(32)).astype(np.int64))
