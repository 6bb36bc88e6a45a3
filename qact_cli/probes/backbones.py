"""Frozen feature extractors for probes: the paper's protocol scores a classifier fitted on a frozen
network's train-set embeddings, not the network end to end (Challa et al., arXiv 2405.11573,
"Last layer"; docs/reference.md, "Probes on any frozen backbone").

A backbone is one of
- DINOv2 (`dinov2_vits14|vitb14|vitl14`): the CLS token after the final norm (models/dinov2.py);
- a qact checkpoint: its network's `features(x)` (every qact model is `head(features(x))`);
- any model from elsewhere (a spec such as `torchvision:resnet18`, `timm:NAME`,
  `pkg.module:callable`, or a model card): its penultimate features, found by this rule:
  the output (flattened) of the module named by the card's `features:` key when there is one;
  else the input (flattened) of the last `nn.Linear` in module order whose output size is the
  model's number of classes (torchvision's `fc`/`classifier[-1]`/`heads.head`, timm's head);
  else exit 3, saying to name the module with `features:` in a card.

`record()` is what a probe checkpoint stores: how to find the backbone again and the sha256 that
identifies it (of the checkpoint file, of the weights file, or of the weights themselves when the
model has no file of its own); `from_record` re-resolves it and refuses any other backbone (exit 3).
"""

from __future__ import annotations

import hashlib
import os
from abc import ABC, abstractmethod
from pathlib import Path

import torch
from torch import nn

from ..errors import InputError, UsageError
from ..models import dinov2
from ..models.checkpoint_file import read_checkpoint
from ..models.external import ModelOptions, resolve_model
from ..models.kinds import is_checkpoint
from ..nn.qact import has_qact
from ..suggest import did_you_mean
from ..utils import sha256_file

FORWARD_CHUNK = 64  # images per DINOv2 call inside forward (bounds memory for large eval batches)
FEATURES_HELP = "name the module whose output is the feature with `features: MODULE` in a model card (.yaml)"
BACKBONE_HELP = ("give a qact checkpoint, dinov2_vits14|vitb14|vitl14, a spec (torchvision:NAME, timm:NAME, "
                 "pkg.module:callable) or a model card (.yaml; `features: MODULE` names its features)")


class _Stop(Exception):
    """Raised by a feature hook: the layers after the features need not run."""


class Backbone(ABC):
    """A frozen feature extractor. `features(x)` takes model inputs `(uint8/255 - mean)/std` (N, 3, H, W)
    and returns (N, dim); `module` is the network (kept in eval mode; the probe moves it)."""

    impl = ""
    batch_dependent = False  # QAct layers: an image's features depend on the rest of its batch

    def __init__(self, module: nn.Module, dim: int):
        self.module, self.dim = module.eval(), int(dim)

    @abstractmethod
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) model inputs -> (N, dim) features, without gradients."""

    @abstractmethod
    def record(self) -> dict:
        """The backbone's identity for the probe checkpoint (spec or path, options, sha256)."""


class DinoBackbone(Backbone):
    impl = "qact-dinov2"

    def __init__(self, module: dinov2.DinoVisionTransformer, spec: dinov2.FeatureSpec):
        super().__init__(module, spec.dim(module.embed_dim))
        self.spec = spec

    def features(self, x: torch.Tensor) -> torch.Tensor:
        parts = [dinov2.backbone_features(self.module, c, self.spec) for c in x.split(FORWARD_CHUNK)]
        return torch.cat(parts) if parts else x.new_empty(0, self.dim)

    def record(self) -> dict:
        return {**dinov2.backbone_info(self.module), "weights_path": self.module.weights_path,
                "spec": self.spec.to_dict()}


class NetBackbone(Backbone):
    """A qact network (`impl` "qact-checkpoint") or a model from elsewhere ("external"), cut at its
    features: `features(x)` of a qact network, else a hook on the module that `where` names."""

    def __init__(self, module: nn.Module, meta: dict, impl: str, where: tuple[str, str] | None, identity: dict):
        self.impl, self.meta, self.where, self.identity = impl, meta, where, identity
        info = meta["model"]
        self.input_size = list(info["input_size"]) if info.get("input_size") else None
        self.resize = info.get("resize")
        self.name = str(meta.get("name") or meta.get("path") or info.get("spec") or info.get("arch"))
        self.batch_dependent = has_qact(module)
        super().__init__(module, 0)
        self.dim = int(identity.get("embed_dim") or 0)  # 0: known once features are computed (training)

    def _fit_size(self, x: torch.Tensor) -> torch.Tensor:
        if not self.input_size or list(x.shape[-2:]) == self.input_size:
            return x
        if not self.resize:
            raise InputError(f"backbone {self.name} expects {self.input_size[0]}x{self.input_size[1]} images but got "
                             f"{x.shape[-2]}x{x.shape[-1]}; use a dataset of its size, or a card with `resize: bilinear`")
        # resizing the normalised input equals normalising the resized one: both maps are affine per channel
        shrink = x.shape[-2] > self.input_size[0] or x.shape[-1] > self.input_size[1]
        return nn.functional.interpolate(x, size=self.input_size, mode=self.resize, align_corners=False, antialias=shrink)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self._fit_size(x)
        if self.where is None:
            return self.module.features(x).flatten(1)
        name, side = self.where
        target = self.module.get_submodule(name)
        box: list = []

        def grab(value):
            box.append(value[0] if isinstance(value, (tuple, list)) else value)
            raise _Stop

        if side == "input":
            handle = target.register_forward_pre_hook(lambda m, args: grab(args))
        else:
            handle = target.register_forward_hook(lambda m, args, out: grab(out))
        try:
            self.module(x)
        except _Stop:
            pass
        finally:
            handle.remove()
        if not box or not isinstance(box[0], torch.Tensor):
            raise InputError(f"backbone {self.name}: module {name!r} did not run on a tensor in forward; {FEATURES_HELP}")
        return box[0].flatten(1)

    def record(self) -> dict:
        feats = None if self.where is None else f"{self.where[1]} of {self.where[0]}"
        return {"impl": self.impl, "name": self.name, **self.identity, "embed_dim": self.dim, "features": feats,
                "batch_dependent": self.batch_dependent}


# ----------------------------------------------------------------------------------------------
# finding the features


def locate_features(net: nn.Module, num_classes: int, features: str | None, where: str) -> tuple[str, str]:
    """(module name, "output" | "input"): where the penultimate features are (see the module doc)."""
    if features:
        return features, "output"
    last = None
    for name, m in net.named_modules():
        if isinstance(m, nn.Linear) and m.out_features == int(num_classes):
            last = name
    if last is None:
        raise InputError(f"{where}: cannot locate its penultimate features (no nn.Linear with {num_classes} outputs); "
                         f"{FEATURES_HELP}")
    return last, "input"


def state_digest(net: nn.Module) -> str:
    """sha256 of a module's weights (names, shapes, dtypes, values): identity without a file."""
    h = hashlib.sha256()
    for k, v in sorted(net.state_dict().items()):
        t = v.detach().cpu().contiguous()
        h.update(f"{k}|{tuple(t.shape)}|{t.dtype}\n".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _absolute(value):
    return str(Path(value).resolve()) if isinstance(value, (str, os.PathLike)) and Path(value).is_file() else value


# ----------------------------------------------------------------------------------------------
# resolving


def backbone_spec(cfg) -> str:
    """The frozen backbone a TrainConfig fits a probe on: `--backbone`, else a dinov2_* `--arch`."""
    return str(cfg.backbone or cfg.arch)


def is_dinov2(spec: str) -> bool:
    return str(spec).startswith("dinov2")


def resolve_backbone(spec: str, weights: str | None = None, download: bool = False, seed: int = 0,
                     res: int = 224, device: str | torch.device = "cpu", options: dict | None = None) -> Backbone:
    """`--backbone SPEC` -> a Backbone. `weights`: DINOv2's weights file (or "random"), or the weights of a
    model from elsewhere; `options`: further card keys of a model from elsewhere."""
    spec = str(spec)
    if spec in dinov2.ARCHS:
        bb = dinov2.load_backbone(spec, weights=weights, download=download, seed=seed)
        return DinoBackbone(bb, dinov2.FeatureSpec(res=res))
    if spec.startswith("dinov2"):
        raise UsageError(f"unknown DINOv2 backbone {spec!r}{did_you_mean(spec, dinov2.ARCHS, several=True)}; "
                         f"choose one of {', '.join(dinov2.ARCHS)}")
    if not Path(spec).is_file() and ":" not in spec:
        raise InputError(f"backbone not found: {spec}; {BACKBONE_HELP}")
    _refuse_probe(spec)
    opts = dict(options or {})
    if weights is not None:
        opts["weights"] = weights
    try:
        net, meta = resolve_model(spec, ModelOptions(**opts), device=device, download=download)
    except InputError as e:  # `qact train` has no --num-classes: a card says it
        hint = "(and --num-classes K when it has K outputs)"
        if hint not in str(e):
            raise
        raise InputError(str(e).replace(hint, "(a backbone with K outputs: give a model card with `model: " + spec
                                        + "`, `weights:` and `num_classes: K` as --backbone)")) from None
    return _wrap(net, meta, spec, opts)


def _refuse_probe(spec: str) -> None:
    """A probe checkpoint as a backbone: refused before its own backbone is looked for."""
    if is_checkpoint(spec) and not spec.endswith((".safetensors",)):
        try:
            rec = read_checkpoint(spec)["model"].get("backbone")
        except InputError:
            return  # not a qact checkpoint: resolve_model says what it is
        if rec:
            raise InputError(f"{spec} is itself a probe; give the backbone it was fitted on "
                             f"({rec.get('path') or rec.get('spec') or rec.get('name')})")


def _wrap(net: nn.Module, meta: dict, spec: str, opts: dict) -> NetBackbone:
    info = meta["model"]
    where_text = str(meta.get("name") or spec)
    if meta.get("format") == "qact-checkpoint":  # a qact network: head(features(x))
        if info.get("backbone"):
            _refuse_probe(str(meta["path"]))
        path = Path(meta["path"]).resolve()
        where = None if not info.get("features") else (info["features"], "output")
        if where is None and not callable(getattr(net, "features", None)):
            where = locate_features(net, info["num_classes"], None, where_text)
        ctx = ((info.get("arch_kwargs") or {}).get("qact_kwargs") or {}).get("context", "batch")
        identity = {"path": str(path), "sha256": sha256_file(path), "sha256_of": "checkpoint",
                    "arch": info.get("arch"), "act": info.get("act"), "context": ctx,
                    "embed_dim": getattr(net, "embed_dim", None) if where is None else None,
                    "train_batch_size": (meta.get("train") or {}).get("batch_size")}
        if info.get("features"):
            identity["card_features"] = info["features"]
        return NetBackbone(net, meta, "qact-checkpoint", where, identity)
    where = locate_features(net, info["num_classes"], info.get("features"), where_text)
    sha = info.get("weights_sha256")
    identity = {"spec": _absolute(spec), "options": {k: _absolute(v) for k, v in opts.items() if v is not None},
                "sha256": sha or state_digest(net), "sha256_of": "weights file" if sha else "weights",
                "arch": info.get("arch"), "input_size": info.get("input_size"), "resize": info.get("resize")}
    return NetBackbone(net, meta, "external", where, identity)


def from_record(record: dict, weights: str | None = None, download: bool = False,
                device: str | torch.device = "cpu") -> NetBackbone:
    """The backbone a probe checkpoint records, found again (`weights`: another place for its file);
    exit 3 when it is missing or is not the same backbone (sha256)."""
    impl, want = record.get("impl"), record.get("sha256")
    if impl == "qact-checkpoint":
        path = Path(weights or record["path"])
        if not path.is_file():
            raise InputError(f"the probe's backbone checkpoint is missing: {path}; give it with --weights PATH, "
                             "or fit the probe again with `qact train --backbone CKPT`")
        got = sha256_file(path)
        if got != want:
            raise InputError(_other(path, got, want))
        net, meta = resolve_model(str(path), device=device, download=download)
        bb = _wrap(net, meta, str(path), {})
    elif impl == "external":
        opts = dict(record.get("options") or {})
        if weights is not None:
            opts["weights"] = weights
        net, meta = resolve_model(record["spec"], ModelOptions(**opts), device=device, download=download)
        bb = _wrap(net, meta, record["spec"], opts)
        got = bb.identity["sha256"]
        if got != want:
            raise InputError(_other(opts.get("weights") or record["spec"], got, want))
    else:
        raise InputError(f"probe backbone implementation {impl!r} is unknown to this qact; fit the probe again")
    bb.dim = bb.dim or int(record.get("embed_dim") or 0)  # a hooked backbone's size is known from its fit
    if record.get("embed_dim") and bb.dim != record["embed_dim"]:
        raise InputError(f"the probe expects {record['embed_dim']}-d features but {bb.name} gives {bb.dim}")
    return bb


def _other(where, got: str, want: str) -> str:
    return (f"{where} is not the backbone this probe was fitted on (sha256 {str(got)[:12]}..., expected "
            f"{str(want)[:12]}...); give the original with --weights PATH, or fit a new probe on it with "
            "`qact train --backbone ...`")


def backbone_unchanged(probe_path) -> bool:
    """False when a probe's recorded backbone file now holds other weights (an experiment then fits the
    probe again instead of reusing it)."""
    try:
        record = read_checkpoint(probe_path)["model"].get("backbone") or {}
    except InputError:
        return False
    path = record.get("path")
    if record.get("impl") != "qact-checkpoint" or not path:
        return True
    return os.path.isfile(path) and sha256_file(path) == record.get("sha256")
