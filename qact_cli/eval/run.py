"""`qact eval` as a function: load checkpoints, evaluate them on the same cells, write outputs."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable

from .. import distributed
from ..checkpoint import load_model
from ..errors import UsageError
from ..data import get_dataset
from ..selection import parse_corruptions, parse_severities
from ..utils import seed_everything, write_text_atomic
from .protocol import Protocol, evaluate, multi_document


def make_protocol(dataset, corruptions: str, severities: str | None, batch_size: int, context: str, adapt: str,
                  limit: int | None, seed: int) -> Protocol:
    if severities is None:  # clean datasets: severity 0; corrupted ones: the clean split (when there) and 1..5
        default = getattr(dataset, "default_severities", None)
        sev = default() if default is not None else ([0, 1, 2, 3, 4, 5] if dataset.corrupted else [0])
    else:
        sev = parse_severities(severities)
    own = getattr(dataset, "corruption_names", None)  # MNIST-C has its own corruption names
    if not any(s > 0 for s in sev):
        names = []
    elif own is not None:
        available = own()
        wanted = available if corruptions in ("common", "all") else [c for c in str(corruptions).split(",") if c]
        unknown = [c for c in wanted if c not in available]
        if unknown or not wanted:
            raise UsageError(f"unknown {dataset.name} corruption(s) {', '.join(unknown) or corruptions}; "
                             f"available: {', '.join(available)}")
        names = [c for c in wanted if c != "identity"]
    else:
        names = parse_corruptions(corruptions)
    p = Protocol(dataset.name, names, sev, batch_size, context, adapt, limit, seed)
    p.check()
    return p


def run_eval(checkpoints: list[str], dataset: str, data_root=None, download=False, corruptions="common",
             severities: str | None = None, batch_size=256, context="batch", adapt="none", limit=None, seed=0,
             device="auto", workers: int | None = None, on_start: Callable[[str, int], None] | None = None,
             on_cell: Callable[[dict], None] | None = None,
             before: Callable[[str, Protocol], None] | None = None, weights: str | None = None) -> list[dict]:
    """Evaluate every checkpoint on the same cells; one result document each, in order.
    `before(dataset_name, protocol)` runs once the protocol is known and before any image is read
    (the CLI checks a `--baseline`'s protocol there, so a mismatch fails fast). `weights`: the
    frozen backbone's weights file for DINOv2 probes (default: the hub cache)."""
    dev = distributed.setup(device)  # under torchrun: this rank's device, process group joined
    seed_everything(seed)
    ds = distributed.main_first(lambda: get_dataset(dataset, data_root, download))  # one download per node
    protocol = make_protocol(ds, corruptions, severities, batch_size, context, adapt, limit, seed)
    if before:
        before(ds.name, protocol)
    cells = ds.cells(protocol.corruptions, protocol.severities, seed=protocol.seed)
    results = []
    for path in checkpoints:
        # a DINOv2 probe's backbone weights: --weights, else the hub cache (fetched there with --download)
        model, meta = distributed.main_first(lambda: load_model(path, dev, weights=weights, download=download))
        if on_start:
            on_start(str(path), len(cells))
        seed_everything(seed)
        results.append(evaluate(model, meta, ds, protocol, dev, cells=cells, on_cell=on_cell, workers=workers))
    return results


def result_json(results: list[dict]) -> dict:
    return results[0] if len(results) == 1 else multi_document(results)


def write_json(doc: dict, path: str) -> None:
    text = json.dumps(doc, indent=2) + "\n"
    if path == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        write_text_atomic(Path(path), text)
