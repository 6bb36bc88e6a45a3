"""Evaluate several checkpoints on the same cells, each under the shared protocol plus its own
test-time overrides (`adapt`, `context`, `batch_size`), reusing stored results when nothing changed.

Generated corruptions (`gen:NAME`) are computed once per cell and kept in memory when they fit, so
the second model (and `--adapt bn`'s extra pass) does not corrupt the same images again; the
corruption is seeded per image index, so this changes no number.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..checkpoint import load_model
from ..data import Cell, ImageSource, get_dataset
from ..errors import InputError, UsageError
from ..eval.gates import load_result
from ..eval.protocol import Protocol, evaluate
from ..eval.run import make_protocol, write_json
from ..utils import select_device, seed_everything, sha256_file
from .keys import EVAL_OVERRIDE_KEYS

MATERIALIZE_BYTES = 1 << 30  # keep generated cells in memory up to 1 GiB in all
OVERRIDABLE = EVAL_OVERRIDE_KEYS  # test-time choices a model may make for itself


@dataclass
class EvalOptions:
    """The eval options of `qact compare` (the same as `qact eval`'s)."""

    dataset: str | None = None
    data_root: str | None = None
    download: bool = False
    corruptions: str = "common"
    severities: str | None = None
    batch_size: int = 256
    context: str = "batch"
    adapt: str = "none"
    limit: int | None = None
    seed: int = 0
    device: str = "auto"
    workers: int | None = None


@dataclass
class EvalJob:
    checkpoint: str
    name: str | None = None  # the result's model name (default: the checkpoint's stem)
    overrides: dict = field(default_factory=dict)  # adapt / context / batch_size for this model only
    cache: Path | None = None  # result JSON to reuse when checkpoint and protocol are unchanged, and to write


class _KeptSource(ImageSource):
    """A cell whose images are kept in memory once read: each image is computed at most once."""

    def __init__(self, source: ImageSource):
        self.source = source
        self.num_classes, self.classes, self.name = source.num_classes, source.classes, source.name
        self._pos = np.full(len(source), -1, dtype=np.int64)  # row of image i in the store, -1 until read
        self._x: torch.Tensor | None = None
        self._y: torch.Tensor | None = None

    @property
    def image_size(self):
        return self.source.image_size

    @property
    def labels(self):
        return self.source.labels

    def __len__(self):
        return len(self.source)

    def __getitems__(self, indices):
        idx = np.asarray(indices, dtype=np.int64)
        missing = np.unique(idx[self._pos[idx] < 0])
        if len(missing):
            x, y = self.source.__getitems__(missing)
            start = 0 if self._x is None else len(self._x)
            self._x = x if self._x is None else torch.cat([self._x, x])
            self._y = y if self._y is None else torch.cat([self._y, y])
            self._pos[missing] = np.arange(start, start + len(missing))
        rows = torch.from_numpy(self._pos[idx])
        return self._x[rows], self._y[rows]

    def __getitem__(self, i):
        x, y = self.__getitems__([i])
        return x[0], int(y[0])


def keep_generated(cells: list[Cell], limit: int | None) -> list[Cell]:
    """Wrap generated cells so that each image is corrupted once, when the images used fit in memory."""
    from ..data.corrupted import GeneratedSource

    generated = [c for c in cells if isinstance(c.source, GeneratedSource)]
    used = sum(min(len(c.source), limit or len(c.source)) * 3 * c.source.image_size[0] * c.source.image_size[1]
               for c in generated)
    if not generated or used > MATERIALIZE_BYTES:
        return cells
    return [Cell(c.corruption, c.severity, _KeptSource(c.source)) if isinstance(c.source, GeneratedSource) else c
            for c in cells]


def _cached(job: EvalJob, dataset: str, protocol_json: dict) -> dict | None:
    if job.cache is None or not job.cache.is_file():
        return None
    try:
        results = load_result(job.cache)
    except InputError:
        return None  # unreadable: evaluate again and overwrite it
    r = results[0] if len(results) == 1 else None
    if (r is None or r["dataset"] != dataset or {k: v for k, v in r["protocol"].items() if k != "data"} != protocol_json
            or r["model"].get("sha256") != sha256_file(job.checkpoint) or r["model"].get("name") != job.name):
        return None
    return r


def _with_overrides(base: Protocol, job: EvalJob) -> Protocol:
    who = job.name or job.checkpoint
    bad = set(job.overrides) - OVERRIDABLE
    if bad:
        raise UsageError(f"{who}: cannot override {', '.join(sorted(bad))} per model; only {', '.join(sorted(OVERRIDABLE))}")
    values = dict(job.overrides)
    if "batch_size" in values:
        try:
            values["batch_size"] = int(values["batch_size"])
        except (TypeError, ValueError):
            raise UsageError(f"{who}: batch_size must be an integer, got {values['batch_size']!r}") from None
    values.update({k: str(v) for k, v in values.items() if k != "batch_size"})
    protocol = replace(base, **values)
    protocol.check()
    return protocol


def evaluate_jobs(jobs: list[EvalJob], opts: EvalOptions, on_start: Callable[[str, int], None] | None = None,
                  on_cell: Callable[[dict], None] | None = None, log: Callable[[str], None] = lambda s: None) -> list[dict]:
    """One result document (interface §4) per job, in order."""
    if not jobs:
        return []
    if not opts.dataset:
        raise UsageError(f"{jobs[0].checkpoint} is a checkpoint: give --dataset to evaluate it (e.g. --dataset gen:digits)")
    device = select_device(opts.device)
    ds = get_dataset(opts.dataset, opts.data_root, opts.download)
    base = make_protocol(ds, opts.corruptions, opts.severities, opts.batch_size, opts.context, opts.adapt, opts.limit,
                         opts.seed)
    protocols = [_with_overrides(base, job) for job in jobs]  # all checked before any evaluation
    cells = None
    results = []
    for job, protocol in zip(jobs, protocols):
        hit = _cached(job, ds.name, protocol.to_json())
        if hit is not None:
            log(f"reusing {job.cache} (same checkpoint and protocol)")
            results.append(hit)
            continue
        if cells is None:
            cells = keep_generated(ds.cells(base.corruptions, base.severities, seed=base.seed), base.limit)
        model, meta = load_model(job.checkpoint, device)
        if job.name:
            meta["name"] = job.name
        if on_start:
            on_start(job.name or str(job.checkpoint), len(cells))
        seed_everything(opts.seed)
        result = evaluate(model, meta, ds, protocol, device, cells=cells, on_cell=on_cell, workers=opts.workers)
        if job.cache is not None:
            write_json(result, str(job.cache))
        results.append(result)
    return results
