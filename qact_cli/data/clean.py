"""Clean (uncorrupted) datasets: digits, npy:DIR, cifar10/100, tinyimagenet, folder:DIR."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..constants import CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD, IMAGENET_MEAN, IMAGENET_STD
from ..errors import InputError, UsageError
from .arrays import load_cifar_batch, load_npy
from .base import ArraySource, FolderSource, ImageSource, scan_folder
from .registry import register_dataset


@dataclass
class Cell:
    """One (corruption, severity) cell of an evaluation: every batch comes from a single cell."""

    corruption: str
    severity: int
    source: ImageSource


@dataclass
class Dataset:
    """A named dataset: its splits, normalisation and (for corrupted sets) its cells."""

    name: str
    num_classes: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    splits: dict[str, Callable[[], ImageSource]] = field(default_factory=dict)
    classes: list[str] | None = None
    profile_hint: str | None = None  # corruption profile matching the image size (for gen:)
    corrupted: bool = False
    exact_classes: bool = True  # False when the class count is inferred from labels (npy:, folder:)
    _cache: dict = field(default_factory=dict, repr=False)

    def split(self, which: str) -> ImageSource:
        if which not in self.splits:
            # the data lacks it (e.g. npy:DIR without train_images.npy): an input problem, exit 3
            raise InputError(f"dataset {self.name} has no {which!r} split; it has {', '.join(self.splits) or 'none'}"
                             + (f" (add {which}_images.npy and {which}_labels.npy)" if self.name.startswith("npy:") else ""))
        if which not in self._cache:
            self._cache[which] = self.splits[which]()
        return self._cache[which]

    def cells(self, corruptions: list[str], severities: list[int], seed: int = 0) -> list[Cell]:
        if any(s != 0 for s in severities):
            raise UsageError(
                f"dataset {self.name} is clean (severity 0 only); for corruptions use gen:{self.name} "
                f"or a published corrupted set (cifar10c, ...)"
            )
        return [Cell("clean", 0, self.split("test"))]


# ---------------------------------------------------------------------------------------------
# digits: scikit-learn's bundled 8x8 digits, the one real dataset available everywhere.

DIGITS_TEST_SIZE = 360  # 20% of 1797, stratified, fixed seed: the same split on every machine


def _digits_arrays() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    # 0..16 grey levels -> uint8, then a bilinear 4x upsampling to 32x32 so CIFAR-sized models fit.
    x = torch.from_numpy(digits.images.astype(np.float32) * (255.0 / 16.0)).unsqueeze(1)
    x = torch.nn.functional.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
    images = x.round().clamp(0, 255).to(torch.uint8).squeeze(1).numpy()
    images = np.repeat(images[..., None], 3, axis=-1)
    idx = np.arange(len(images))
    tr, te = train_test_split(idx, test_size=DIGITS_TEST_SIZE, random_state=0, stratify=digits.target)
    return {"train": (images[np.sort(tr)], digits.target[np.sort(tr)]), "test": (images[np.sort(te)], digits.target[np.sort(te)])}


@register_dataset("digits")
def digits(root: Path, download: bool = False) -> Dataset:
    arrays: dict = {}

    def split(which):
        def make():
            if not arrays:
                arrays.update(_digits_arrays())
            x, y = arrays[which]
            return ArraySource(x, y, 10, [str(i) for i in range(10)], name=f"digits/{which}")

        return make

    # mean/std of the upsampled training images (all channels equal)
    return Dataset("digits", 10, (0.2047,) * 3, (0.3362,) * 3, {"train": split("train"), "test": split("test")},
                   classes=[str(i) for i in range(10)], profile_hint="cifar")


# ---------------------------------------------------------------------------------------------
# npy:DIR — the MNIST-C file layout: {train,test}_{images,labels}.npy


@register_dataset("npy", prefixed=True)
def npy_dir(directory: str, root: Path, download: bool = False) -> Dataset:
    d = Path(directory).expanduser()
    if not d.is_dir():
        raise InputError(f"npy dataset folder not found: {d}; it must hold test_images.npy and test_labels.npy")
    present = [s for s in ("train", "test") if (d / f"{s}_images.npy").exists()]
    if not present:
        raise InputError(f"no train_images.npy or test_images.npy in {d}; the npy:DIR layout is DIR/{{train,test}}_{{images,labels}}.npy")
    labels = {s: load_npy(d / f"{s}_labels.npy", "labels file", f"save the labels next to {s}_images.npy") for s in present}
    for s, y in labels.items():
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise InputError(f"{d / f'{s}_labels.npy'}: expected a 1-D integer array, got {y.dtype} {y.shape}")
        if not len(y):
            raise InputError(f"{d / f'{s}_labels.npy'}: the {s} split has 0 rows; put labelled images in it or remove "
                             f"{s}_images.npy and {s}_labels.npy")
        if int(y.min()) < 0:
            raise InputError(f"{d / f'{s}_labels.npy'}: labels must be class indices ≥ 0, found {int(y.min())}; "
                             "drop or relabel those rows")
    num_classes = int(max(int(y.max()) for y in labels.values() if len(y))) + 1

    def split(s):
        return lambda: ArraySource(load_npy(d / f"{s}_images.npy", "images file"), np.asarray(labels[s]), num_classes,
                                   name=f"npy:{d}/{s}", path=d / f"{s}_images.npy")

    return Dataset(f"npy:{d}", num_classes, splits={s: split(s) for s in present}, exact_classes=False)


# ---------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100 in torchvision's python-pickle format


def _cifar(name: str, folder: str, train_files: list[str], test_files: list[str], label_key: str,
           num_classes: int, mean, std, root: Path, download: bool) -> Dataset:
    base = root / folder
    if not base.is_dir() and download:
        from .download import download_and_extract

        download_and_extract(name, root)
    if not base.is_dir():
        raise InputError(f"{name} not found at {base}; fetch it with: qact train --dataset {name} --download "
                         f"(or pass --data-root to the folder holding {folder}/)")

    def split(files):
        def make():
            batches = [load_cifar_batch(base / f) for f in files]
            x = np.concatenate([b["data"] for b in batches]).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
            y = np.concatenate([np.asarray(b[label_key]) for b in batches])
            return ArraySource(np.ascontiguousarray(x), y, num_classes, name=f"{name}/{files[0]}")

        return make

    return Dataset(name, num_classes, mean, std, {"train": split(train_files), "test": split(test_files)}, profile_hint="cifar")


@register_dataset("cifar10")
def cifar10(root: Path, download: bool = False) -> Dataset:
    return _cifar("cifar10", "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "labels",
                  10, CIFAR10_MEAN, CIFAR10_STD, root, download)


@register_dataset("cifar100")
def cifar100(root: Path, download: bool = False) -> Dataset:
    return _cifar("cifar100", "cifar-100-python", ["train"], ["test"], "fine_labels", 100, CIFAR100_MEAN, CIFAR100_STD,
                  root, download)


# ---------------------------------------------------------------------------------------------
# Tiny-ImageNet-200: train/<wnid>/images/*.JPEG; val/images + val_annotations.txt is the test split


def tiny_wnids(base: Path) -> list[str]:
    wnids = base / "wnids.txt"
    if wnids.is_file():
        return sorted(w.strip() for w in wnids.read_text().split() if w.strip())
    return sorted(d.name for d in (base / "train").iterdir() if d.is_dir())


@register_dataset("tinyimagenet")
def tinyimagenet(root: Path, download: bool = False) -> Dataset:
    base = root / "tiny-imagenet-200"
    if not base.is_dir() and download:
        from .download import download_and_extract

        download_and_extract("tinyimagenet", root)
    if not base.is_dir():
        raise InputError(f"tinyimagenet not found at {base}; fetch it with --download or pass --data-root")
    wnids = tiny_wnids(base)

    def train():
        samples, _ = scan_folder(base / "train", wnids)
        return FolderSource(samples, wnids, "tinyimagenet/train", base / "train")

    def test():
        ann = base / "val" / "val_annotations.txt"
        if not ann.is_file():
            raise InputError(f"{ann} not found; the Tiny-ImageNet val split needs its annotations file")
        index = {w: i for i, w in enumerate(wnids)}
        rows = [line.split("\t") for line in ann.read_text().splitlines() if line.strip()]
        samples = sorted((base / "val" / "images" / r[0], index[r[1]]) for r in rows)
        return FolderSource(samples, wnids, "tinyimagenet/val", base / "val")

    return Dataset("tinyimagenet", len(wnids), IMAGENET_MEAN, IMAGENET_STD, {"train": train, "test": test},
                   classes=wnids, profile_hint="tiny")


# ---------------------------------------------------------------------------------------------
# folder:DIR — an ImageFolder tree; DIR/train and DIR/test (or val) when present, else DIR is the test split


@register_dataset("folder", prefixed=True)
def image_folder(directory: str, root: Path, download: bool = False) -> Dataset:
    d = Path(directory).expanduser()
    if not d.is_dir():
        raise InputError(f"image folder not found: {d}; pass folder:DIR with DIR/<class>/<image> files")
    parts = {s: d / s for s in ("train", "test", "val") if (d / s).is_dir()}
    if "test" not in parts and "val" in parts:
        parts["test"] = parts["val"]
    parts.pop("val", None)
    if not parts:
        parts = {"test": d}
    classes = sorted({c.name for p in parts.values() for c in p.iterdir() if c.is_dir() and not c.name.startswith(".")})
    if not classes:
        raise InputError(f"no class folders in {d}; the layout is DIR/<class>/<image> (or DIR/train/<class>/...)")

    def split(path):
        def make():
            samples, _ = scan_folder(path, classes)
            return FolderSource(samples, classes, f"folder:{path}", path)

        return make

    # exact: folder names are the only key to the classes. A model that knows its class names is matched by name;
    # one that does not must have as many outputs as there are folders (a tree 5/ 7/ 9/ scored by index as 0, 1, 2
    # against a 10-class model would be a silently wrong number)
    return Dataset(f"folder:{d}", len(classes), splits={s: split(p) for s, p in parts.items()}, classes=classes,
                   exact_classes=True)
