"""The one evaluation orchestrator behind `qact eval`, `qact compare` (items and experiments) and
`qact_cli.evaluate()`: load the dataset once, fix the protocol, evaluate every model on the same
cells, reuse stored results when nothing changed, write outputs.

Under torchrun every rank runs it: downloads and model loads happen on each node's first rank
first, each rank predicts its share of every cell's batches, and every rank returns the same
documents (rank 0 alone writes the reusable results).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from .. import distributed
from ..data import get_dataset
from ..data.identity import data_identity
from ..errors import InputError, UsageError
from ..selection import parse_corruptions, parse_severities
from ..utils import seed_everything, write_text_atomic
from ..models.external import resolve_model
from ..models.kinds import is_checkpoint
from ..probes import model as _probe_families  # noqa: F401  (registers the dinov2_* and probe families)
from .comparability import protocol_differences
from .gates import load_result
from .generated_cells import keep_generated
from .options import EvalOptions
from .protocol import Protocol, evaluate, model_record, multi_document

# test-time choices one model of a comparison may make for itself (the data, cells and limit stay shared)
OVERRIDABLE = {"adapt", "context", "batch_size"}


@dataclass
class EvalJob:
    """One model to evaluate: a qact checkpoint path, a spec string, a card path or dict, or an nn.Module."""

    model: Any
    name: str | None = None  # the result's model name (default: the file's stem, else the spec)
    model_options: Any = None  # ModelOptions for a non-checkpoint model (the single-model flags, a card's keys)
    overrides: dict = field(default_factory=dict)  # adapt / context / batch_size for this model only
    cache: Path | None = None  # result JSON to reuse when model and protocol are unchanged, and to write


@dataclass
class Hooks:
    """Progress callbacks; `before(dataset_name, protocol)` runs once the protocol is known and before
    any image is read (a `--baseline` of another protocol then fails fast)."""

    on_start: Callable[[str, int], None] | None = None
    on_cell: Callable[[dict], None] | None = None
    log: Callable[[str], None] = lambda s: None
    before: Callable[[str, Protocol], None] | None = None


def make_protocol(dataset, opts: EvalOptions) -> Protocol:
    if opts.severities is None:  # clean datasets: severity 0; corrupted ones: the clean split (when there) and 1..5
        default = getattr(dataset, "default_severities", None)
        sev = default() if default is not None else ([0, 1, 2, 3, 4, 5] if dataset.corrupted else [0])
    else:
        sev = parse_severities(opts.severities)
    corruptions = opts.corruptions
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
    p = Protocol(dataset.name, names, sev, opts.batch_size, opts.context, opts.adapt, opts.limit, opts.seed)
    p.check()
    return p


def _with_overrides(base: Protocol, job: EvalJob) -> Protocol:
    who = job.name or str(job.model)
    bad = set(job.overrides) - OVERRIDABLE
    if bad:
        raise UsageError(f"{who}: cannot override {', '.join(sorted(bad))} per model; only {', '.join(sorted(OVERRIDABLE))}")
    from .options import coerce

    values = {k: coerce(k, v, f"the eval overrides of {who}") for k, v in job.overrides.items()}
    protocol = replace(base, **values)
    protocol.check()
    return protocol


def load(job: EvalJob, device, download: bool = False, backbone_weights: str | None = None,
         classes: int | None = None):
    """The job's (model, meta); a card (file or dict) is read by the models resolver, `features:` included.
    `classes`: the dataset's class count, the model's when neither the user nor the weights say."""
    model, meta = resolve_model(job.model, job.model_options, device, download=download,
                                backbone_weights=backbone_weights, classes=classes)
    name = job.name or meta.get("name")
    if name and Path(str(name)).is_file():  # a result names a model file by its stem, as `qact train` names runs
        name = Path(str(name)).stem
    meta["name"] = name
    return model, meta


def _cached(job: EvalJob, dataset: str, protocol: Protocol, meta: dict, data: Callable[[], dict]) -> dict | None:
    """The stored result of this model identity (file, spec, weights, preprocessing), protocol and data
    (`data()`: the identity of the cells about to be scored), else None."""
    if job.cache is None or not job.cache.is_file():
        return None
    try:
        results = load_result(job.cache)
    except InputError:
        return None  # unreadable: evaluate again and overwrite it
    r = results[0] if len(results) == 1 else None
    if r is None or r.get("dataset") != dataset:
        return None
    planned = {"dataset": dataset, "protocol": {**protocol.to_json(), "data": data()}}
    if protocol_differences(r, planned, model_classes=False, exact=True):
        return None
    return r if r.get("model") == json.loads(json.dumps(model_record(meta))) else None


def run_jobs(jobs: list[EvalJob], opts: EvalOptions, hooks: Hooks | None = None,
             backbone_weights: str | None = None) -> list[dict]:
    """One result document per job, in order, every model on the same cells.
    `backbone_weights`: a DINOv2 probe's frozen backbone file (default: the hub cache)."""
    hooks = hooks or Hooks()
    opts.check()
    if not jobs:
        return []
    if not opts.dataset:
        raise UsageError(f"{jobs[0].name or jobs[0].model} is a model: give --dataset to evaluate it "
                         "(e.g. --dataset gen:digits)")
    dev = distributed.setup(opts.device)  # under torchrun: this rank's device, process group joined
    seed_everything(opts.seed)
    ds = distributed.main_first(lambda: get_dataset(opts.dataset, opts.data_root, opts.download))  # one download per node
    base = make_protocol(ds, opts)
    protocols = [_with_overrides(base, job) for job in jobs]  # all checked before any evaluation
    if hooks.before:
        hooks.before(ds.name, base)
    cells = None
    identity: dict = {}  # the data identity of the cells, computed once when a stored result is checked

    def data() -> dict:
        if not identity:
            identity.update(data_identity(ds.cells(base.corruptions, base.severities, seed=base.seed)))
        return identity

    results = []
    for job, protocol in zip(jobs, protocols):
        model, meta = distributed.main_first(lambda: load(job, dev, opts.download, backbone_weights, ds.num_classes))
        hit = distributed.from_main(lambda: _cached(job, ds.name, protocol, meta, data))  # every rank takes rank 0's answer
        if hit is not None:
            hooks.log(f"reusing {job.cache} (same model and protocol)")
            results.append(hit)
            continue
        if cells is None:
            cells = ds.cells(base.corruptions, base.severities, seed=base.seed)
            if len(jobs) > 1 or any(p.adapt == "bn" for p in protocols):  # images read more than once
                cells = keep_generated(cells, base.limit)
        if hooks.on_start:
            hooks.on_start(job.name or str(meta.get("path") or meta["model"].get("spec") or job.model), len(cells))
        seed_everything(opts.seed)
        result = evaluate(model, meta, ds, protocol, dev, cells=cells, on_cell=hooks.on_cell, workers=opts.workers)
        if distributed.active():  # the numbers are those of one process; the run's shape is recorded beside them
            result["environment"]["distributed"] = {"world_size": distributed.world_size(),
                                                    "backend": distributed.backend()}
        if job.cache is not None and distributed.is_main():
            write_json(result, str(job.cache))
        results.append(result)
    return results


def plan(models: list, **flags) -> tuple[list[EvalJob], str | None]:
    """Jobs for MODELs given together with the single-model flags, and the backbone weights file.

    The flags describe the one non-checkpoint MODEL among them (several would be ambiguous: exit 2).
    `weights` keeps its meaning for qact DINOv2 probe checkpoints (their frozen backbone's file) and is
    the external model's weights otherwise."""
    from ..options.model import model_options

    external = [m for m in models if not is_checkpoint(m)]
    options = model_options(**flags)
    described = {k for k, v in flags.items() if v is not None and v is not False}
    if described - {"weights"}:
        flags_text = ", ".join("--" + k.replace("_", "-") for k in sorted(described - {"weights"}))
        if not external:
            raise UsageError(f"{flags_text} describe a model from elsewhere (a spec, a card, an archive); the "
                             "models given are qact checkpoints, which record all of this")
    if described and len(external) > 1:
        raise UsageError(f"the single-model flags apply to one non-checkpoint MODEL but {len(external)} are given "
                         f"({', '.join(map(str, external[:3]))}); describe each in a model card (.yaml) instead")
    jobs = [EvalJob(m, model_options=None if is_checkpoint(m) else options) for m in models]
    backbone = flags.get("weights") if len(external) < len(models) else None
    return jobs, backbone


def run_eval(checkpoints: list, dataset: str, data_root=None, download=False, corruptions="common",
             severities: str | None = None, batch_size=256, context="batch", adapt="none", limit=None, seed=0,
             device="auto", workers: int | None = None, on_start: Callable[[str, int], None] | None = None,
             on_cell: Callable[[dict], None] | None = None,
             before: Callable[[str, Protocol], None] | None = None, weights: str | None = None,
             model_options=None) -> list[dict]:
    """`run_jobs` with keyword options: every MODEL in `checkpoints` on the same cells; one result
    document each, in order. `weights`: a DINOv2 probe's backbone weights file; `model_options`
    apply to the non-checkpoint models."""
    opts = EvalOptions.from_values(dict(dataset=dataset, data_root=data_root, download=download,
                                        corruptions=corruptions, severities=severities, batch_size=batch_size,
                                        context=context, adapt=adapt, limit=limit, seed=seed, device=device,
                                        workers=workers), "the eval options")
    jobs = [EvalJob(m, model_options=None if is_checkpoint(m) else model_options) for m in checkpoints]
    return run_jobs(jobs, opts, Hooks(on_start=on_start, on_cell=on_cell, before=before), backbone_weights=weights)


def result_json(results: list[dict]) -> dict:
    return results[0] if len(results) == 1 else multi_document(results)


def write_json(doc: dict, path: str) -> None:
    text = json.dumps(doc, indent=2) + "\n"
    if path == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        write_text_atomic(Path(path), text)
