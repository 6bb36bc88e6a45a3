"""The evaluation protocol: every batch holds one (corruption, severity) cell, in file order.

`evaluate(model, meta, dataset, protocol)` scores each cell (optionally after test-time adaptation
of normalisation statistics on that cell, `adapt="bn"`), and returns the result document of
interface §4. Conversion of uint8 images to normalised floats happens on the device.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable

import torch
from torch import nn

from .. import __version__
from ..data import Cell, Dataset, make_loader
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
    from ..nn.qact import QAct

    return any(isinstance(m, QAct) for m in model.modules())


def check_compatible(model_info: dict, dataset: Dataset, cells: list[Cell], path: str) -> None:
    """Refuse a dataset whose classes or image size do not fit the model (exit 3)."""
    k = model_info["num_classes"]
    if dataset.num_classes != k and (dataset.num_classes > k or dataset.exact_classes):
        raise InputError(f"{path} is a {k}-class model but dataset {dataset.name} has {dataset.num_classes} classes; "
                         "evaluate it on a dataset with the same classes")
    size = model_info.get("input_size")
    if size and cells and not model_info.get("backbone"):
        got = list(cells[0].source.image_size)
        if got != list(size):
            raise InputError(f"{path} expects {size[0]}x{size[1]} images but {dataset.name} has {got[0]}x{got[1]}; "
                             "use a dataset of the size the model was trained on")


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


def _batches(loader, device, mean, std) -> Iterable[torch.Tensor]:
    for xb, _ in loader:
        yield to_model_input(xb.to(device, non_blocking=True), mean, std)


@torch.inference_mode()
def _predict(model: nn.Module, loader, device, mean, std) -> tuple[torch.Tensor, torch.Tensor]:
    probs, labels = [], []
    for xb, yb in loader:
        logits = model(to_model_input(xb.to(device, non_blocking=True), mean, std))
        # metrics always use softmax(logits) computed here, never a library's guess (ecosystem.md §2.7)
        probs.append(torch.softmax(logits.float(), dim=1).cpu())
        labels.append(yb)
    return torch.cat(probs), torch.cat(labels)


def score_cell(model: nn.Module, cell: Cell, protocol: Protocol, device, mean, std, workers: int = 0) -> dict:
    source = cell.source.head(protocol.limit)
    if len(source) == 0:
        raise InputError(f"{cell.corruption} severity {cell.severity} of {protocol.dataset} has no images")
    loader = make_loader(source, protocol.batch_size, workers=workers)
    if protocol.adapt == "bn" and cell.severity >= 0:
        from ..nn.adapt import adapted

        with torch.no_grad(), adapted(model, _batches(loader, device, mean, std)):
            probs, labels = _predict(model, loader, device, mean, std)
    else:
        probs, labels = _predict(model, loader, device, mean, std)
    if labels.numel() and (int(labels.max()) >= probs.shape[1] or int(labels.min()) < 0):
        raise InputError(f"{protocol.dataset}: labels in {cell.corruption}/{cell.severity} go outside 0..{probs.shape[1] - 1}, "
                         f"but the model has {probs.shape[1]} classes; use a dataset with the model's classes")
    return {"corruption": cell.corruption, "severity": cell.severity, **cell_metrics(probs, labels)}


def evaluate(model: nn.Module, meta: dict, dataset: Dataset, protocol: Protocol, device: torch.device,
             cells: list[Cell] | None = None, on_cell: Callable[[dict], None] | None = None, workers: int = 0) -> dict:
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
    for cell in cells:
        row = score_cell(model, cell, protocol, device, mean, std, workers)
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
