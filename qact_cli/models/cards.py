"""Model cards (YAML files or dicts naming a MODEL, its weights, preprocessing and classes) and the
validation shared by cards, CLI flags and Python keywords, so every source is checked the same way.

Relative paths in a card (model file, weights, class-names file) are relative to the card's folder;
those given on the command line or in Python are relative to the working directory.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml
from torch import nn

from ..errors import InputError, UsageError, first_line
from .classnames import dataset_class_names, known_datasets
from .kinds import is_card

MODEL_CARD_KEYS = ("model", "weights", "model_kwargs", "num_classes", "input_size", "resize", "mean", "std",
             "class_names", "features")
RESIZE_MODES = ("bilinear", "bicubic")
# a torchvision weights name (DEFAULT, IMAGENET1K_V1, ResNet18_Weights.IMAGENET1K_V1), not a file name
WEIGHTS_NAME = re.compile(r"(\w+\.)?[A-Z][A-Z0-9_]*")


@dataclass
class Card:
    model: object            # the MODEL the card names (spec string, or a path made absolute)
    values: dict             # checked option values (see check_values)
    path: Path | None        # the card file (None for a dict)


def read_card(source) -> Card:
    if isinstance(source, dict):
        data, path, base, where = dict(source), None, Path.cwd(), "model card"
    else:
        path = Path(source)
        if not path.is_file():
            raise InputError(f"model card not found: {path}; check the path")
        try:
            data = yaml.safe_load(path.read_text())
        except (yaml.YAMLError, UnicodeDecodeError, OSError) as e:
            raise InputError(f"cannot read model card {path}: not valid YAML ({first_line(e, limit=120)}); "
                             "fix the file") from None
        base, where = path.resolve().parent, f"model card {path}"
    if not isinstance(data, dict):
        raise InputError(f"{where} must be a mapping with keys {', '.join(MODEL_CARD_KEYS)}")
    unknown = sorted(str(k) for k in data if k not in MODEL_CARD_KEYS)
    if unknown:
        raise UsageError(f"{where}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(MODEL_CARD_KEYS)}")
    model = data.pop("model", None)
    if isinstance(model, nn.Module) and path is None:  # a Python card may carry the module itself
        return Card(model, check_values(data, base, where), None)
    if not isinstance(model, (str, Path)) or not str(model).strip():
        raise UsageError(f"{where} has no `model:` (a checkpoint, torchvision:NAME, timm:NAME or module:callable)")
    model = str(model).strip()
    if is_card(model):
        raise UsageError(f"{where} names another model card ({model}); a card must name the model itself")
    head, sep, tail = model.partition(":")
    if sep and head.endswith(".py"):
        model = f"{_local(head, base)}:{tail}"  # a file.py:callable next to the card
    elif not sep:
        model = str(_local(model, base))  # a checkpoint or archive next to the card
    return Card(model, check_values(data, base, where), path)


def _local(path: str, base: Path) -> Path:
    return Path(path) if Path(path).is_absolute() else base / path


def check_values(values: dict, base: Path | None = None, where: str = "model options") -> dict:
    """Validate and normalise option values (None = not given): input_size -> [H, W], class_names -> list,
    weights -> an existing file's path, else kept as a torchvision weights name or a missing path."""
    base = base or Path.cwd()
    out = {k: v for k, v in values.items() if v is not None}
    if "num_classes" in out:
        out["num_classes"] = _positive_int(out["num_classes"], "num_classes", where)
    if "input_size" in out:
        size = out["input_size"]
        if isinstance(size, str):  # the CLI's H or H,W
            size = [int(p) if p.strip().isdigit() else p for p in size.split(",")]
            size = size * 2 if len(size) == 1 else size
        size = [size, size] if isinstance(size, int) and not isinstance(size, bool) else size
        if not isinstance(size, (list, tuple)) or len(size) != 2:
            raise UsageError(f"{where}: input_size must be one integer or [H, W], got {out['input_size']!r}")
        out["input_size"] = [_positive_int(s, "input_size", where) for s in size]
    if "resize" in out and out["resize"] not in RESIZE_MODES:
        raise UsageError(f"{where}: resize must be one of {', '.join(RESIZE_MODES)}, got {out['resize']!r}")
    for key in ("mean", "std"):
        if key in out:
            out[key] = _three_floats(out[key], key, where)
    if "model_kwargs" in out:
        kw = out["model_kwargs"]
        if isinstance(kw, str):
            try:
                kw = yaml.safe_load(kw)  # JSON is YAML
            except yaml.YAMLError:
                kw = None
        if not isinstance(kw, dict) or not all(isinstance(k, str) for k in kw):
            raise UsageError(f"{where}: model_kwargs must be a mapping of argument names to values, got {out['model_kwargs']!r}")
        out["model_kwargs"] = kw
    if "weights" in out:
        w = str(out["weights"])
        local = _local(w, base)
        out["weights"] = w if (WEIGHTS_NAME.fullmatch(w) and not local.is_file()) else str(local)
    if "class_names" in out:
        out["class_names"] = class_names(out["class_names"], base, where)
    if "features" in out and (not isinstance(out["features"], str) or not out["features"].strip()):
        raise UsageError(f"{where}: features must name a module of the model (e.g. avgpool), got {out['features']!r}")
    k, names = out.get("num_classes"), out.get("class_names")
    if k is not None and names is not None and len(names) != k:
        raise UsageError(f"{where}: {len(names)} class names for num_classes {k}; give one name per class")
    return out


def class_names(value, base: Path, where: str) -> list[str]:
    """A list, a dataset name whose names are known offline, a file with one name a line, or `a,b,c`."""
    if isinstance(value, (list, tuple)):
        names = [str(v) for v in value]
    elif isinstance(value, (str, Path)):
        text = str(value)
        path = _local(text, base)
        known = dataset_class_names(text)
        if path.is_file():
            try:
                names = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
            except (OSError, UnicodeDecodeError) as e:
                raise InputError(f"cannot read class names from {path} ({type(e).__name__}); one name a line, UTF-8") from None
        elif known is not None:
            names = known
        elif "," in text:
            names = [n.strip() for n in text.split(",")]
        else:
            raise UsageError(f"{where}: class_names {text!r} is not a file ({path}), a dataset name "
                             f"({', '.join(known_datasets())}) or a comma-separated list")
    else:
        raise UsageError(f"{where}: class_names must be a list, a file or a dataset name, got {value!r}")
    if not names or any(not n for n in names):
        raise UsageError(f"{where}: class_names holds an empty name; give one non-empty name per class")
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise UsageError(f"{where}: class name {dup!r} appears twice; class names must be unique")
    return names


def _positive_int(v, key: str, where: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, str)) or not str(v).strip().isdigit() or int(v) < 1:
        raise UsageError(f"{where}: {key} must be a positive integer, got {v!r}")
    return int(v)


def _three_floats(v, key: str, where: str) -> list[float]:
    if isinstance(v, str):
        v = v.split(",")
    try:
        vals = [float(x) for x in v]
    except (TypeError, ValueError):
        vals = []
    if len(vals) != 3:
        raise UsageError(f"{where}: {key} must be 3 numbers (R, G, B), got {v!r}")
    if any(not (0.0 <= x <= 1.0) for x in vals) or (key == "std" and any(x == 0 for x in vals)):
        raise UsageError(f"{where}: {key} {vals} must be on the 0..1 scale (e.g. 0.485 not 123.7)"
                         + ("; std must be > 0" if key == "std" else ""))
    return vals
