"""Corrupted datasets: published CIFAR-10/100-C, Tiny-ImageNet-C, ImageNet-C, MNIST-C, and gen:NAME.

In the `.npy` layout (CIFAR-10-C) each `<corruption>.npy` stacks the severities in blocks of
`len(labels.npy) / 5` rows (10,000 for the published sets; fewer blocks when a `qact corrupt`
manifest lists fewer severities), so folders written by `qact corrupt --format npy` evaluate the
same way. Files are read lazily, batch by batch (`NpyRows`); image trees are streamed. Everything
that can be checked before a model runs (files present, lengths, labels) is checked in `cells()`.
Severity 0 is the matching clean test split.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from ..errors import InputError, UsageError
from .base import ArraySource, FolderSource, ImageSource, RowSubset, WrappedSource, limit_indices, scan_folder
from .clean import (CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD, IMAGENET_MEAN, IMAGENET_STD, Cell, Dataset,
                    tiny_wnids)
from .npyrows import NpyRows
from .registry import get_dataset, register_dataset

SEVERITIES = (1, 2, 3, 4, 5)
# where each clean counterpart lives under a data root (for messages and the cheap "is it there" test)
CLEAN_FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python", "tinyimagenet": "tiny-imagenet-200"}


def _fetch_hint(name: str) -> str:
    if name == "imagenetc":
        return "`qact eval CKPT --dataset imagenetc --download` (prints how to fetch its five tars)"
    return f"`qact eval CKPT --dataset {name} --download`"


def _missing(name: str, root: Path, folder: str, what: str) -> InputError:
    return InputError(f"{name} not found: looked for {what} in {root / folder} and {root}; fetch it with "
                      f"{_fetch_hint(name)}, or pass --data-root DIR (the folder holding {folder}/, or {folder}/ itself)")


def _locate(root: Path, folder: str, holds, name: str, download: bool, what: str) -> Path:
    """`--data-root` may be the data root (holding `folder`) or the folder itself; fetch it if allowed."""
    for d in (root / folder, root):
        if d.is_dir() and holds(d):
            return d
    if download:
        from .download import download_and_extract

        d = download_and_extract(name, root)
        if holds(d):
            return d
    raise _missing(name, root, folder, what)


def _check_labels(labels: np.ndarray, num_classes: int, path: Path, name: str) -> np.ndarray:
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"{path}: expected a 1-D array of integer labels, got {labels.dtype} {labels.shape}")
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise InputError(f"{path}: labels span {int(labels.min())}..{int(labels.max())} but {name} has {num_classes} "
                         "classes; use the dataset name with the right class count (e.g. cifar100c for 100 classes)")
    return labels.astype(np.int64)


class CleanSplit:
    """Severity 0: the clean test split of `clean_name`, under the data root or next to the -C folder,
    or, for a folder written by `qact corrupt --input`, the input images its manifest names."""

    def __init__(self, name: str, clean_name: str | None, roots: list[Path], download: bool, manifest: dict | None = None):
        self.name, self.clean_name, self.download = name, clean_name, download
        self.roots = list(dict.fromkeys(roots))
        self._dataset: Dataset | None = None
        self._own = _manifest_source(manifest, name)

    @property
    def expected(self) -> Path:
        return self.roots[0] / CLEAN_FOLDERS.get(self.clean_name or "", "")

    def dataset(self) -> Dataset | None:
        """The clean dataset when it is there (downloading it with --download), else None."""
        if self.clean_name is None:
            return None
        if self._dataset is None:
            for root in self.roots:
                if (root / CLEAN_FOLDERS[self.clean_name]).is_dir():
                    self._dataset = get_dataset(self.clean_name, root)
                    break
            else:
                if self.download:
                    self._dataset = get_dataset(self.clean_name, self.roots[0], download=True)
        return self._dataset

    def available(self) -> bool:
        return self._own is not None or self.dataset() is not None

    def source(self) -> ImageSource:
        if self._own is not None:
            return self._own()
        ds = self.dataset()
        if ds is None:
            if self.clean_name is None:
                raise InputError(f"{self.name} has no clean split in qact (severity 0); evaluate with --severities 1-5")
            raise InputError(f"severity 0 of {self.name} is the clean {self.clean_name} test split, not found at "
                             f"{self.expected}; fetch it with {_fetch_hint(self.name)} or evaluate with --severities 1-5")
        return ds.split("test")

    def cell(self) -> Cell:
        return Cell("clean", 0, self.source())


class CorruptedDataset(Dataset):
    """What the -C datasets share: the available severities and the clean counterpart (severity 0)."""

    severity_levels: tuple[int, ...] = SEVERITIES
    clean: CleanSplit

    def default_severities(self) -> list[int]:
        """0 (when the clean split is there) and every available severity."""
        levels = sorted(self.severity_levels)
        if self.clean.available():
            return [0, *levels]
        if self.clean.clean_name is not None:
            warnings.warn(f"severity 0 skipped: the clean {self.clean.clean_name} test split is not at "
                          f"{self.clean.expected} (pass --severities to choose)", stacklevel=2)
        return levels

    def _check_severities(self, severities: list[int]) -> list[int]:
        wanted = [s for s in severities if s > 0]
        bad = [s for s in wanted if s not in self.severity_levels]
        if bad:
            raise InputError(f"{self.name} at {getattr(self, 'directory', '')} holds severities "
                             f"{list(self.severity_levels)}, not {bad}; choose --severities among them")
        return wanted


# ---------------------------------------------------------------------------------------------
# CIFAR-10-C / CIFAR-100-C and `qact corrupt --format npy` folders


def read_manifest(directory: Path) -> dict | None:
    """`manifest.json` of a folder written by `qact corrupt`, or None (the published sets have none)."""
    path = directory / "manifest.json"
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError):
        manifest = None
    if not isinstance(manifest, dict):
        raise InputError(f"{path} is not a valid qact corrupt manifest (JSON object); fix or remove it")
    manifest["_path"] = str(path)
    if manifest.get("labelled") is False:
        raise InputError(f"{directory} was written by `qact corrupt --no-labels`: its labels are placeholders, so "
                         "accuracy cannot be scored on it; corrupt the images again with --labels LABELS.npy")
    return manifest


def _manifest_severities(manifest: dict | None) -> tuple[int, ...] | None:
    """The row blocks' severities, in file order (`qact corrupt` writes them in the order asked)."""
    sev = (manifest or {}).get("severities")
    if sev is None:
        return None
    if not isinstance(sev, list) or not sev or not all(isinstance(s, int) and 1 <= s <= 5 for s in sev) or len(set(sev)) != len(sev):
        raise InputError(f"{manifest['_path']}: 'severities' must be a list of distinct integers 1..5, got {sev!r}")
    return tuple(sev)


def _manifest_source(manifest: dict | None, name: str):
    """A loader of the clean images a `qact corrupt --input` manifest names (severity 0), or None. The
    images must be those the folder was made from: the manifest's `input_fingerprint` is checked."""
    src = (manifest or {}).get("source") or {}
    images = src.get("images") if isinstance(src, dict) else None
    if not images:
        return None
    labels = src.get("labels")

    def load() -> ImageSource:
        from .identity import input_fingerprint

        if not Path(images).is_file():
            raise InputError(f"{manifest['_path']} names clean images {images}, which are not there (corrupt records "
                             "the path where it ran); restore that file or evaluate with --severities 1-5")
        if not labels:
            raise InputError(f"{manifest['_path']} names no labels for its clean images {images}; "
                             "evaluate with --severities 1-5")
        y = np.asarray(NpyRows.open(Path(labels), "clean labels named by the manifest"))
        x = NpyRows.open(Path(images), "clean images named by the manifest")
        selection = src.get("selection")  # `qact corrupt --limit`: the rows of the file that were corrupted
        if isinstance(selection, dict) and len(y) == len(x) == selection.get("of"):
            rows = limit_indices(len(x), int(selection["limit"]))
            if rows is not None:
                x, y = RowSubset(x, rows), y[rows]
        want = manifest.get("input_fingerprint")
        if want and (len(y) != len(x) or input_fingerprint(x, y) != want):
            raise InputError(f"{images} (with {labels}) is not the input {manifest['_path']} was made from "
                             "(input_fingerprint differs); restore the original files or evaluate with --severities 1-5")
        return ArraySource(x, y, int(y.max()) + 1 if len(y) else 1, name=f"{name}/clean", path=Path(images))

    return load


class NpyCorrupted(CorruptedDataset):
    def __init__(self, name, directory: Path, num_classes, mean, std, clean: CleanSplit, manifest: dict | None = None):
        super().__init__(name, num_classes, mean, std, corrupted=True, profile_hint="cifar")
        self.directory, self.clean = directory, clean
        self.severity_levels = _manifest_severities(manifest) or SEVERITIES
        path = directory / "labels.npy"
        labels = np.asarray(NpyRows.open(path, "labels file", "the .npy layout needs labels.npy next to the corruptions"))
        self.labels = _check_labels(labels, num_classes, path, name)
        blocks = len(self.severity_levels)
        if not len(self.labels) or len(self.labels) % blocks:
            raise InputError(f"{path}: {len(self.labels)} labels cannot be split into {blocks} equal severity blocks; "
                             "the file is truncated or from another set")
        self.block = len(self.labels) // blocks
        self.splits = {"test": self.clean.source}

    def corruption_files(self) -> list[str]:
        return sorted(p.stem for p in self.directory.glob("*.npy") if p.stem != "labels")

    def images(self, corruption: str) -> NpyRows:
        path = self.directory / f"{corruption}.npy"
        if not path.is_file():
            have = ",".join(self.corruption_files()) or "none"
            raise InputError(f"{path} not found: {self.directory} holds the corruptions {have}; "
                             f"choose --corruptions among them")
        images = NpyRows.open(path, f"{corruption} file")
        if len(images) != len(self.labels):
            raise InputError(f"{path} has {len(images)} rows but labels.npy has {len(self.labels)}; "
                             "the file is truncated or from another set, fetch it again")
        return images

    def cells(self, corruptions, severities, seed=0):
        cells = [self.clean.cell()] if 0 in severities else []
        wanted = self._check_severities(severities)
        for c in corruptions if wanted else []:
            images = self.images(c)
            for s in wanted:
                # block b holds rows [b*block, (b+1)*block): severity s is block s-1 in the published sets
                b = self.severity_levels.index(s)
                rows = slice(b * self.block, (b + 1) * self.block)
                cells.append(Cell(c, s, ArraySource(images.rows(rows.start, rows.stop), self.labels[rows], self.num_classes,
                                                    name=f"{self.name}/{c}/{s}", path=images.path)))
        return cells


def _npy_factory(name, folder, clean_name, num_classes, mean, std):
    def make(root: Path, download: bool = False) -> Dataset:
        d = _locate(root, folder, lambda p: (p / "labels.npy").is_file(), name, download,
                    "labels.npy and <corruption>.npy files")
        manifest = read_manifest(d)
        clean = CleanSplit(name, clean_name, [root, d.parent], download, manifest)
        return NpyCorrupted(name, d, num_classes, mean, std, clean, manifest)

    return make


# ---------------------------------------------------------------------------------------------
# Tiny-ImageNet-C / ImageNet-C: <corruption>/<severity>/<wnid>/*.JPEG, classes from sorted wnids


def _severity_dirs(directory: Path) -> list[Path]:
    return [s for c in sorted(directory.iterdir()) if c.is_dir() for s in sorted(c.iterdir())
            if s.is_dir() and s.name.isdigit()]


def _tree_classes(directory: Path) -> list[str]:
    """Sorted wnids over every <corruption>/<severity>/ folder: the same labels whatever cells are asked."""
    wnids = {w.name for s in _severity_dirs(directory) for w in s.iterdir() if w.is_dir() and not w.name.startswith(".")}
    if not wnids:
        raise InputError(f"{directory}: no <corruption>/<severity>/<class>/ folders; the layout is e.g. "
                         "fog/3/n01443537/*.JPEG")
    return sorted(wnids)


class FolderCorrupted(CorruptedDataset):
    def __init__(self, name, directory: Path, clean: CleanSplit, classes: list[str], profile: str, exact_classes: bool):
        super().__init__(name, len(classes), IMAGENET_MEAN, IMAGENET_STD, corrupted=True, classes=classes, profile_hint=profile,
                         exact_classes=exact_classes)
        self.directory, self.clean = directory, clean
        self.severity_levels = tuple(sorted({int(s.name) for s in _severity_dirs(directory) if 1 <= int(s.name) <= 5}))
        self.splits = {"test": self.clean.source}

    def cell_source(self, corruption: str, severity: int) -> FolderSource:
        d = self.directory / corruption / str(severity)
        if not d.is_dir():
            have = sorted(p.name for p in self.directory.iterdir() if p.is_dir())
            raise InputError(f"{d} not found: {self.name} at {self.directory} lacks {corruption} severity {severity} "
                             f"(it holds {','.join(have) or 'nothing'}); choose --corruptions/--severities that exist")
        unknown = sorted({p.name for p in d.iterdir() if p.is_dir()} - set(self.classes))
        if unknown:
            raise InputError(f"{d} holds class folders {', '.join(unknown[:3])} that are not among the {len(self.classes)} "
                             "classes of the set; remove them or fix the tree")
        samples, _ = scan_folder(d, self.classes)
        return FolderSource(samples, self.classes, f"{self.name}/{corruption}/{severity}", d)

    def cells(self, corruptions, severities, seed=0):
        cells = [self.clean.cell()] if 0 in severities else []
        wanted = self._check_severities(severities)
        cells += [Cell(c, s, self.cell_source(c, s)) for c in corruptions for s in wanted]
        return cells


def _folder_factory(name, folder, clean_name, profile):
    def make(root: Path, download: bool = False) -> Dataset:
        d = _locate(root, folder, lambda p: bool(_severity_dirs(p)), name, download,
                    "<corruption>/<severity>/<wnid>/ folders")
        manifest = read_manifest(d)
        clean = CleanSplit(name, clean_name, [root, d.parent], download, manifest)
        # the class list, hence the labels: a `qact corrupt` manifest's (the labels' own order), else the clean
        # set's wnids.txt, else the sorted folder names (exact only for a complete published tree)
        classes, exact = _tree_classes(d), False
        base = next((r / "tiny-imagenet-200" for r in clean.roots if (r / "tiny-imagenet-200").is_dir()), None)
        if manifest and isinstance(manifest.get("classes"), list):
            classes = [str(c) for c in manifest["classes"]]
        elif clean_name == "tinyimagenet" and base is not None:
            classes, exact = tiny_wnids(base), True
        return FolderCorrupted(name, d, clean, classes, profile, exact)

    return make


# ---------------------------------------------------------------------------------------------
# MNIST-C: mnist_c/<corruption>/test_{images,labels}.npy, one severity (reported as 1)


def _npy_cell_dirs(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if (p / "test_images.npy").is_file())


class MnistC(CorruptedDataset):
    severity_levels = (1,)

    def __init__(self, directory: Path, root: Path, download: bool):
        super().__init__("mnistc", 10, (0.1307,) * 3, (0.3081,) * 3, corrupted=True, profile_hint="cifar")
        self.directory = directory
        self.clean = CleanSplit("mnistc", None, [root], download)
        self.splits = {"test": lambda: self._source("identity")}

    def corruption_names(self) -> list[str]:
        return [c for c in _npy_cell_dirs(self.directory) if c != "identity"]

    def default_severities(self) -> list[int]:
        return [0, 1] if (self.directory / "identity").is_dir() else [1]

    def _source(self, c: str) -> ImageSource:
        d = self.directory / c
        if not (d / "test_images.npy").is_file():
            raise InputError(f"{d / 'test_images.npy'} not found: {self.directory} holds "
                             f"{','.join(_npy_cell_dirs(self.directory)) or 'nothing'}; choose --corruptions among them")
        path = d / "test_labels.npy"
        labels = _check_labels(np.asarray(NpyRows.open(path, f"MNIST-C {c} labels", f"the folder {d} lacks it")), 10, path, "mnistc")
        images = NpyRows.open(d / "test_images.npy", f"MNIST-C {c} images")
        return ArraySource(images, labels, 10, name=f"mnistc/{c}", path=d / "test_images.npy")

    def cells(self, corruptions, severities, seed=0):
        if any(s > 1 for s in severities):
            raise UsageError("mnistc has one severity per corruption (reported as 1); use --severities 0,1 or 1")
        cells = []
        if 0 in severities:
            if not (self.directory / "identity").is_dir():
                raise InputError(f"severity 0 of mnistc is {self.directory / 'identity'}, which is missing; "
                                 "use --severities 1")
            cells.append(Cell("clean", 0, self._source("identity")))
        if 1 in severities:
            cells += [Cell(c, 1, self._source(c)) for c in corruptions]
        return cells


@register_dataset("mnistc")
def mnistc(root: Path, download: bool = False) -> Dataset:
    d = _locate(root, "mnist_c", lambda p: bool(_npy_cell_dirs(p)), "mnistc", download, "<corruption>/test_images.npy")
    return MnistC(d, root, download)


# ---------------------------------------------------------------------------------------------
# gen:NAME — corruptions generated on the fly from NAME's clean test split


class GeneratedSource(WrappedSource):
    """A clean source seen through one corruption: each batch is corrupted when read, seeded per image."""

    def __init__(self, base: ImageSource, corruption: str, severity: int, profile: str, seed: int):
        super().__init__(base, f"{base.name}/{corruption}/{severity}")
        self.corruption, self.severity, self.profile, self.seed = corruption, severity, profile, seed

    def __getitems__(self, indices):
        from ..corruptions import corrupt

        idx = np.asarray(indices, dtype=np.int64)
        x, y = self.base.__getitems__(idx)
        # per-image randomness comes from (seed, corruption, severity, dataset index), whatever the batch
        return corrupt(x, self.corruption, self.severity, profile=self.profile, seed=self.seed, indices=idx), y


class Generated(CorruptedDataset):
    def __init__(self, base: Dataset):
        super().__init__(f"gen:{base.name}", base.num_classes, base.mean, base.std, corrupted=True, classes=base.classes,
                         profile_hint=base.profile_hint, exact_classes=base.exact_classes)
        self.base = base
        self.splits = {"test": lambda: base.split("test")}

    def default_severities(self) -> list[int]:
        return [0, *SEVERITIES]

    def cells(self, corruptions, severities, seed=0):
        from ..corruptions import resolve_profile

        clean = self.base.split("test")
        profile = resolve_profile(*clean.image_size)
        cells = [Cell("clean", 0, clean)] if 0 in severities else []
        cells += [Cell(c, s, GeneratedSource(clean, c, s, profile, seed)) for c in corruptions for s in severities if s > 0]
        return cells


@register_dataset("gen", prefixed=True)
def generated(name: str, root: Path, download: bool = False) -> Dataset:
    if name.startswith("gen:"):
        raise UsageError("gen: cannot be nested")
    return Generated(get_dataset(name, root, download))


register_dataset("cifar10c")(_npy_factory("cifar10c", "CIFAR-10-C", "cifar10", 10, CIFAR10_MEAN, CIFAR10_STD))
register_dataset("cifar100c")(_npy_factory("cifar100c", "CIFAR-100-C", "cifar100", 100, CIFAR100_MEAN, CIFAR100_STD))
register_dataset("tinyimagenetc")(_folder_factory("tinyimagenetc", "Tiny-ImageNet-C", "tinyimagenet", "tiny"))
register_dataset("imagenetc")(_folder_factory("imagenetc", "ImageNet-C", None, "imagenet"))
