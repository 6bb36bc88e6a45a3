"""The options every command shares (docs/protocol.md, "Options every command shares")."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..config_file import config_callback
from .schema import option


@dataclass
class RunOptions:
    """Where the data is, which device, which seed, how many loader processes."""

    data_root: str | None = option("--data-root", None, "Data folder (default $QACT_DATA or ~/.cache/qact/data).")
    download: bool = option("--download", False, "Fetch a missing published dataset (md5-verified, resumable).")
    workers: int | None = option("--workers", None, "DataLoader worker processes (default: up to 4 for image folders, "
                                 "none for arrays; 0: load in the main process).", minimum=0)
    device: str = option("--device", "auto", "auto|cpu|cuda|cuda:N|mps (auto: CUDA if available, else CPU).")
    seed: int = option("--seed", 0, "Seed for everything random; recorded in outputs.")


@dataclass
class ConfigFile:
    """`--config FILE.yaml`: option values read before the command line (see config_file.py)."""

    config: Path | None = option("--config", None, "YAML file of option values; flags override it.",
                                 callback=config_callback, is_eager=True, exists=True, dir_okay=False)


RUN = ("data_root", "download", "workers", "device", "seed")
