"""Model family registry: each family registers itself with `@register_model("name")`, as in timm.

A family knows how to build a model from flags (`build`, for `qact train`) and how to rebuild one
from a checkpoint's `model` section (`rebuild`, for `load_model`). Families whose models are
fitted on a frozen backbone (DINOv2 probes) have no `build`; they are only rebuilt from their
checkpoints, and `qact train` fits them with the probe trainer.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass

from torch import nn

from ..registry import Registry, UnknownName
from ..suggest import unknown


@dataclass(frozen=True)
class ModelFamily:
    name: str
    archs: Collection[str]  # the `--arch` names the family answers to (a live mapping's keys may grow)
    build: Callable[..., nn.Module] | None = None  # (num_classes=, act=, head=, **arch_kwargs) -> model
    rebuild: Callable[..., nn.Module] | None = None  # (model section, **overrides) -> model; None: `build` from it
    frozen_backbone: bool = False  # a probe on a frozen backbone: fitted on cached features, not trained end to end


# keyed by family name; a family answers to one or several arch names (dinov2_vits14, dinov2_vitb14, ...)
MODEL_FAMILIES: Registry[ModelFamily] = Registry("model family")


def register_family(family: ModelFamily) -> ModelFamily:
    taken = [a for a in family.archs if any(a in f.archs for _, f in MODEL_FAMILIES.items())]
    if taken:
        raise ValueError(f"arch {taken[0]!r} is already registered by another model family")
    return MODEL_FAMILIES.add(family.name, family)


def register_model(name: str, *, rebuild: Callable[..., nn.Module] | None = None):
    """Decorator for a model class (or builder) taking `num_classes`, `act`, `head` and its own keywords:
    registers the family `name` with one arch of the same name."""

    def add(build):
        register_family(ModelFamily(name, (name,), build=build, rebuild=rebuild))
        return build

    return add


def get_model_family(arch: str | ModelFamily | Callable[..., nn.Module], what: str = "arch") -> ModelFamily:
    """The family for an arch name, a registered model class, or a ModelFamily (returned as is).
    Unknown names raise UnknownName (a UsageError and a ValueError) with a did-you-mean; `what`
    names the value in that message (`--arch` for the CLI)."""
    if isinstance(arch, ModelFamily):
        return arch
    if isinstance(arch, str):
        family = next((f for _, f in MODEL_FAMILIES.items() if arch in f.archs), None)
        if family is None:
            raise UnknownName(unknown(what, arch, model_names()))
        return family
    family = next((f for _, f in MODEL_FAMILIES.items() if f.build is arch), None)
    if family is None:
        raise UnknownName(f"{arch!r} is not a registered model family; register it with @register_model(\"name\")")
    return family


def model_names() -> list[str]:
    """Every registered arch name, in registration order."""
    return [arch for _, f in MODEL_FAMILIES.items() for arch in f.archs]
