"""Batched JPEG decoding on the GPU for image-folder cells, chosen by the evaluation device.

On the CPU, image files are decoded with PIL in DataLoader workers (`FolderSource`). When the model
runs on CUDA, a batch of JPEG files is read as bytes and decoded in one call by nvJPEG through
`torchvision.io.decode_jpeg(list, device=...)`, which hands back the images already on the GPU (the
host never holds decoded pixels, and no worker process is needed). Files that are not JPEG (PNG
trees, a .bmp among the .JPEG) and batches nvJPEG refuses go through the CPU path, so every error
message stays the one the CPU path gives. nvJPEG's IDCT and chroma upsampling may differ from
libjpeg's by a few grey levels (docs/gpu.md); the CPU path is unchanged.
"""

from __future__ import annotations

import warnings
from typing import Callable, Iterator

import numpy as np
import torch

from .base import FolderSource, ImageSource, Subset

JPEG_SUFFIXES = (".jpg", ".jpeg")

Batch = tuple[torch.Tensor, torch.Tensor]


def folder_rows(source: ImageSource) -> tuple[FolderSource, np.ndarray] | None:
    """The image files behind `source` (a folder, or subsets of one: `--limit`, a torchrun shard) and the rows
    it reads of them."""
    if isinstance(source, FolderSource):
        return source, np.arange(len(source))
    if isinstance(source, Subset):
        inner = folder_rows(source.base)
        return None if inner is None else (inner[0], inner[1][np.asarray(source.indices, dtype=np.int64)])
    return None


def _gpu_jpeg():
    """torchvision's batched decoder, or None where this torchvision has none."""
    try:
        from torchvision.io import ImageReadMode, decode_jpeg
    except ImportError:
        return None
    return lambda data, device: decode_jpeg(data, mode=ImageReadMode.RGB, device=device)


def batch_decoder(source: ImageSource, device: torch.device | str | None) -> Callable[[np.ndarray], Batch] | None:
    """For a CUDA device and a cell of JPEG files: a function from row positions to (uint8 (B, 3, H, W) on the
    device, labels). None: the cell is read as on the CPU (arrays, other devices, no JPEG in the folder)."""
    if device is None or torch.device(device).type != "cuda":
        return None
    rows = folder_rows(source)
    if rows is None:
        return None
    folder, index = rows
    if not any(folder.samples[int(i)][0].suffix.lower() in JPEG_SUFFIXES for i in index[:64]):
        return None
    decode = _gpu_jpeg()
    if decode is None:
        return None
    device = torch.device(device)
    return lambda positions: decode_batch(source, folder, index[positions], positions, decode, device)


def decode_batch(source: ImageSource, folder: FolderSource, rows: np.ndarray, positions: np.ndarray, decode,
                 device: torch.device) -> Batch:
    paths = [folder.samples[int(i)][0] for i in rows]
    labels = torch.from_numpy(folder.labels[rows])
    if not all(p.suffix.lower() in JPEG_SUFFIXES for p in paths):
        return _cpu_batch(source, positions, device)
    try:
        data = [torch.frombuffer(bytearray(p.read_bytes()), dtype=torch.uint8) for p in paths]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torchvision >= 0.29 points to TorchCodec
            images = decode(data, device)
    except (OSError, RuntimeError, ValueError):  # an unreadable or odd file: the CPU path names it
        return _cpu_batch(source, positions, device)
    if len({tuple(x.shape) for x in images}) > 1:
        return _cpu_batch(source, positions, device)  # raises the CPU path's "images of different sizes"
    return torch.stack(images), labels


def _cpu_batch(source: ImageSource, positions: np.ndarray, device: torch.device) -> Batch:
    x, y = source.__getitems__(positions)
    return x.to(device), y


def decoded_batches(decoder: Callable[[np.ndarray], Batch], n: int, batch_size: int) -> Iterator[Batch]:
    for start in range(0, n, batch_size):
        yield decoder(np.arange(start, min(start + batch_size, n)))
