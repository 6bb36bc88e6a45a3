"""Experiments from a config: train what is missing, evaluate every model on the same cells, compare.

A compare config holds `qact compare`'s own options (the eval dataset and protocol, outputs,
`out_dir`) plus:

    title: "ReLU vs QAct"           # optional
    train:                          # defaults for every model's training (any key of a model below)
      dataset: digits               # default: the clean set behind the eval dataset (gen:X -> X, cifar10c -> cifar10)
      epochs: 5
    models:                         # one column group each, in this order
      - name: lenet-relu            # letters, digits, . _ + -; names the files in out_dir
        arch: lenet                 # train: arch, act, loss, head, epochs, batch_size, lr, augment,
        act: relu                   #   placement, early_stop, context_size, weights, probe_res, seed, dataset
      - name: lenet-relu-bn
        from: lenet-relu            # reuse another model's checkpoint ...
        eval: {adapt: bn}           # ... evaluated differently (adapt, context, batch_size)
      - name: mine
        checkpoint: path/to/mine.pt # an existing MODEL, not trained here: a qact checkpoint, a spec
                                    #   (torchvision:resnet18), a model card (.yaml)
      - name: r18
        model: torchvision:resnet18 # the same, with a card's keys beside it: weights, model_kwargs,
        weights: r18.safetensors    #   num_classes, input_size, resize, mean, std, class_names,
        num_classes: 10             #   trust_model_file
      - name: lenet-relu-lr
        backbone: lenet-relu        # a probe (head: linear|quantile) fitted on a frozen backbone: a model
        head: linear                #   listed before it, a qact checkpoint, a spec or card, or dinov2_vits14
      - name: dino
        arch: dinov2_vits14         # a frozen-backbone probe: skipped (saying why) when its weights are absent
        needs_gpu: true             # skipped (saying why) when the run is on a CPU

Files: `<out_dir>/checkpoints/<name>.pt` (reused while its training settings are unchanged; an
interrupted run resumes), `<out_dir>/results/<name>.json` (reused while checkpoint and protocol are
unchanged).
Relative paths are relative to the working folder, as on the command line.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Callable

from ..errors import InputError, UsageError
from ..eval.options import EvalOptions
from ..options.model import MODEL_FIELDS, model_options
from ..eval.run import EvalJob, Hooks as EvalHooks, is_checkpoint, load, run_jobs
from .experiment_keys import EVAL_OVERRIDE_KEYS, EXPERIMENT_KEYS, MODEL_KEYS, TRAIN_KEYS
from .table import Entry

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
QUICKSTART_OUT = "qact-quickstart"
# the clean training set behind each corrupted evaluation set
CLEAN_OF = {"cifar10c": "cifar10", "cifar100c": "cifar100", "tinyimagenetc": "tinyimagenet"}
# training settings that do not change the trained model (so a checkpoint is reused across them)
NOT_IDENTITY = ("data_root", "download", "resume", "device", "out", "workers")


@dataclass
class ModelSpec:
    name: str
    train: dict = field(default_factory=dict)  # TrainConfig fields, when trained here
    checkpoint: str | None = None  # any MODEL: a qact checkpoint, a spec, a card
    card: dict = field(default_factory=dict)  # the entry's card keys (weights, num_classes, mean, ...)
    source: str | None = None  # `from:` another model
    eval: dict = field(default_factory=dict)
    needs_gpu: bool = False


@dataclass
class Experiment:
    models: list[ModelSpec]
    title: str | None = None
    description: str | None = None
    path: str = ""


def quickstart_path() -> Path:
    """The bundled quickstart config (package data; `sample_configs/quickstart.yaml` is the same file)."""
    return Path(str(resources.files("qact_cli.compare") / "quickstart.yaml"))


def _mapping(value, what: str, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UsageError(f"{what} in {where} must be a mapping of keys to values")
    return {str(k).replace("-", "_"): v for k, v in value.items()}


def _check_keys(d: dict, allowed: set[str], what: str, where: str) -> None:
    unknown = sorted(set(d) - allowed)
    if unknown:
        raise UsageError(f"unknown key {unknown[0]!r} in {what} of {where}; valid keys: {', '.join(sorted(allowed))}")


def parse_experiment(extra: dict, where: str) -> Experiment:
    """Validate the experiment keys of a compare config (unknown keys are a usage error, exit 2)."""
    _check_keys(extra, EXPERIMENT_KEYS, "the experiment", where)
    shared = _mapping(extra.get("train"), "train", where)
    _check_keys(shared, TRAIN_KEYS, "train", where)
    models = extra.get("models") or []
    if not isinstance(models, list):
        raise UsageError(f"models in {where} must be a list of model entries")
    specs: list[ModelSpec] = []
    for k, raw in enumerate(models):
        what = f"models[{k}]"
        m = _mapping(raw, what, where)
        _check_keys(m, MODEL_KEYS, what, where)
        name = str(m.get("name", ""))
        if not NAME_RE.match(name):
            raise UsageError(f"{what} in {where} needs a name of letters, digits, '.', '_', '+', '-' (got {name!r})")
        what = f"model {name!r}"
        if any(s.name == name for s in specs):
            raise UsageError(f"two models are named {name!r} in {where}; names must be unique")
        ev = _mapping(m.get("eval"), f"eval of {what}", where)
        _check_keys(ev, EVAL_OVERRIDE_KEYS, f"eval of {what}", where)
        ways = [key for key in ("arch", "backbone", "checkpoint", "model", "from") if m.get(key)]
        if len(ways) != 1:
            raise UsageError(f"{what} in {where} needs exactly one of arch (train it), backbone (fit a probe on it), "
                             "checkpoint or model (an existing model) or from (another model's checkpoint); it has "
                             f"{', '.join(ways) or 'none'}")
        card = {key: m[key] for key in MODEL_FIELDS if key in m} if ways[0] in ("checkpoint", "model") else {}
        own_train = {key: m[key] for key in TRAIN_KEYS if key in m and key not in card}
        spec = ModelSpec(name, eval=ev, needs_gpu=bool(m.get("needs_gpu", False)))
        if m.get("arch") or m.get("backbone"):
            spec.train = {**shared, **own_train}
        else:
            if own_train:
                raise UsageError(f"{what} in {where} sets training keys ({', '.join(sorted(own_train))}) "
                                 "but is not trained here (it uses checkpoint/model/from)")
            given = m.get("checkpoint") or m.get("model")
            spec.checkpoint = str(given) if given else None
            spec.card = card
            spec.source = str(m["from"]) if m.get("from") else None
            if spec.source and not any(s.name == spec.source for s in specs):
                raise UsageError(f"{what} in {where} takes its checkpoint from {spec.source!r}, "
                                 "which is not a model listed before it")
        specs.append(spec)
    if not specs:
        raise UsageError(f"{where} lists no models; add a `models:` list, or pass result JSONs / checkpoints")
    names = [s.name for s in specs]
    for k, s in enumerate(specs):  # a probe's backbone named in the list must be trained before it
        if s.train.get("backbone") in names[k:]:
            raise UsageError(f"model {s.name!r} in {where} is fitted on {s.train['backbone']!r}, which is not a model "
                             "listed before it; list the backbone first")
    return Experiment(specs, extra.get("title"), extra.get("description"), where)


def train_dataset(spec: ModelSpec, eval_dataset: str | None) -> str:
    if spec.train.get("dataset"):
        return str(spec.train["dataset"])
    d = eval_dataset or ""
    if d.startswith("gen:"):
        return d[4:]
    if d in CLEAN_OF:
        return CLEAN_OF[d]
    raise UsageError(f"model {spec.name!r}: say which dataset to train on (`train: {{dataset: ...}}`); "
                     f"it cannot be inferred from the eval dataset {eval_dataset!r}")


def train_config(spec: ModelSpec, opts: EvalOptions, ckpt: Path):
    from ..training import TrainConfig

    t = dict(spec.train)
    if t.get("backbone"):
        t.setdefault("arch", "probe")  # a probe on the backbone
    context_size = t.pop("context_size", None)
    t["dataset"] = train_dataset(spec, opts.dataset)
    t.setdefault("seed", opts.seed)
    try:
        cfg = TrainConfig(out=str(ckpt), data_root=opts.data_root, download=opts.download, device=opts.device,
                          workers=opts.workers, qact={"context_size": context_size} if context_size is not None else {}, **t)
    except TypeError as e:
        raise UsageError(f"model {spec.name!r}: {e}") from None
    for key, typ in (("epochs", int), ("batch_size", int), ("early_stop", int), ("seed", int), ("lr", float),
                     ("probe_res", int)):
        try:
            setattr(cfg, key, typ(getattr(cfg, key)))
        except (TypeError, ValueError):
            raise UsageError(f"model {spec.name!r}: {key} must be a number, got {getattr(cfg, key)!r}") from None
    return cfg


def _identity(cfg) -> dict:
    """The training settings that determine the model, JSON-normalised (tuples vs lists)."""
    d = {k: v for k, v in asdict(cfg).items() if k not in NOT_IDENTITY}
    return json.loads(json.dumps(d, default=str))


def checkpoint_matches(path: Path, cfg) -> bool:
    """True when `path` holds a finished checkpoint trained with exactly these settings."""
    from ..checkpoint import read_checkpoint

    if not path.is_file():
        return False
    try:
        saved = read_checkpoint(path).get("train", {}).get("config")
    except InputError:
        return False
    return _same_run(saved, cfg)


def _resumable(state: Path, cfg) -> bool:
    from ..checkpoint import read_checkpoint

    try:
        saved = read_checkpoint(state).get("config")
    except InputError:
        return False
    return _same_run(saved, cfg)


def _same_run(saved, cfg) -> bool:
    """Whether a saved training config is `cfg`'s; keys the trainer records beyond TrainConfig's
    (a probe's resolution) do not count."""
    if not isinstance(saved, dict):
        return False
    saved = json.loads(json.dumps(saved, default=str))
    return all(saved.get(k) == v for k, v in _identity(cfg).items())


def unavailable(spec: ModelSpec, opts: EvalOptions) -> str | None:
    """Why a model cannot run here (frozen-backbone weights absent; a GPU-only model on a CPU), else None."""
    arch = str(spec.train.get("backbone") or spec.train.get("arch", ""))
    if arch.startswith("dinov2") and not opts.download:
        from ..probes.model import dinov2_weights_available  # the probe's own resolution: path, else the hub cache

        found, where = dinov2_weights_available(arch, spec.train.get("weights"))
        if not found:
            return f"skipped: no weights at {where}; see README"
    if spec.needs_gpu:
        from ..utils import select_device

        if select_device(opts.device).type == "cpu":
            return ("skipped: needs a GPU (needs_gpu: true in the config; on a CPU it would take far longer than "
                    "the rest); run with --device cuda, or set needs_gpu: false")
    return None


@dataclass
class Hooks:
    """Progress callbacks (the CLI draws bars and prints lines; tests pass nothing)."""

    log: Callable[[str], None] = lambda s: None
    train: Callable[..., dict] | None = None  # (cfg, name) -> train info; default: qact_cli.training.train, silent
    on_start: Callable[[str, int], None] | None = None
    on_cell: Callable[[dict], None] | None = None


def _train(cfg, name: str, hooks: Hooks) -> dict:
    if hooks.train is not None:
        return hooks.train(cfg, name)
    from ..training import train

    return train(cfg)


def prepare_checkpoints(exp: Experiment, opts: EvalOptions, out_dir: Path, hooks: Hooks) -> tuple[dict, dict]:
    """Train what is missing. Returns ({name: checkpoint}, {name: skip reason})."""
    ckpts: dict[str, str] = {}
    skipped: dict[str, str] = {}
    plan = []  # every setting is checked before the first model trains
    for spec in exp.models:
        if spec.checkpoint:
            if not Path(spec.checkpoint).is_file() and ":" not in spec.checkpoint:  # a spec is resolved on loading
                raise InputError(f"checkpoint of model {spec.name!r} not found: {spec.checkpoint} (in {exp.path}); "
                                 "fix the path or train it with `qact train`")
            ckpts[spec.name] = spec.checkpoint
        elif spec.source:
            if spec.source in skipped:
                skipped[spec.name] = skipped[spec.source]
            else:
                ckpts[spec.name] = ckpts[spec.source]
        elif spec.train.get("backbone") in skipped:
            skipped[spec.name] = skipped[spec.train["backbone"]]
        elif reason := unavailable(spec, opts):
            skipped[spec.name] = reason
            hooks.log(f"{spec.name}: {reason}")
        else:
            if spec.train.get("backbone") in ckpts:  # a probe on a model of this experiment: its checkpoint
                spec = replace(spec, train={**spec.train, "backbone": ckpts[spec.train["backbone"]]})
            path = out_dir / "checkpoints" / f"{spec.name}.pt"
            ckpts[spec.name] = str(path)
            plan.append((spec, path, train_config(spec, opts, path)))
    from ..training import validate_config
    from ..probes.backbones import backbone_unchanged

    for spec, _, cfg in plan:  # a typo in the last model fails now, not after the others trained
        try:
            validate_config(cfg)
        except UsageError as e:
            raise UsageError(f"model {spec.name!r} in {exp.path}: {e}") from None
    for n, (spec, path, cfg) in enumerate(plan, 1):
        state = Path(str(path) + ".state")  # present while a training run is unfinished
        if state.is_file():
            cfg.resume = _resumable(state, cfg)
            if not cfg.resume:
                state.unlink()  # left by a run with other settings: start over
        elif checkpoint_matches(path, cfg) and (not cfg.backbone or backbone_unchanged(path)):
            hooks.log(f"[{n}/{len(plan)}] {spec.name}: reusing {path}")
            continue
        what = (f"{cfg.head} probe on {cfg.backbone}, {cfg.dataset}" if cfg.backbone else
                f"{cfg.arch}, {cfg.act}, {cfg.loss} loss, {cfg.head} head, up to {cfg.epochs} epoch"
                f"{'s' if cfg.epochs != 1 else ''} on {cfg.dataset}")
        verb = "resuming" if cfg.resume else "training"
        hooks.log(f"[{n}/{len(plan)}] {spec.name}: {verb} ({what}) -> {path}")
        info = _train(cfg, spec.name, hooks)
        if info and "best_val_acc" in info:
            hooks.log(f"{spec.name}: best validation accuracy {info['best_val_acc']:.4f}")
    return ckpts, skipped


def run_experiment(exp: Experiment, opts: EvalOptions, out_dir: str | Path, hooks: Hooks | None = None) -> list[Entry]:
    """Train what is missing, evaluate every model (reusing unchanged results), return the columns."""
    hooks = hooks or Hooks()
    out_dir = Path(out_dir)
    if not opts.dataset:
        raise UsageError(f"{exp.path} has no eval dataset; add `dataset: gen:digits` (or pass --dataset)")
    ckpts, skipped = prepare_checkpoints(exp, opts, out_dir, hooks)
    specs = [s for s in exp.models if s.name in ckpts]
    cards = {s.name: s.card for s in exp.models}
    for s in specs:  # a `from:` model is evaluated as the model it takes its checkpoint from
        if s.source:
            cards[s.name] = cards[s.source]
    jobs = [EvalJob(ckpts[s.name], name=s.name, model_options=model_options(**cards[s.name]), overrides=dict(s.eval),
                    cache=out_dir / "results" / f"{s.name}.json") for s in specs]
    if any(is_checkpoint(j.model) and j.model_options for j in jobs):
        raise UsageError(f"{exp.path}: card keys (weights, num_classes, mean, ...) describe a model from elsewhere; "
                         "a qact checkpoint records them itself")
    evaluated = run_jobs(jobs, opts, EvalHooks(on_start=hooks.on_start, on_cell=hooks.on_cell, log=hooks.log))
    results = dict(zip([s.name for s in specs], evaluated))
    by_name = {j.name: j for j in jobs}
    entries = []
    for s in exp.models:
        if s.name in skipped:
            entries.append(Entry(s.name, None, skipped=skipped[s.name]))
        else:
            r = results[s.name]
            note = (nothing_to_adapt(by_name[s.name], r["model"].get("num_classes"))
                    if r["protocol"].get("adapt") == "bn" else None)
            entries.append(Entry(s.name, r, source=ckpts[s.name], declared=dict(s.eval), note=note))
    return entries


def nothing_to_adapt(job: EvalJob, classes: int | None = None) -> str | None:
    """`--adapt bn` re-estimates BatchNorm statistics and QAct contexts; say so when a model has neither."""
    from torch.nn.modules.batchnorm import _BatchNorm

    from ..nn.qact import QAct

    model, _ = load(job, "cpu", classes=classes)  # classes: the count the evaluation used
    if any(isinstance(m, (_BatchNorm, QAct)) for m in model.modules()):
        return None
    return "adapt bn changes nothing here: the model has no BatchNorm or QAct layer to re-estimate"
