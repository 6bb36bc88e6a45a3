"""Tiny corrupted datasets in the published on-disk layouts (docs/data.md, "Formats"), for the eval tests.

The images are the bundled digits (32x32) or small synthetic pictures, changed per (corruption,
severity) by a deterministic stand-in "corruption", so that every cell holds different pixels and a
digits-trained model gets different accuracies per cell. What matters here is the layout.
"""

from __future__ import annotations

import functools
import pickle
from pathlib import Path

import numpy as np
import torch

from qact_cli.checkpoint import make_checkpoint, save_checkpoint
from qact_cli.models import build_model


@functools.lru_cache(maxsize=None)
def _digits_test() -> tuple[np.ndarray, np.ndarray]:
    from qact_cli.data import get_dataset

    src = get_dataset("digits").split("test")
    x, y = src.__getitems__(np.arange(len(src)))
    return x.permute(0, 2, 3, 1).numpy(), y.numpy()


def digits_test(n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first n images (n, 32, 32, 3) uint8 and labels of the digits test split."""
    x, y = _digits_test()
    return x[:n].copy(), y[:n].copy()


def perturb(images: np.ndarray, corruption: str, severity: int) -> np.ndarray:
    """A deterministic stand-in corruption: noise whose seed and strength depend on (name, severity)."""
    seed = sum(map(ord, corruption)) * 10 + severity
    noise = np.random.default_rng(seed).normal(0, 18 * severity, images.shape)
    return np.clip(images.astype(np.float64) * (1 - 0.08 * severity) + noise, 0, 255).astype(np.uint8)


def write_npy_c(root: Path, images: np.ndarray, labels: np.ndarray, corruptions=("gaussian_noise", "fog"),
                folder: str | None = "CIFAR-10-C", severities=(1, 2, 3, 4, 5)) -> Path:
    """CIFAR-10-C layout: `<c>.npy` (len(severities)·N, H, W, 3) uint8 in severity blocks + `labels.npy` uint8."""
    d = root / folder if folder else root
    d.mkdir(parents=True, exist_ok=True)
    for c in corruptions:
        np.save(d / f"{c}.npy", np.concatenate([perturb(images, c, s) for s in severities]))
    np.save(d / "labels.npy", np.tile(labels, len(severities)).astype(np.uint8))
    return d


def write_cifar_clean(root: Path, images: np.ndarray, labels: np.ndarray, cifar100: bool = False) -> Path:
    """torchvision's pickled test split: `cifar-10-batches-py/test_batch` or `cifar-100-python/test`."""
    d = root / ("cifar-100-python" if cifar100 else "cifar-10-batches-py")
    d.mkdir(parents=True, exist_ok=True)
    data = images.transpose(0, 3, 1, 2).reshape(len(images), -1)  # R, G, B planes of 1024, row-major
    key = "fine_labels" if cifar100 else "labels"
    with open(d / ("test" if cifar100 else "test_batch"), "wb") as f:
        pickle.dump({"data": data, key: [int(v) for v in labels]}, f)
    return d


def synthetic(n: int, size: int, seed: int) -> np.ndarray:
    """n smooth random RGB pictures (n, size, size, 3) uint8."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 4, 4, generator=g)
    x = torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
    return (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def _save_jpeg(path: Path, image: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, quality=85)


def write_folder_c(root: Path, folder: str, wnids: list[str], per_class: int, size: int, corruptions, severities,
                   seed: int = 0) -> Path:
    """Tiny-ImageNet-C / ImageNet-C layout: `<c>/<s>/<wnid>/<name>.JPEG`."""
    d = root / folder
    base = synthetic(len(wnids) * per_class, size, seed)
    for c in corruptions:
        for s in severities:
            pics = perturb(base, c, s)
            for k, w in enumerate(wnids):
                for j in range(per_class):
                    _save_jpeg(d / c / str(s) / w / f"val_{k * per_class + j}.JPEG", pics[k * per_class + j])
    return d


def write_tiny_clean(root: Path, wnids: list[str], per_class: int = 2, seed: int = 1) -> Path:
    """tiny-imagenet-200 with wnids.txt and the val split (val/images + val_annotations.txt)."""
    d = root / "tiny-imagenet-200"
    (d / "val" / "images").mkdir(parents=True, exist_ok=True)
    (d / "wnids.txt").write_text("\n".join(reversed(wnids)) + "\n")  # file order is not the class order
    pics = synthetic(len(wnids) * per_class, 64, seed)
    rows = []
    for i, pic in enumerate(pics):
        name = f"val_{i}.JPEG"
        _save_jpeg(d / "val" / "images" / name, pic)
        rows.append(f"{name}\t{wnids[i % len(wnids)]}\t0\t0\t63\t63")
    (d / "val" / "val_annotations.txt").write_text("\n".join(rows) + "\n")
    return d


def write_mnist_c(root: Path, n: int = 12, corruptions=("identity", "fog", "shear")) -> Path:
    """MNIST-C layout: `mnist_c/<c>/test_{images,labels}.npy`, images (n, 28, 28, 1) uint8."""
    d = root / "mnist_c"
    x, y = digits_test(n)
    grey = x[:, 2:30, 2:30, :1]
    for c in corruptions:
        (d / c).mkdir(parents=True, exist_ok=True)
        np.save(d / c / "test_images.npy", grey if c == "identity" else perturb(grey, c, 3))
        np.save(d / c / "test_labels.npy", y.astype(np.uint8))
        np.save(d / c / "train_images.npy", grey[:2])
        np.save(d / c / "train_labels.npy", y[:2].astype(np.uint8))
    return d


def random_checkpoint(path: Path, num_classes: int, size: int, seed: int = 0, widths=(4, 8), hidden=(16, 16)) -> Path:
    """A randomly initialised small LeNet checkpoint for `size`-pixel inputs (protocol tests only)."""
    torch.manual_seed(seed)
    kwargs = {"input_size": [size, size], "widths": list(widths), "hidden": list(hidden)}
    model = build_model("lenet", act="relu", num_classes=num_classes, **kwargs)
    info = {"arch": "lenet", "act": "relu", "head": "linear", "num_classes": num_classes, "arch_kwargs": kwargs,
            "input_size": [size, size], "mean": [0.5] * 3, "std": [0.25] * 3, "classes": None, "backbone": None}
    save_checkpoint(make_checkpoint(model, info, {"dataset": "random", "epochs": 0, "seed": seed}), path)
    return path


