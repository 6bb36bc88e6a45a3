"""Models by family, timm style: `build_model(arch, act=..., num_classes=...)` and, from a
checkpoint's `model` section, `rebuild_model(info)`.

Every architecture takes the activation as a parameter and is `head(features(x))`; each family
registers itself with `@register_model` (registry.py). Probes on frozen backbones (dinov2_*,
probe) are families too, registered by the `qact_cli.probes` package when it is imported.
`load_checkpoint(path)` reads a qact checkpoint (checkpoint_file.py) and rebuilds its network.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import InputError, first_line
from ..nn.activations import get_activation
from ..nn.heads import HEADS as HEAD_REGISTRY, split_head
from .lenet import LeNet  # the import order is the order `--arch` choices are listed in
from .resnet import ResNet18
from .vgg import VGG
from .densenet import DenseNet
from .checkpoint_file import read_checkpoint
from .registry import MODEL_FAMILIES, ModelFamily, get_model_family, model_names, register_family, register_model

HEADS = tuple(HEAD_REGISTRY.names())  # "quantile" also takes a variant: "quantile:direct_fit" (nn/heads.py)


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


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu", **overrides) -> tuple[nn.Module, dict]:
    """Rebuild the model from the checkpoint alone. Returns (model in eval mode, meta without state_dict).
    `overrides` (`weights`, `download`) locate a probe's frozen backbone (rebuild_model)."""
    ckpt = read_checkpoint(path)
    info = ckpt["model"]
    try:
        model = rebuild_model(info, **overrides)
    except (ValueError, TypeError, KeyError) as e:
        raise InputError(f"{path}: cannot rebuild its model ({e}); the checkpoint is damaged or from another qact") from None
    try:
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except (RuntimeError, KeyError) as e:
        raise InputError(f"{path}: weights do not fit the {info.get('arch')} model ({first_line(e)}); "
                         "the checkpoint is damaged or was written by another version") from None
    meta = {k: v for k, v in ckpt.items() if k != "state_dict"}
    meta["path"] = str(path)
    return model.to(device).eval(), meta


__all__ = ["DenseNet", "HEADS", "LeNet", "MODEL_FAMILIES", "ModelFamily", "ResNet18", "VGG", "build_model",
           "get_model_family", "load_checkpoint", "model_names", "rebuild_model", "register_family", "register_model"]
