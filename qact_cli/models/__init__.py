"""Models by family, timm style: `build_model(arch, act=..., num_classes=...)` and, from a
checkpoint's `model` section, `rebuild_model(info)`.

Every architecture takes the activation as a parameter and is `head(features(x))`; each family
registers itself with `@register_model` (registry.py). Frozen backbones with a fitted probe
(dinov2_*) register a family too, rebuilt from their checkpoints (see `probe.py`).
"""

from __future__ import annotations

from torch import nn

from ..nn.activations import get_activation
from ..nn.heads import HEADS as HEAD_REGISTRY, split_head
from .dinov2 import ARCHS as DINOV2_ARCHS
from .lenet import LeNet  # the import order is the order `--arch` choices are listed in
from .resnet import ResNet18
from .vgg import VGG
from .densenet import DenseNet
from .registry import MODEL_FAMILIES, ModelFamily, get_model_family, model_names, register_family, register_model

HEADS = tuple(HEAD_REGISTRY.names())  # "quantile" also takes a variant: "quantile:direct_fit" (nn/heads.py)


def _rebuild_probe(info: dict, weights=None, download: bool = False, **overrides) -> nn.Module:
    """A DINOv2 probe from its checkpoint: `weights` and `download` locate the frozen backbone."""
    from .probe import build_probe  # on first use: the probe code is only needed for probe checkpoints

    return build_probe(info, weights=weights, download=download, **overrides)


# the family answers to every name in dinov2.ARCHS, also ones added there later
register_family(ModelFamily("dinov2", DINOV2_ARCHS.keys(), rebuild=_rebuild_probe, frozen_backbone=True))
# a probe on any other frozen backbone (`qact train --backbone SPEC`): a qact network, a model from elsewhere
register_family(ModelFamily("probe", ("probe",), rebuild=_rebuild_probe, frozen_backbone=True))


def build_model(arch: str, act: str = "relu", num_classes: int = 10, head: str = "linear", **arch_kwargs) -> nn.Module:
    """Build `arch` with activation `act`. arch_kwargs: `input_size`, `placement` (resnet18),
    `qact_kwargs` (options passed to every QAct), width/depth options of each architecture."""
    family = get_model_family(arch)
    if family.build is None:
        raise ValueError(f"arch {arch!r} is a probe on a frozen backbone: it is built from its checkpoint "
                         "(qact_cli.checkpoint.load_model), or fitted with `qact train`")
    get_activation(act)
    split_head(head)
    return family.build(num_classes=num_classes, act=act, head=head, **arch_kwargs)


def rebuild_model(info: dict, **overrides) -> nn.Module:
    """Rebuild the architecture a checkpoint's `model` section describes (no weights). `overrides`
    (`weights`, `download`) reach only families with a frozen backbone; others need none."""
    family = get_model_family(info["arch"])
    if family.rebuild is not None:
        return family.rebuild(info, **overrides)
    return build_model(info["arch"], act=info["act"], num_classes=info["num_classes"], head=info.get("head", "linear"),
                       **info.get("arch_kwargs", {}))


__all__ = ["DenseNet", "HEADS", "LeNet", "MODEL_FAMILIES", "ModelFamily", "ResNet18", "VGG", "build_model",
           "get_model_family", "model_names", "rebuild_model", "register_family", "register_model"]
