"""Models from anywhere (docs/reference.md, "Models from elsewhere"): one entry point that turns a
MODEL (a qact checkpoint, a spec string, a model card, or an `nn.Module`) into `(model, meta)`.

`meta` has the layout of a qact checkpoint without its weights: `meta["model"]` always holds
`arch`, `act`, `head`, `num_classes`, `input_size` ([H, W] or None: any size), `resize` (None: the
images must already have `input_size`), `mean`, `std` (3 floats on the 0..1 scale), `classes`
(class names or None) and `class_source`; external models add `spec`, `weights`, `weights_sha256`.
`meta["path"]` is the file the model came from (None for an in-memory module).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..errors import InputError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class ModelOptions:
    """The single-model flags of `qact eval` / `qact compare` and the keys of a model card."""

    weights: str | None = None
    model_kwargs: dict | None = None
    num_classes: int | None = None
    input_size: list[int] | None = None
    resize: str | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    class_names: list[str] | str | None = None
    trust_model_file: bool = False


def resolve_model(model, options: ModelOptions | None = None, device: str | torch.device = "cpu",
                  download: bool = False, backbone_weights: str | None = None) -> tuple[nn.Module, dict]:
    """MODEL -> (model in eval mode on `device`, meta). `backbone_weights` locates a DINOv2 probe's
    frozen backbone (qact probe checkpoints only)."""
    options = options or ModelOptions()
    if isinstance(model, nn.Module):
        info = {"arch": type(model).__name__, "act": None, "head": None, "num_classes": options.num_classes,
                "input_size": options.input_size, "resize": options.resize,
                "mean": list(options.mean or IMAGENET_MEAN), "std": list(options.std or IMAGENET_STD),
                "classes": options.class_names if isinstance(options.class_names, list) else None,
                "class_source": "argument" if options.class_names else None, "spec": "module"}
        if info["num_classes"] is None:
            raise InputError("an nn.Module given without num_classes; pass num_classes=K")
        return model.to(device).eval(), {"model": info, "path": None}
    path = Path(str(model))
    if not path.is_file():
        raise InputError(f"model not found: {model}; give a qact checkpoint, a model card or a spec "
                         "(torchvision:NAME, timm:NAME, package.module:callable)")
    from ..checkpoint import load_model

    net, meta = load_model(path, device, weights=backbone_weights, download=download)
    info = meta["model"]
    info.setdefault("resize", None)
    info.setdefault("class_source", "checkpoint" if info.get("classes") else None)
    return net, meta
