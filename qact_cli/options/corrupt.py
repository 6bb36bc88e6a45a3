"""`qact corrupt`'s options, each declared once (qact_cli/corruptions/corrupt_dataset.py runs them)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .run import RunOptions
from .schema import option


@dataclass
class CorruptOptions(RunOptions):
    out: str = option("--out", "", "Output folder.")
    dataset: str | None = option("--dataset", None, "Any dataset of the registry.")
    split: str = option("--split", "test", "test|train.")
    input: Path | None = option("--input", None, "uint8 images (N, H, W, 3) or (N, H, W) in a .npy file.")
    labels: Path | None = option("--labels", None, "(N,) integer labels .npy for --input.")
    no_labels: bool = option("--no-labels", False, "--input without labels: the folder is marked unlabelled (eval "
                             "then refuses to score accuracy on it).")
    corruptions: str = option("--corruptions", "common", "common|extra|all|NAME,NAME...")
    severities: str = option("--severities", "1-5", "1-5 or 1,3,5.")
    profile: str = option("--profile", "auto", "auto|cifar|tiny|imagenet (auto: by image size).")
    format: str = option("--format", "npy", "npy (CIFAR-10-C layout) | jpeg | png (ImageNet-C layout).")
    preview: str | None = option("--preview", None, "Write a grid PNG (corruptions x severities).")
    batch_size: int = option("--batch-size", 256)
    limit: int | None = option("--limit", None, "Corrupt N evenly spaced images of the input, in file order (as eval "
                               "--limit); recorded in manifest.json.")


# the order `qact corrupt --help` lists them in, then the run options it takes
CORRUPT_FLAGS = ("out", "dataset", "split", "input", "labels", "no_labels", "corruptions", "severities", "profile",
                 "format", "preview", "batch_size", "limit")
CORRUPT_RUN = ("data_root", "download", "device", "seed")
