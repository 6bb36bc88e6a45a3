"""Models from anywhere (docs/reference.md, "Models from elsewhere"): one entry point that turns a
MODEL (a qact checkpoint, a spec string, a model card, or an `nn.Module`) into `(model, meta)`.

`meta` has the layout of a qact checkpoint without its weights: `meta["model"]` always holds
`arch`, `act`, `head`, `num_classes`, `input_size` ([H, W] or None: any size), `resize` (None: the
images must already have `input_size`), `mean`, `std` (3 floats on the 0..1 scale), `classes`
(class names or None) and `class_source`; external models add `spec`, `weights`, `weights_sha256`.
`meta["path"]` is the file the model came from (None for an in-memory module).

External models also record `source` (torchvision, timm, callable, torchscript, export, module),
`preprocess_source` (where input_size/mean/std came from: weights, timm pretrained config, card,
argument or default), `model_kwargs`, `features` (a module name whose output is the penultimate
feature, or None) and `card` (the card file, or None). `meta["name"]` is a short display name.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from ..constants import IMAGENET_MEAN, IMAGENET_MEAN_L, IMAGENET_STD, IMAGENET_STD_L
from ..errors import InputError, UsageError
from ..utils import sha256_file
from ..options.model import ModelOptions, check_channel_values
from ..suggest import did_you_mean
from . import class_count, load_checkpoint, specs
from .cards import check_values, read_card
from .exported import eval_mode
from .input_size import check_input_size
from .kinds import is_card
from .weights import archive_kind, fit_weights, is_safetensors, read_state_dict



SPEC_HELP = "give a qact checkpoint, a model card (.yaml) or a spec (torchvision:NAME, timm:NAME, package.module:callable)"


def resolve_model(model, options: ModelOptions | None = None, device: str | torch.device = "cpu",
                  download: bool = False, backbone_weights: str | None = None,
                  classes: int | None = None) -> tuple[nn.Module, dict]:
    """MODEL -> (model in eval mode on `device`, meta). `backbone_weights` locates a DINOv2 probe's
    frozen backbone (qact probe checkpoints only). Explicit `options` override a card's values.
    `classes`: the dataset's class count, the model's when nothing else says (models/class_count.py)."""
    options = options or ModelOptions()
    given = {k: v for k, v in asdict(options).items() if k != "trust_model_file" and v is not None}
    explicit = check_values(given)
    card = None
    if is_card(model):
        card = read_card(model)
        model, values = card.model, {**card.values, **explicit}
        sources = {k: "argument" if k in explicit else "card" for k in values}
    else:
        values, sources = explicit, {k: "argument" for k in explicit}
    if isinstance(model, nn.Module):  # also a card dict's `model:` in Python
        return _finish(model, {}, values, sources, device, spec="module", source="module", path=None, card=card,
                       classes=classes)
    text = str(model)
    path = Path(text)
    if path.is_file():
        kind = archive_kind(path)
        if kind:
            net, defaults = specs.archive_model(path, kind, options.trust_model_file, device)
            return _finish(net, defaults, values, sources, device, spec=str(path), source=kind, path=path, card=card,
                           classes=classes)
        if is_safetensors(path):
            raise InputError(f"{path} is a weights file, not a model; give the architecture as MODEL "
                             f"(e.g. torchvision:resnet18) and this file as --weights")
        return _qact_checkpoint(path, values, device, download, backbone_weights, card)
    prefix, sep, name = text.partition(":")
    if sep and prefix == "torchvision":
        source, build = "torchvision", lambda v: specs.torchvision_model(name, v, download)
    elif sep and prefix == "timm":
        source, build = "timm", lambda v: specs.timm_model(name, v)
    elif specs.is_callable_spec(text):
        source, build = "callable", lambda v: specs.callable_model(text, v)
    elif sep:
        raise UsageError(f"unknown model spec prefix {prefix!r} in {text}"
                         f"{did_you_mean(prefix, specs.PREFIXES, several=True)}; "
                         + SPEC_HELP)
    else:
        raise InputError(f"model not found: {text}; {SPEC_HELP}")
    pretrained = source == "torchvision" and specs.names_pretrained(values)
    net, defaults = build(values if pretrained else class_count.for_builder(values, classes))
    if "weights_path" not in defaults and values.get("weights") is not None:
        wpath = Path(values["weights"])
        sd = read_state_dict(wpath)
        net, defaults = _head_from_weights(net, defaults, sd, values, classes, build)
        hint = "" if values.get("num_classes") else " (and --num-classes K when it has K outputs)"
        fit_weights(net, sd, wpath, text, hint)
        defaults.update(weights=str(wpath), weights_path=str(wpath))
    if defaults.get("weights_path"):
        defaults["weights_sha256"] = sha256_file(defaults["weights_path"])
    wpath = defaults.pop("weights_path", None)
    return _finish(net, defaults, values, sources, device, spec=text, source=source,
                   path=card.path if card and card.path else wpath, card=card, weights_path=wpath, classes=classes)


def _head_from_weights(net, defaults: dict, sd: dict, values: dict, classes: int | None, build):
    """In an evaluation (the dataset's count known) with no count given: a weights file whose head alone
    has another width is a model of that many classes, built again with it (the dataset check follows)."""
    if not classes or class_count.given_classes(values):
        return net, defaults
    width = class_count.head_width(net, sd, defaults.get("num_classes"))
    if width is None:
        return net, defaults
    net, defaults = build({**values, "num_classes": width})
    return net, {**defaults, "class_count_source": "weights"}


def load_model(spec_or_path, device: str | torch.device = "cpu", download: bool = False, trust_model_file: bool = False,
               backbone_weights: str | None = None, **card_keys) -> tuple[nn.Module, dict]:
    """`qact_cli.load_model("torchvision:resnet18", weights="w.safetensors", num_classes=10)`: any MODEL
    (checkpoint, spec, card path or dict, nn.Module) with card keys as keyword arguments."""
    fields = set(ModelOptions.__dataclass_fields__) - {"trust_model_file"}
    unknown = sorted(set(card_keys) - fields)
    if unknown:
        raise UsageError(f"load_model: unknown argument(s) {', '.join(unknown)}; valid: {', '.join(sorted(fields))}")
    options = ModelOptions(trust_model_file=trust_model_file, **card_keys)
    return resolve_model(spec_or_path, options, device=device, download=download, backbone_weights=backbone_weights)


def _qact_checkpoint(path: Path, values: dict, device, download, backbone_weights, card) -> tuple[nn.Module, dict]:
    features = values.pop("features", None)
    if values:
        raise UsageError(f"{path} is a qact checkpoint, which carries its own weights, classes and preprocessing; "
                         f"drop {', '.join(sorted(values))}")
    net, meta = load_checkpoint(path, device, weights=backbone_weights, download=download)
    info = meta["model"]
    info.setdefault("resize", None)
    info.setdefault("classes", None)
    info.setdefault("class_source", "checkpoint" if info.get("classes") else None)
    info["preprocessing_source"] = dict.fromkeys(PREPROCESSING, "checkpoint")
    if features is not None:
        _check_features(net, features, str(path))
        info["features"] = features
    meta["name"] = str(card.path if card and card.path else path)
    if card:
        info["card"] = str(card.path) if card.path else None
    return net, meta


def _finish(net: nn.Module, defaults: dict, values: dict, sources: dict, device, *, spec: str, source: str,
            path, card, weights_path=None, classes=None) -> tuple[nn.Module, dict]:
    """Lay explicit/card values over the library's defaults, check them, and build meta."""
    k = (values.get("num_classes") or defaults.get("num_classes") or len(values.get("class_names") or [])
         or classes or None)
    if k is None:
        raise UsageError(f"{spec}: the number of classes is unknown; give num_classes (--num-classes K) or "
                         "evaluate it on a dataset")
    k_source = class_count.count_source(values, sources, defaults, classes)
    classes = values.get("class_names", defaults.get("classes"))
    if classes is not None and len(classes) != k:
        raise UsageError(f"{spec}: {len(classes)} class names for a {k}-class model; give one name per output")
    channels = int(values.get("channels") or 3)
    chosen, origin = _preprocessing(values, defaults, sources, spec, channels)
    check_channel_values(channels, chosen["mean"], chosen["std"], spec)
    check_input_size(chosen["input_size"], f"{spec}: input_size")
    if chosen["resize"] and not chosen["input_size"]:
        raise UsageError(f"{spec}: resize {chosen['resize']} needs an input size; give input_size (--input-size H[,W])")
    features = values.get("features")
    if features is not None:
        _check_features(net, features, spec)
    if values.get("class_names") is not None:
        class_source = sources.get("class_names")
    else:
        class_source = defaults.get("class_source") if classes else None
    info = {
        "arch": spec.split(":", 1)[1] if source in ("torchvision", "timm") else type(net).__name__,
        "act": None, "head": None, "num_classes": int(k), "class_count_source": k_source, **chosen,
        "outputs": values.get("outputs") or "logits", "channels": channels,
        "classes": list(classes) if classes is not None else None, "class_source": class_source,
        "spec": spec, "source": source,
        "weights": defaults.get("weights"), "weights_sha256": defaults.get("weights_sha256"),
        "preprocess_source": sources.get("mean") or sources.get("std") or defaults.get("preprocess_source", "default"),
        "preprocessing_source": origin,
        "model_kwargs": values.get("model_kwargs"), "features": features,
        "card": str(card.path) if card and card.path else ("dict" if card else None),
    }
    if weights_path is not None and str(weights_path) != str(info["weights"]):
        info["weights_file"] = str(weights_path)
    net = eval_mode(net.to(device), spec)  # a torch.export module runs as exported (checked: in eval mode)
    name = str(card.path) if card and card.path else spec
    return net, {"model": info, "path": str(path) if path else None, "name": name}


PREPROCESSING = ("input_size", "resize", "mean", "std")


def _preprocessing(values: dict, defaults: dict, sources: dict, spec: str, channels: int = 3) -> tuple[dict, dict]:
    """The model's input size, resize, mean and std, and where each came from: "argument" (a flag or
    a keyword), "card", "weights" (the metadata of the weights given: a torchvision enum's transforms,
    timm's pretrained config with timm's own file) or "default" (any size, no resize, ImageNet's
    mean and std). A model given ImageNet's statistics by default says so (one warning)."""
    chosen, origin = {}, {}
    for key in PREPROCESSING:
        if values.get(key) is not None:
            chosen[key], origin[key] = values[key], sources.get(key, "argument")
        elif defaults.get(key) is not None:
            chosen[key], origin[key] = defaults[key], "weights"
        else:
            chosen[key], origin[key] = None, "default"
    if chosen["mean"] is None or chosen["std"] is None:
        # torchvision's and timm's usual default; for a grayscale model ImageNet's weighted as its images
        # are converted (Pillow's "L", constants.py), never the 3-value RGB default
        mean, std, form = ((IMAGENET_MEAN_L, IMAGENET_STD_L, "M") if channels == 1
                           else (IMAGENET_MEAN, IMAGENET_STD, "R,G,B"))
        chosen["mean"] = chosen["mean"] or list(mean)
        chosen["std"] = chosen["std"] or list(std)
        missing = " and ".join(k for k in ("mean", "std") if origin[k] == "default")
        warnings.warn(f"{spec}: no {missing} from a flag, a card or the weights' metadata; using ImageNet's "
                      f"(mean {_floats(mean)}, std {_floats(std)}); pass --mean {form} --std {form} "
                      "(mean/std in a card) if the model was trained with other statistics", stacklevel=3)
    return chosen, origin


def _floats(values) -> str:
    return ",".join(f"{v:g}" for v in values)


def _check_features(net: nn.Module, features: str, where: str) -> None:
    names = [n for n, _ in net.named_modules() if n]
    if features not in names:
        raise InputError(f"{where}: features {features!r} is not a module of the model"
                         f"{did_you_mean(features, names, several=True)}")
