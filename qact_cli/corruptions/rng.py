"""Per-image random streams.

Every image gets its own generators, seeded from (seed, corruption, severity, global image index), so an
image's corruption never depends on which other images share its batch: corrupting 0..99 at once or in
chunks (with matching `start_index`) gives the same bytes. Large fields (noise, offsets) are drawn on the
images' device when it is CUDA; small per-image scalars (angles, crop positions) always come from a CPU
stream so that reading them never waits on the device.
"""

from __future__ import annotations

import hashlib
import math

import torch


def image_seed(seed: int, name: str, severity: int, index: int, stream: str) -> int:
    """A 63-bit seed for one image's `stream` (a stable hash; no Python `hash()` randomisation)."""
    key = f"{int(seed)}/{name}/{int(severity)}/{int(index)}/{stream}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") >> 1


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
        self._field: list[torch.Generator] | None = None
        self._scalar: list[torch.Generator] | None = None

    def __len__(self) -> int:
        return len(self.indices)

    def _gens(self, stream: str, device: torch.device) -> list[torch.Generator]:
        gens = []
        for i in self.indices:
            g = torch.Generator(device=device)
            g.manual_seed(image_seed(*self.key, i, stream))
            gens.append(g)
        return gens

    @property
    def field_device(self) -> torch.device:
        return self.device if self.device.type == "cuda" else torch.device("cpu")

    def field(self) -> list[torch.Generator]:
        if self._field is None:
            self._field = self._gens("field", self.field_device)
        return self._field

    def scalar(self) -> list[torch.Generator]:
        if self._scalar is None:
            self._scalar = self._gens("scalar", torch.device("cpu"))
        return self._scalar

    # Each draw fills one image's slice at a time: the per-image generator is what makes output batch-independent.
    def _fill(self, shape: tuple[int, ...], dtype: torch.dtype, draw) -> torch.Tensor:
        out = torch.empty((len(self), *shape), dtype=dtype, device=self.field_device)
        for i, g in enumerate(self.field()):
            draw(out[i], g)
        return out.to(self.device)

    def normal(self, shape: tuple[int, ...], mean: float = 0.0, std: float = 1.0) -> torch.Tensor:
        return self._fill(shape, torch.float32, lambda o, g: o.normal_(mean, std, generator=g))

    def bits(self, count: int, width: int) -> torch.Tensor:
        """(n, count) int32 holding independent uniform `width`-bit integers (width <= 31). Each generator call
        fills a 64-bit word with 63 random bits, read as two 31-bit halves cut into 31 // width values: a
        generator call per value (torch's `random_(low, high)`) costs far more than these shifts."""
        per = 31 // width
        words = self._fill(((count + 2 * per - 1) // (2 * per),), torch.int64, lambda o, g: o.random_(generator=g))
        halves = words.view(torch.int32)  # bits 0..30 of both halves are random (the top bit of the word is 0)
        if per == 1:
            return (halves & ((1 << width) - 1))[:, :count]
        shifts = torch.arange(per, device=words.device, dtype=torch.int32) * width
        return ((halves[..., None] >> shifts) & ((1 << width) - 1)).reshape(len(self), -1)[:, :count]

    def uniform(self, shape: tuple[int, ...], low: float, high: float) -> torch.Tensor:
        """U[low, high) in float32 (24 random bits, as torch.rand)."""
        u = self.bits(math.prod(shape), 24).to(torch.float32).mul_(2.0**-24)
        return u.mul_(high - low).add_(low).reshape(len(self), *shape)

    def randint(self, low: int, high: int, shape: tuple[int, ...]) -> torch.Tensor:
        """int32 integers in [low, high) (numpy's `randint` convention: `high` is never drawn): a power-of-two
        range is cut from random bits, any other range comes from torch's `random_(low, high)`."""
        span, count = high - low, math.prod(shape)
        width = max(1, (span - 1).bit_length())
        if span == 1 << width:
            b = self.bits(count, width)
            return (b + low if low else b).reshape(len(self), *shape)
        return self._fill(shape, torch.int32, lambda o, g: o.random_(low, high, generator=g))

    def scalar_uniform(self, low: float, high: float, k: int = 1) -> torch.Tensor:
        """(n, k) float64 on the CPU."""
        out = torch.stack([torch.rand(k, generator=g, dtype=torch.float64) for g in self.scalar()])
        return out * (high - low) + low

    def scalar_randint(self, highs: torch.Tensor | int) -> torch.Tensor:
        """One integer in [0, high) per image (int64 on the CPU); `highs` is one bound or one per image."""
        highs = torch.as_tensor(highs, dtype=torch.int64).expand(len(self))
        return torch.stack([torch.randint(0, int(h), (1,), generator=g)[0] for h, g in zip(highs.tolist(), self.scalar())])
