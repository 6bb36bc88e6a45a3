"""Corrupted datasets: published CIFAR-10/100-C, Tiny-ImageNet-C, ImageNet-C, MNIST-C, and gen:NAME.

In the `.npy` layout (CIFAR-10-C) each `<corruption>.npy` stacks the five severities; the block
size is `len(labels.npy) / 5` (10,000 for the published sets), so folders written by
`qact corrupt --format npy` evaluate the same way. Files are memory-mapped and read slice by slice.
Severity 0 is the matching clean test split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import InputError, UsageError
from . import DATASETS, PREFIXED, get_dataset
from .arrays import load_npy
from .base import ArraySource, FolderSource, ImageSource, scan_folder
from .clean import (CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD, IMAGENET_MEAN, IMAGENET_STD, Cell, Dataset,
                    tiny_wnids)


def _find_dir(root: Path, folder: str, marker: str) -> Path | None:
    """`--data-root` may be the data root (holding `folder`) or the folder itself."""
    for d in (root / folder, root):
        if (d / marker).exists():
            return d
    return None


def _missing(name: str, root: Path, folder: str, what: str) -> InputError:
    fetch = f"qact eval CKPT --dataset {name} --download" if name != "imagenetc" else "download ImageNet-C by hand (see README)"
    return InputError(f"{name} not found: looked for {what} in {root / folder} and {root}; fetch it with `{fetch}` "
                      f"or pass --data-root to the folder holding it")


class _CleanSeverity:
    """Severity 0 comes from another dataset's test split, loaded only when asked for."""

    def __init__(self, clean_name: str | None, root: Path, download: bool, name: str):
        self.clean_name, self.root, self.download, self.name = clean_name, root, download, name

    def cell(self) -> Cell:
        if self.clean_name is None:
            raise InputError(f"{self.name} has no clean split; use --severities 1-5")
        try:
            source = get_dataset(self.clean_name, self.root, self.download).split("test")
        except InputError as e:
            raise InputError(f"severity 0 of {self.name} is the clean {self.clean_name} test split, which is missing "
                             f"({e}); add it, or evaluate with --severities 1-5") from None
        return Cell("clean", 0, source)


class NpyCorrupted(Dataset):
    def __init__(self, name, directory: Path, num_classes, mean, std, clean: _CleanSeverity, blocks: int = 5):
        super().__init__(name, num_classes, mean, std, corrupted=True, profile_hint="cifar")
        self.directory, self.clean, self.blocks = directory, clean, blocks
        self.labels = load_npy(directory / "labels.npy", "labels file", "the .npy layout needs labels.npy next to the corruptions")
        if self.labels.ndim != 1 or len(self.labels) % blocks:
            raise InputError(f"{directory / 'labels.npy'}: {self.labels.shape} rows cannot be split into {blocks} severity blocks")
        self.block = len(self.labels) // blocks
        self.splits = {"test": lambda: self.clean.cell().source}

    def cells(self, corruptions, severities, seed=0):
        cells = []
        for c in corruptions:
            images = None
            for s in severities:
                if s == 0:
                    if not any(x.severity == 0 for x in cells):
                        cells.insert(0, self.clean.cell())
                    continue
                if images is None:
                    path = self.directory / f"{c}.npy"
                    images = load_npy(path, f"{c} file", f"the folder {self.directory} lacks it; choose --corruptions that exist")
                    if len(images) != len(self.labels):
                        raise InputError(f"{path} has {len(images)} rows but labels.npy has {len(self.labels)}; "
                                         "the file is truncated or from another set")
                rows = slice((s - 1) * self.block, s * self.block) if self.blocks > 1 else slice(None)
                cells.append(Cell(c, s, ArraySource(images[rows], np.asarray(self.labels[rows]), self.num_classes,
                                                    name=f"{self.name}/{c}/{s}", path=path)))
        if not cells and 0 in severities:
            cells.append(self.clean.cell())
        return cells


def _npy_factory(name, folder, clean_name, num_classes, mean, std):
    def make(root: Path, download: bool = False) -> Dataset:
        d = _find_dir(root, folder, "labels.npy")
        if d is None and download:
            from .download import download_and_extract

            download_and_extract(name, root)
            d = _find_dir(root, folder, "labels.npy")
        if d is None:
            raise _missing(name, root, folder, "labels.npy and <corruption>.npy")
        return NpyCorrupted(name, d, num_classes, mean, std, _CleanSeverity(clean_name, root, download, name))

    return make


class FolderCorrupted(Dataset):
    """`<corruption>/<severity>/<wnid>/*` trees (Tiny-ImageNet-C, ImageNet-C); classes from sorted wnids."""

    def __init__(self, name, directory: Path, clean: _CleanSeverity, classes: list[str], profile: str):
        super().__init__(name, len(classes), IMAGENET_MEAN, IMAGENET_STD, corrupted=True, classes=classes, profile_hint=profile)
        self.directory, self.clean = directory, clean
        self.splits = {"test": lambda: self.clean.cell().source}

    def cells(self, corruptions, severities, seed=0):
        cells = []
        for c in corruptions:
            for s in severities:
                if s == 0:
                    if not any(x.severity == 0 for x in cells):
                        cells.insert(0, self.clean.cell())
                    continue
                d = self.directory / c / str(s)
                if not d.is_dir():
                    raise InputError(f"{d} not found: {self.name} lacks {c} severity {s}; choose --corruptions/--severities that exist")
                samples, _ = scan_folder(d, self.classes)
                cells.append(Cell(c, s, FolderSource(samples, self.classes, f"{self.name}/{c}/{s}", d)))
        if not cells and 0 in severities:
            cells.append(self.clean.cell())
        return cells


def _folder_classes(directory: Path) -> list[str]:
    """Sorted wnids from the first <corruption>/<severity>/ folder found."""
    for c in sorted(p for p in directory.iterdir() if p.is_dir()):
        for s in sorted(p for p in c.iterdir() if p.is_dir()):
            wnids = sorted(p.name for p in s.iterdir() if p.is_dir())
            if wnids:
                return wnids
    raise InputError(f"{directory}: no <corruption>/<severity>/<class>/ folders; the layout is e.g. fog/3/n01443537/*.JPEG")


def _folder_factory(name, folder, clean_name, profile):
    def make(root: Path, download: bool = False) -> Dataset:
        d = root / folder if (root / folder).is_dir() else (root if any((root / c).is_dir() for c in _names()) else None)
        if d is None and download:
            from .download import download_and_extract

            download_and_extract(name, root)
            d = root / folder if (root / folder).is_dir() else None
        if d is None:
            raise _missing(name, root, folder, "<corruption>/<severity>/<wnid>/ folders")
        classes = _folder_classes(d)
        if clean_name == "tinyimagenet" and (root / "tiny-imagenet-200").is_dir():
            classes = tiny_wnids(root / "tiny-imagenet-200")
        return FolderCorrupted(name, d, _CleanSeverity(clean_name, root, download, name), classes, profile)

    return make


def _names():
    from ..corruptions import CORRUPTIONS

    return CORRUPTIONS


# ---------------------------------------------------------------------------------------------
# MNIST-C: mnist_c/<corruption>/test_{images,labels}.npy, one severity (reported as 1)


class MnistC(Dataset):
    def __init__(self, directory: Path, root: Path, download: bool):
        super().__init__("mnistc", 10, (0.1307,) * 3, (0.3081,) * 3, corrupted=True, profile_hint="cifar")
        self.directory = directory
        self.clean = _CleanSeverity(None, root, download, "mnistc")
        self.splits = {"test": lambda: self._source("identity")}

    def corruption_names(self) -> list[str]:
        return sorted(p.name for p in self.directory.iterdir() if (p / "test_images.npy").exists())

    def _source(self, c: str) -> ImageSource:
        d = self.directory / c
        labels = load_npy(d / "test_labels.npy", f"MNIST-C {c} labels", f"the folder {d} lacks it")
        return ArraySource(load_npy(d / "test_images.npy", f"MNIST-C {c} images", f"the folder {d} lacks it"),
                           np.asarray(labels), 10, name=f"mnistc/{c}", path=d / "test_images.npy")

    def cells(self, corruptions, severities, seed=0):
        cells = []
        if 0 in severities:
            if not (self.directory / "identity").is_dir():
                raise InputError(f"severity 0 of mnistc is {self.directory / 'identity'}, which is missing; use --severities 1")
            cells.append(Cell("clean", 0, self._source("identity")))
        if any(s > 1 for s in severities):
            raise UsageError("mnistc has one severity per corruption (reported as 1); use --severities 0,1 or 1")
        if 1 in severities:
            cells += [Cell(c, 1, self._source(c)) for c in corruptions]
        return cells


def mnistc(root: Path, download: bool = False) -> Dataset:
    d = _find_dir(root, "mnist_c", "identity")
    if d is None and download:
        from .download import download_and_extract

        download_and_extract("mnistc", root)
        d = _find_dir(root, "mnist_c", "identity")
    if d is None:
        raise _missing("mnistc", root, "mnist_c", "<corruption>/test_images.npy")
    return MnistC(d, root, download)


# MNIST-C's own corruption names differ from ImageNet-C's; its names are accepted as-is.
MNISTC_CORRUPTIONS = ("shot_noise", "impulse_noise", "glass_blur", "motion_blur", "shear", "scale", "rotate",
                      "brightness", "translate", "stripe", "fog", "spatter", "dotted_line", "zigzag", "canny_edges")


# ---------------------------------------------------------------------------------------------
# gen:NAME — corruptions generated on the fly from NAME's clean test split


class GeneratedSource(ImageSource):
    """A clean source seen through one corruption: each batch is corrupted when read, seeded per image."""

    def __init__(self, base: ImageSource, corruption: str, severity: int, profile: str, seed: int):
        self.base, self.corruption, self.severity, self.profile, self.seed = base, corruption, severity, profile, seed
        self.num_classes, self.classes, self.name = base.num_classes, base.classes, f"{base.name}/{corruption}/{severity}"

    @property
    def image_size(self):
        return self.base.image_size

    @property
    def labels(self):
        return self.base.labels

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        x, y = self.__getitems__([i])
        return x[0], int(y[0])

    def __getitems__(self, indices):
        from ..corruptions import corrupt

        idx = np.asarray(indices, dtype=np.int64)
        x, y = self.base.__getitems__(idx)
        # per-image randomness comes from (seed, corruption, severity, index): contiguous runs share one call
        breaks = np.flatnonzero(np.diff(idx) != 1) + 1
        parts = [corrupt(x[a:b], self.corruption, self.severity, profile=self.profile, seed=self.seed, start_index=int(idx[a]))
                 for a, b in zip(np.r_[0, breaks], np.r_[breaks, len(idx)])]
        return torch.cat(parts), y


class Generated(Dataset):
    def __init__(self, base: Dataset):
        super().__init__(f"gen:{base.name}", base.num_classes, base.mean, base.std, corrupted=True, classes=base.classes,
                         profile_hint=base.profile_hint, exact_classes=base.exact_classes)
        self.base = base
        self.splits = {"test": lambda: base.split("test")}

    def cells(self, corruptions, severities, seed=0):
        from ..corruptions import resolve_profile

        clean = self.base.split("test")
        profile = resolve_profile(*clean.image_size)
        cells = [Cell("clean", 0, clean)] if 0 in severities else []
        cells += [Cell(c, s, GeneratedSource(clean, c, s, profile, seed)) for c in corruptions for s in severities if s > 0]
        return cells


def generated(name: str, root: Path, download: bool = False) -> Dataset:
    if name.startswith("gen:"):
        raise UsageError("gen: cannot be nested")
    return Generated(get_dataset(name, root, download))


DATASETS.update({
    "cifar10c": _npy_factory("cifar10c", "CIFAR-10-C", "cifar10", 10, CIFAR10_MEAN, CIFAR10_STD),
    "cifar100c": _npy_factory("cifar100c", "CIFAR-100-C", "cifar100", 100, CIFAR100_MEAN, CIFAR100_STD),
    "tinyimagenetc": _folder_factory("tinyimagenetc", "Tiny-ImageNet-C", "tinyimagenet", "tiny"),
    "imagenetc": _folder_factory("imagenetc", "ImageNet-C", None, "imagenet"),
    "mnistc": mnistc,
})
PREFIXED["gen"] = generated
