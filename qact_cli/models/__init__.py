"""Model registry: `build_model(arch, act=..., num_classes=...)`, timm style.

Every architecture takes the activation as a parameter and is `head(features(x))`.
Frozen backbones with a fitted probe (dinov2_*) are built from their checkpoints, see `probe.py`.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from ..nn.activations import ACTIVATIONS
from .densenet import DenseNet
from .lenet import LeNet
from .resnet import ResNet18
from .vgg import VGG

MODELS: dict[str, Callable[..., nn.Module]] = {
    "lenet": LeNet,
    "resnet18": ResNet18,
    "vgg11": VGG,
    "densenet": DenseNet,
}
HEADS = ("linear", "quantile")


def build_model(arch: str, act: str = "relu", num_classes: int = 10, head: str = "linear", **arch_kwargs) -> nn.Module:
    """Build `arch` with activation `act`. arch_kwargs: `input_size`, `placement` (resnet18),
    `qact_kwargs` (options passed to every QAct), width/depth options of each architecture."""
    if arch not in MODELS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {', '.join(list(MODELS))}")
    if act not in ACTIVATIONS:
        raise ValueError(f"unknown activation {act!r}; choose one of {', '.join(ACTIVATIONS)}")
    if head.split(":", 1)[0] not in HEADS:
        raise ValueError(f"unknown head {head!r}; choose one of {', '.join(HEADS)}")
    return MODELS[arch](num_classes=num_classes, act=act, head=head, **arch_kwargs)


def list_models() -> list[str]:
    return list(MODELS)
