"""`qact corrupt`'s options, each declared once (qact_cli/corruptions/corrupt_dataset.py runs them)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError
from .run import RunOptions
from .schema import check_value, option

# the writer's formats and the profiles' names (qact_cli/corruptions/checks.py and profiles.py; a test
# keeps them equal), here so that a bad value is refused before torch is imported
FORMATS = ("npy", "jpeg", "png")
PROFILES = ("auto", "cifar", "tiny", "imagenet")


@dataclass
class CorruptOptions(RunOptions):
    out: str = option("--out", "", "Output folder.")
    dataset: str | None = option("--dataset", None, "Any dataset of the registry.")
    split: str = option("--split", "test", "test|train.", choices=("test", "train"))
    input: Path | None = option("--input", None, "uint8 images (N, H, W, 3) or (N, H, W) in a .npy file.")
    labels: Path | None = option("--labels", None, "(N,) integer labels .npy for --input.")
    no_labels: bool = option("--no-labels", False, "--input without labels: the folder is marked unlabelled (eval "
                             "then refuses to score accuracy on it).")
    corruptions: str = option("--corruptions", "common", "common|extra|all|NAME,NAME...")
    severities: str = option("--severities", "1-5", "1-5 or 1,3,5.")
    profile: str = option("--profile", "auto", "auto|cifar|tiny|imagenet (auto: by image size).",
                          choices=PROFILES)
    format: str = option("--format", "npy", "npy (CIFAR-10-C layout) | jpeg | png (ImageNet-C layout).",
                         choices=FORMATS)
    preview: str | None = option("--preview", None, "Write a grid PNG (corruptions x severities).")
    batch_size: int = option("--batch-size", 256)
    limit: int | None = option("--limit", None, "Corrupt N evenly spaced images of the input, in file order (as eval "
                               "--limit); recorded in manifest.json.")


    def check(self) -> tuple[list[str], list[int]]:
        """Every check that needs no data, in the order the command line reads them; returns the
        corruption names and severities."""
        from ..selection import parse_corruptions, parse_severities

        if not self.out:
            raise UsageError("missing --out DIR; see `qact corrupt --help`")
        for name in ("format", "profile", "split"):
            check_value(self.__dataclass_fields__[name], getattr(self, name))
        if self.limit is not None and self.limit < 1:
            raise UsageError(f"--limit {self.limit}: give a number of images ≥ 1")
        return parse_corruptions(self.corruptions), parse_severities(self.severities, lo=1, hi=5)


# the order `qact corrupt --help` lists them in, then the run options it takes
CORRUPT_FLAGS = ("out", "dataset", "split", "input", "labels", "no_labels", "corruptions", "severities", "profile",
                 "format", "preview", "batch_size", "limit")
CORRUPT_RUN = ("data_root", "download", "device", "seed")
