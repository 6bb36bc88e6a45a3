"""The evaluation protocol: every batch holds one (corruption, severity) cell, in file order.

`evaluate(model, meta, dataset, protocol)` scores each cell (optionally after test-time adaptation
of normalisation statistics on that cell, `adapt="bn"`), and returns the result document of
interface §4. Conversion of uint8 images to normalised floats happens on the device.
`--limit N` keeps N evenly spaced images of each cell, in file order (`limit_indices`): the first
N of an image tree sorted by class would hold only its first classes.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch
from torch import nn

from .. import __version__, distributed
from ..data import Cell, Dataset, ImageSource, make_loader
from ..data.base import loader_workers
from ..data.transforms import to_model_input
from ..errors import InputError, UsageError
from ..utils import environment, sha256_file
from .metrics import METRIC_NAMES, cell_metrics, summarize

SCHEMA = "qact.eval/1"
MULTI_SCHEMA = "qact.eval-multi/1"
MIN_CONTEXT_BATCH = 64


@dataclass
class Protocol:
    dataset: str
    corruptions: list[str]
    severities: list[int]
    batch_size: int = 256
    context: str = "batch"
    adapt: str = "none"
    limit: int | None = None
    seed: int = 0

    def to_json(self) -> dict:
        d = asdict(self)
        d.pop("dataset")
        return d

    def check(self) -> None:
        if self.context not in ("batch", "stored"):
            raise UsageError(f"unknown --context {self.context!r}; choose batch or stored")
        if self.adapt not in ("none", "bn"):
            raise UsageError(f"unknown --adapt {self.adapt!r}; choose none or bn")
        if self.batch_size < 1:
            raise UsageError("--batch-size must be ≥ 1")
        if self.limit is not None and self.limit < 1:
            raise UsageError("--limit must be ≥ 1")


def has_qact(model: nn.Module) -> bool:
    try:
        from ..nn.qact import QAct
    except ImportError:  # a build without the QAct layer has no QAct models either
        return False
    return any(isinstance(m, QAct) for m in model.modules())


def _expected_size(model_info: dict) -> list[int] | None:
    size = model_info.get("input_size") or model_info.get("arch_kwargs", {}).get("input_size")
    return None if not size or model_info.get("backbone") else [int(v) for v in size]  # probes resize inside


def check_compatible(model_info: dict, dataset: Dataset, cells: list[Cell], path: str) -> None:
    """Refuse, before any forward pass, a dataset whose classes or image size do not fit the model (exit 3)."""
    k = model_info["num_classes"]
    if dataset.num_classes != k and (dataset.num_classes > k or dataset.exact_classes):
        raise InputError(f"{path} is a {k}-class model but dataset {dataset.name} has {dataset.num_classes} classes; "
                         "evaluate it on a dataset with the same classes")
    size = _expected_size(model_info)
    for cell in cells:
        labels = np.asarray(getattr(cell.source, "labels", []))
        if len(labels) and (int(labels.max()) >= k or int(labels.min()) < 0):
            raise InputError(f"{cell.source.name}: labels span {int(labels.min())}..{int(labels.max())} but {path} has "
                             f"{k} classes; use a dataset with the model's classes")
        got = list(cell.source.image_size) if size and len(cell.source) else size
        if got != size:
            raise InputError(f"{path} expects {size[0]}x{size[1]} images but {cell.source.name} has {got[0]}x{got[1]}; "
                             "use a dataset of the size the model was trained on")


def limit_indices(n: int, limit: int | None) -> np.ndarray | None:
    """`--limit`: `limit` evenly spaced indices of 0..n-1 in increasing order (None: all of them)."""
    if limit is None or limit >= n:
        return None
    return (np.arange(limit, dtype=np.int64) * n) // limit


def limited(source: ImageSource, limit: int | None) -> ImageSource:
    idx = limit_indices(len(source), limit)
    return source if idx is None else source.subset(idx)


def cell_batches(source: ImageSource, batch_size: int, workers: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(uint8 images, labels) batches of one cell in file order. Image files are decoded in
    DataLoader workers (`workers`, default: up to 4 when the cell has more than two batches);
    arrays are read in this process, one contiguous slice per batch."""
    if workers is None:
        workers = loader_workers(source, None) if len(source) > 2 * batch_size else 0
    if workers > 0:
        yield from make_loader(source, batch_size, workers=workers)
        return
    for start in range(0, len(source), batch_size):
        yield source.__getitems__(np.arange(start, min(start + batch_size, len(source))))


def model_record(meta: dict) -> dict:
    info = meta["model"]
    path = meta.get("path")
    rec = {
        "name": meta.get("name") or (Path(path).stem if path else info["arch"]),
        "checkpoint": path,
        "sha256": sha256_file(path) if path and Path(path).is_file() else None,
        "arch": info["arch"], "act": info["act"], "head": info.get("head", "linear"), "num_classes": info["num_classes"],
    }
    if info.get("backbone"):
        rec["backbone"] = info["backbone"]
    return rec


def _inputs(batches, device, mean, std, size, name) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """uint8 batches -> normalised float on the device; an image of another size is exit 3, not a crash."""
    for xb, yb in batches:
        if size and list(xb.shape[-2:]) != size:
            raise InputError(f"{name}: images of {xb.shape[-2]}x{xb.shape[-1]} among the cell's, but the model expects "
                             f"{size[0]}x{size[1]}; resize them first")
        yield to_model_input(xb.to(device, non_blocking=True), mean, std), yb


@torch.inference_mode()
def _predict(model: nn.Module, inputs: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    probs, labels = [], []
    for x, yb in inputs:
        # metrics always use softmax(logits) computed here, never a library's guess (ecosystem.md §2.7)
        probs.append(torch.softmax(model(x).float(), dim=1).cpu())
        labels.append(yb)
    return torch.cat(probs), torch.cat(labels)


def score_cell(model: nn.Module, cell: Cell, protocol: Protocol, device, mean, std, workers: int | None = None,
               input_size: list[int] | None = None, temperature: float | None = None) -> dict:
    source = limited(cell.source, protocol.limit)
    if len(source) == 0:
        raise InputError(f"{cell.source.name or cell.corruption}: cell {cell.corruption} severity {cell.severity} of "
                         f"{protocol.dataset} has no images")

    def inputs(part: ImageSource = source, batch_ids: Iterable[int] | None = None):
        batches = cell_batches(part, protocol.batch_size, workers)
        if batch_ids is not None:  # a batch's random draws (QAct's context sample) depend on its cell and place only
            batches = distributed.seed_batches(batches, (protocol.seed, cell.corruption, cell.severity), batch_ids)
        return _inputs(batches, device, mean, std, input_size, source.name)

    def predict():  # under torchrun each rank predicts its share of the batches and all get every prediction
        return distributed.predict_sharded(lambda part, ids: _predict(model, inputs(part, ids)), source,
                                           protocol.batch_size)

    if protocol.adapt == "bn":
        from ..nn.adapt import adapted

        with torch.no_grad(), adapted(model, (x for x, _ in inputs())):
            probs, labels = predict()
    else:
        probs, labels = predict()
    return {"corruption": cell.corruption, "severity": cell.severity, **cell_metrics(probs, labels, temperature)}


def evaluate(model: nn.Module, meta: dict, dataset: Dataset, protocol: Protocol, device: torch.device,
             cells: list[Cell] | None = None, on_cell: Callable[[dict], None] | None = None,
             workers: int | None = None) -> dict:
    """Score `model` on every cell of `dataset` under `protocol`; returns the §4 result document."""
    protocol.check()
    t0 = time.time()
    cells = cells if cells is not None else dataset.cells(protocol.corruptions, protocol.severities, seed=protocol.seed)
    check_compatible(meta["model"], dataset, cells, meta.get("path", "model"))
    model = model.to(device).eval()
    if has_qact(model):
        from ..nn import set_context

        set_context(model, protocol.context)
        if protocol.context == "batch" and protocol.batch_size < MIN_CONTEXT_BATCH:
            warnings.warn(f"--context batch with --batch-size {protocol.batch_size}: each QAct layer's context is only "
                          f"{protocol.batch_size} images (use ≥ {MIN_CONTEXT_BATCH}, or --context stored)", stacklevel=2)
    mean, std = meta["model"]["mean"], meta["model"]["std"]
    results = []
    size = _expected_size(meta["model"])
    for cell in cells:
        row = score_cell(model, cell, protocol, device, mean, std, workers, size,
                         temperature=meta["model"].get("temperature"))  # post-hoc calibration (train --calibrate)
        results.append(row)
        if on_cell:
            on_cell(row)
    return result_document(meta, protocol, results, time.time() - t0, device)


def result_document(meta: dict, protocol: Protocol, cells: list[dict], elapsed: float, device) -> dict:
    return {
        "schema": SCHEMA,
        "qact_version": __version__,
        "model": model_record(meta),
        "dataset": protocol.dataset,
        "protocol": protocol.to_json(),
        "metrics": dict(METRIC_NAMES),
        "cells": cells,
        "summary": summarize(cells, dataset=protocol.dataset),
        "elapsed_s": round(elapsed, 3),
        "environment": environment(device),
    }


def multi_document(results: list[dict]) -> dict:
    return {"schema": MULTI_SCHEMA, "qact_version": __version__, "results": results}
