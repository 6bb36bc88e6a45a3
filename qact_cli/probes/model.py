"""Probes: a frozen backbone (backbones.py: DINOv2, a qact network's features, or any model cut at
its penultimate features) + a fitted head, run by `qact eval` like any other checkpoint.

Fitting lives in fit.py (`qact train --backbone SPEC --head linear|quantile`).

The checkpoint holds the head only (a few kB) plus the backbone's identity (`model.backbone`:
how to find it again and its sha256) and, for DINOv2, the `FeatureSpec`; `build_probe` reloads the
backbone (DINOv2 from the hub cache, `--weights`, or the path recorded at training time; the others
from the recorded checkpoint, spec or card, `--weights` pointing at another copy of the file) and
refuses one with another sha256 (exit 3). The model input is `(uint8/255 - mean)/std` at the
dataset's size with the backbone's mean/std (ImageNet's for DINOv2, which `backbone_features`
resizes to the probe resolution inside), so `qact eval` runs it like any other checkpoint.

The backbone is not a registered submodule, so `state_dict()`, `parameters()` and
`load_state_dict(strict=True)` see only the head; `modules()` and `named_buffers()` do include it,
so that `qact eval` sets the context of a QAct backbone's layers (`--context`) and `--adapt bn`
re-estimates (and restores) its BatchNorm statistics.

At eval time a DINOv2 probe caches the features of each batch (`QACT_FEATURE_CACHE=0` turns it
off), keyed by the sha256 of the batch's exact input bytes, the backbone, the spec and the device
type: content-addressed, so never stale. Other backbones are never cached: a QAct network's
features of an image depend on the rest of its batch (the context), and BatchNorm statistics
change under `--adapt bn`.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from torch import nn

from ..errors import InputError, UsageError
from ..models import ModelFamily, register_family
from ..utils import sha256_file
from . import feature_cache
from .backbones import Backbone, DinoBackbone, from_record
from ..models.common import make_head
from ..models.dinov2 import ARCHS as DINOV2_ARCHS, DinoVisionTransformer, FeatureSpec, default_weights_path, load_backbone

IMPL = "qact-dinov2"
DEFAULT_RES = 224


class ProbeModel(nn.Module):
    """A frozen backbone + a trainable head; `forward(x)` takes `(uint8/255 - mean)/std` images.

    `backbone`: a backbones.Backbone (a bare DinoVisionTransformer is wrapped with `spec`)."""

    def __init__(self, backbone: Backbone | DinoVisionTransformer, head: nn.Module, spec: FeatureSpec | None = None,
                 eval_cache: bool = False, cache_dir: str | os.PathLike | None = None):
        super().__init__()
        if isinstance(backbone, DinoVisionTransformer):
            backbone = DinoBackbone(backbone, spec or FeatureSpec())
        self._frozen = (backbone,)  # a tuple hides it from Module's registration (state_dict, children)
        self.head = head
        self.embed_dim = backbone.dim
        # only DINOv2 features are a function of the image alone (no BatchNorm to adapt, no QAct context)
        self.eval_cache = eval_cache and isinstance(backbone, DinoBackbone)
        self.cache_dir = cache_dir

    @property
    def backbone(self) -> Backbone:
        return self._frozen[0]

    @property
    def spec(self) -> FeatureSpec | None:
        return getattr(self.backbone, "spec", None)

    def _apply(self, fn, *args, **kwargs):
        self.backbone.module._apply(fn, *args, **kwargs)
        return super()._apply(fn, *args, **kwargs)

    def named_modules(self, memo=None, prefix: str = "", remove_duplicate: bool = True):
        memo = set() if memo is None else memo
        yield from super().named_modules(memo, prefix, remove_duplicate)
        yield from self.backbone.module.named_modules(memo, f"{prefix}.backbone" if prefix else "backbone",
                                                      remove_duplicate)

    def named_parameters(self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True):
        """The head's only: the backbone is frozen (and not saved)."""
        return self.head.named_parameters(f"{prefix}.head" if prefix else "head", recurse, remove_duplicate)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised images -> (B, embed_dim) frozen features (no grad). A QAct backbone
        sees the whole batch at once: the batch is its context."""
        if self.eval_cache:
            return self._cached_features(x)
        with torch.no_grad():
            return self.backbone.features(x)

    def _cached_features(self, x: torch.Tensor) -> torch.Tensor:
        bb, spec = self.backbone.module, self.spec
        xc = x.detach().to("cpu", torch.float32).contiguous()
        h = hashlib.sha256(f"{tuple(x.shape)}|{x.dtype}".encode())
        h.update(memoryview(xc.numpy()).cast("B"))
        key = f"input/{x.device.type}/{h.hexdigest()}"
        ident = feature_cache._identity(bb, key, spec)
        path = feature_cache.cache_path(bb, key, spec, self.cache_dir)
        feats = feature_cache._load(path, ident)
        if feats is not None and feats.shape == (len(x), self.embed_dim):
            return feats.to(x.device)
        with torch.no_grad():
            feats = self.backbone.features(x)
        try:
            feature_cache._save(path, ident, feats.detach().cpu().clone())
        except OSError:  # a read-only or full cache folder costs speed, never the result
            pass
        return feats

    def forward(self, x: torch.Tensor, return_features: bool = False):
        feats = self.features(x)
        logits = self.head(feats)
        return (logits, feats) if return_features else logits


def _find_weights(info: dict, weights) -> str | os.PathLike | None:
    """`--weights` if given; else the hub cache or the file the probe was trained on, whichever
    holds the recorded sha256 (hub first); else None, and load_backbone names what is missing."""
    if weights is not None:
        return weights
    hub = default_weights_path(info["name"])
    recorded = info.get("weights_path")
    for path in (hub, Path(recorded) if recorded else None):
        if path is not None and path.is_file() and sha256_file(path) == info["weights_sha256"]:
            return path
    return None


def _dinov2_backbone(bb_info: dict, weights, download: bool) -> DinoBackbone:
    try:
        spec = FeatureSpec(**bb_info["spec"])
    except UsageError as e:
        raise InputError(f"probe checkpoint has an invalid preprocessing record ({e})") from None
    name, sha = bb_info["name"], bb_info.get("weights_sha256")
    if sha is None:  # trained on a seeded random init (tests)
        if weights not in (None, "random"):
            raise InputError(f"this probe was trained on a random {name} backbone (seed {bb_info.get('seed')}), "
                             f"not on {weights}; evaluate it without --weights")
        bb = load_backbone(name, "random", seed=int(bb_info.get("seed") or 0))
    else:
        bb = load_backbone(name, _find_weights(bb_info, weights), download=download, expected_sha256=sha)
    if bb.embed_dim != bb_info.get("embed_dim", bb.embed_dim):
        raise InputError(f"probe expects a {bb_info['embed_dim']}-d backbone but {name} has {bb.embed_dim}")
    return DinoBackbone(bb, spec)


def build_probe(info: dict, weights: str | os.PathLike | None = None, device: str | torch.device | None = None,
                download: bool = False) -> ProbeModel:
    """Rebuild a probe from a checkpoint's `model` section (the head's weights are loaded by the caller).

    Refuses (InputError, exit 3) a backbone whose sha256 differs from the recorded one, and a
    weights file for a probe trained on a random DINOv2 backbone.
    """
    bb_info = info["backbone"]
    if bb_info.get("impl", IMPL) == IMPL:
        backbone: Backbone = _dinov2_backbone(bb_info, weights, download)
    else:
        backbone = from_record(bb_info, weights=None if weights is None else str(weights), download=download)
    head = make_head(info["head"], backbone.dim, int(info["num_classes"]))
    cache = os.environ.get("QACT_FEATURE_CACHE", "1").lower() not in ("0", "off", "false", "no")
    model = ProbeModel(backbone, head, eval_cache=cache)
    return model.to(device) if device is not None else model


def dinov2_weights_available(name: str = "dinov2_vits14", weights: str | os.PathLike | None = None) -> tuple[bool, Path | None]:
    """(True, path) when the weights a probe needs are on disk (`weights`, else the hub cache);
    (False, the path looked for) otherwise. `weights="random"` is always available (None path)."""
    if isinstance(weights, str) and weights == "random":
        return True, None
    path = Path(weights).expanduser() if weights is not None else default_weights_path(name)
    return path.is_file(), path


def _rebuild(info: dict, weights=None, download: bool = False, **overrides) -> nn.Module:
    """A probe from its checkpoint's `model` section: `weights` and `download` locate the frozen backbone."""
    return build_probe(info, weights=weights, download=download, **overrides)


# the family answers to every name in dinov2.ARCHS, also ones added there later
register_family(ModelFamily("dinov2", DINOV2_ARCHS.keys(), rebuild=_rebuild, frozen_backbone=True))
# a probe on any other frozen backbone (`qact train --backbone SPEC`): a qact network, a model from elsewhere
register_family(ModelFamily("probe", ("probe",), rebuild=_rebuild, frozen_backbone=True))
