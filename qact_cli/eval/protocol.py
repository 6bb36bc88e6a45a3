"""The evaluation protocol: every batch holds one (corruption, severity) cell, in file order.

`evaluate(model, meta, dataset, protocol)` scores each cell (optionally after test-time adaptation
of normalisation statistics on that cell, `adapt="bn"`), and returns the result document of
docs/reference.md ("Result JSON"). Conversion of uint8 images to normalised floats happens on the device.
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

from .. import distributed, native
from ..corruptions.rng import STREAMS
from ..data import Cell, Dataset, ImageSource, make_loader
from ..data.base import limit_indices, loader_workers
from ..data.decode import batch_decoder, decoded_batches
from ..data.identity import data_identity
from ..data.transforms import rgb_to_luma
from ..errors import InputError, UsageError
from ..models.exported import eval_mode
from ..nn.qact import has_qact
from ..utils import environment, sha256_file
from ..version import __version__
from .classes import label_map, width_mismatch
from .metrics import METRIC_NAMES, cell_metrics, summarize
from .outputs import OutputWidth, as_logits, call_model, check_outputs, declared_kind
from .options import check_value

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
        if self.dataset.startswith("gen:"):  # the seed decides the images only with the same streams and kernels
            d["streams"] = STREAMS
            d["kernels"] = native.kernel()
        return d

    def check(self) -> None:
        for key in ("context", "adapt", "batch_size", "limit"):
            check_value(key, getattr(self, key))


def _expected_size(model_info: dict) -> list[int] | None:
    size = model_info.get("input_size") or model_info.get("arch_kwargs", {}).get("input_size")
    return None if not size or model_info.get("backbone") else [int(v) for v in size]  # probes resize inside


def model_name(meta: dict) -> str:
    """How messages name a model: a model from elsewhere by its MODEL (card or spec; never by its
    weights file, which is `path` for a spec), a qact checkpoint by its file, else by its class."""
    info = meta["model"]
    if info.get("spec"):
        return str(meta.get("name") or info["spec"])
    return str(meta.get("path") or meta.get("name") or info.get("arch") or "model")


def check_compatible(model_info: dict, dataset: Dataset, cells: list[Cell], path: str) -> np.ndarray | None:
    """Refuse, before any forward pass, a dataset whose classes or image size do not fit the model
    (exit 3). Returns the label map (dataset label -> model output, None: the identity)."""
    k = int(model_info["num_classes"])
    mapping = label_map(model_info, dataset, path)
    span = len(mapping) if mapping is not None else k
    size = None if model_info.get("resize") else _expected_size(model_info)
    for cell in cells:
        labels = np.asarray(getattr(cell.source, "labels", []))
        if len(labels) and (int(labels.max()) >= span or int(labels.min()) < 0):
            raise InputError(f"{cell.source.name}: labels span {int(labels.min())}..{int(labels.max())} but {path} has "
                             f"{k} classes; use a dataset with the model's classes")
        got = list(cell.source.image_size) if size and len(cell.source) else size
        if got != size:
            raise InputError(f"{path} expects {size[0]}x{size[1]} images but {cell.source.name} has {got[0]}x{got[1]}; "
                             "use a dataset of the size the model was trained on, or give --resize bilinear|bicubic")
    return mapping


def limited(source: ImageSource, limit: int | None) -> ImageSource:
    idx = limit_indices(len(source), limit)
    return source if idx is None else source.subset(idx)


def cell_batches(source: ImageSource, batch_size: int, workers: int | None = None,
                 device: torch.device | str | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(uint8 images, labels) batches of one cell in file order. Image files are decoded in
    DataLoader workers (`workers`, default: up to 4 when the cell has more than two batches);
    arrays are read in this process, one contiguous slice per batch. With a CUDA `device`, JPEG
    files are decoded on the GPU in batches instead (data/decode.py); the images then arrive there."""
    gpu = batch_decoder(source, device)
    if gpu is not None:
        yield from decoded_batches(gpu, len(source), batch_size)
        return
    if workers is None:
        workers = loader_workers(source, None) if len(source) > 2 * batch_size else 0
    if workers > 0:
        yield from make_loader(source, batch_size, workers=workers)
        return
    for start in range(0, len(source), batch_size):
        yield source.__getitems__(np.arange(start, min(start + batch_size, len(source))))


def model_record(meta: dict) -> dict:
    """The result's `model` section: what was evaluated, for any model (a qact checkpoint, a spec, a
    card, an in-memory module) and with the preprocessing that decides what its numbers mean."""
    info = meta["model"]
    path = meta.get("path")
    rec = {
        "name": meta.get("name") or (Path(path).stem if path else info.get("spec") or info["arch"]),
        "checkpoint": path,
        "sha256": sha256_file(path) if path and Path(path).is_file() else None,
        "arch": info["arch"], "act": info.get("act"), "head": info.get("head", "linear"),
        "num_classes": info["num_classes"],
        "spec": info.get("spec"), "weights": info.get("weights"), "weights_sha256": info.get("weights_sha256"),
        "input_size": _list(info.get("input_size") or info.get("arch_kwargs", {}).get("input_size")),
        "resize": info.get("resize"),
        "mean": _list(info.get("mean")), "std": _list(info.get("std")),
        "class_source": info.get("class_source"),
        "outputs": declared_kind(info), "channels": int(info.get("channels") or 3),
    }
    if info.get("preprocessing_source"):  # optional: results written before it load without it
        rec["preprocessing_source"] = dict(info["preprocessing_source"])
    if info.get("backbone"):
        rec["backbone"] = info["backbone"]
    return rec


def _list(v):
    return None if v is None else list(v)


class Preprocess:
    """uint8 (N, 3, H, W) on the device -> the model input `(resize(x) / 255 - mean) / std`.

    With a resize mode the images are interpolated to `size` first (antialiased when shrinking, as
    PIL does); the result stays float (no rounding back to uint8). Without one, an image of another
    size than `size` is exit 3, not a crash inside the model. `channels=1` (a grayscale model) turns
    the uint8 images into Pillow's "L" first; mean and std then hold one value."""

    def __init__(self, mean, std, size: list[int] | None, mode: str | None, device, name: str, channels: int = 3):
        self.mean = torch.as_tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.std = torch.as_tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        if channels not in (1, 3) or {self.mean.numel(), self.std.numel()} - {1, channels}:
            raise UsageError(f"{name}: a {channels}-channel model needs {channels} mean and std value(s), got "
                             f"{self.mean.numel()} and {self.std.numel()}")
        self.size, self.mode, self.device, self.name, self.channels = size, mode, device, name, channels

    def __call__(self, xb: torch.Tensor) -> torch.Tensor:
        x = xb.to(self.device, non_blocking=True)
        if self.channels == 1:
            x = rgb_to_luma(x)
        if self.size and list(x.shape[-2:]) != self.size:
            if not self.mode:
                raise InputError(f"{self.name}: images of {x.shape[-2]}x{x.shape[-1]} among the cell's, but the model "
                                 f"expects {self.size[0]}x{self.size[1]}; resize them first, or give --resize bilinear")
            shrink = x.shape[-2] > self.size[0] or x.shape[-1] > self.size[1]
            x = torch.nn.functional.interpolate(x.float(), size=self.size, mode=self.mode, align_corners=False,
                                                antialias=shrink)
        return (x.float().div_(255.0) - self.mean).div_(self.std)


@torch.inference_mode()
def _predict(model: nn.Module, inputs: Iterable[tuple[torch.Tensor, torch.Tensor]], k: int,
             name: str, outputs: str = "logits", label: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(model(x)) and labels over `inputs`; `outputs` is what the model returns (eval/outputs.py)
    and `label` how its failures name it (default `name`)."""
    probs, labels = [], []
    finite = None
    for x, yb in inputs:
        logits = call_model(model, x, label or name)
        if isinstance(logits, torch.Tensor) and logits.ndim == 2 and logits.shape[1] != k:
            raise OutputWidth(f"{name} returned {tuple(logits.shape)} for a batch of {len(x)} images, expected "
                              f"({len(x)}, {k})", int(logits.shape[1]))
        if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
            got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise InputError(f"{name} returned {got} for a batch of {len(x)} images, expected ({len(x)}, {k}) logits; "
                             "give the model's class count (--num-classes) or make it return one logit per class")
        if not probs:  # the first batch tells probabilities from logits (one device sync per cell)
            check_outputs(logits, outputs, label or name)
        logits = as_logits(logits, outputs)
        ok = torch.isfinite(logits).all()  # checked once per cell: no device sync per batch
        finite = ok if finite is None else finite & ok
        # metrics always use softmax(logits) computed here, never a library's guess
        probs.append(torch.softmax(logits.float(), dim=1).cpu())
        labels.append(yb)
    if finite is not None and not bool(finite):
        raise InputError(f"{name} returned NaN or infinite logits; check its weights and its input normalisation "
                         "(--mean, --std)")
    if not probs:
        return torch.zeros(0, k), torch.zeros(0, dtype=torch.long)
    return torch.cat(probs), torch.cat(labels)


def score_cell(model: nn.Module, cell: Cell, protocol: Protocol, prep: Preprocess, k: int, workers: int | None = None,
               mapping: np.ndarray | None = None, name: str = "model", temperature: float | None = None,
               outputs: str = "logits", label: str | None = None) -> dict:
    source = limited(cell.source, protocol.limit)
    if len(source) == 0:
        raise InputError(f"{cell.source.name or cell.corruption}: cell {cell.corruption} severity {cell.severity} of "
                         f"{protocol.dataset} has no images")

    def inputs(part: ImageSource = source, batch_ids: Iterable[int] | None = None):
        batches = cell_batches(part, protocol.batch_size, workers, prep.device)
        if batch_ids is not None:  # a batch's random draws (QAct's context sample) depend on its cell and place only
            batches = distributed.seed_batches(batches, (protocol.seed, cell.corruption, cell.severity), batch_ids)
        return ((prep(xb), yb) for xb, yb in batches)

    def predict():  # under torchrun each rank predicts its share of the batches and all get every prediction
        return distributed.predict_sharded(lambda part, ids: _predict(model, inputs(part, ids), k, name, outputs, label),
                                           source, protocol.batch_size)

    if protocol.adapt == "bn":
        from ..nn.adapt import adapted

        with torch.no_grad(), adapted(model, (x for x, _ in inputs())):
            probs, labels = predict()
    else:
        probs, labels = predict()
    if mapping is not None:  # the model's output index of each dataset class (classes matched by name)
        labels = torch.from_numpy(mapping)[labels.long()]
    return {"corruption": cell.corruption, "severity": cell.severity, **cell_metrics(probs, labels, temperature)}


def evaluate(model: nn.Module, meta: dict, dataset: Dataset, protocol: Protocol, device: torch.device,
             cells: list[Cell] | None = None, on_cell: Callable[[dict], None] | None = None,
             workers: int | None = None) -> dict:
    """Score `model` on every cell of `dataset` under `protocol`; returns the result document (docs/reference.md, "Result JSON")."""
    protocol.check()
    t0 = time.time()
    cells = cells if cells is not None else dataset.cells(protocol.corruptions, protocol.severities, seed=protocol.seed)
    name = model_name(meta)
    mapping = check_compatible(meta["model"], dataset, cells, name)
    model = eval_mode(model.to(device), name)
    if has_qact(model):
        from ..nn import set_context

        set_context(model, protocol.context)
        if protocol.context == "batch" and protocol.batch_size < MIN_CONTEXT_BATCH:
            warnings.warn(f"--context batch with --batch-size {protocol.batch_size}: each QAct layer's context is only "
                          f"{protocol.batch_size} images (use ≥ {MIN_CONTEXT_BATCH}, or --context stored)", stacklevel=2)
    info = meta["model"]
    prep = Preprocess(info["mean"], info["std"], _expected_size(info), info.get("resize"), device, name,
                      channels=int(info.get("channels") or 3))
    outputs = declared_kind(info)  # what the model returns: logits, probs or log-probs
    results = []
    for cell in cells:
        try:
            row = score_cell(model, cell, protocol, prep, int(info["num_classes"]), workers, mapping, name,
                             temperature=info.get("temperature"),  # post-hoc calibration (train --calibrate)
                             outputs=outputs, label=info.get("spec") or name)
        except OutputWidth as e:  # the first batch: say both counts and what to pass
            raise InputError(f"{e}: {width_mismatch(info, dataset, info.get('spec') or name, e.got)}") from None
        results.append(row)
        if on_cell:
            on_cell(row)
    doc = result_document(meta, protocol, results, time.time() - t0, device)
    doc["protocol"]["data"] = data_identity(cells)  # what was scored, compared by --baseline
    return doc


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
