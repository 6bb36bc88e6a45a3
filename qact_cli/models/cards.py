"""Model cards (YAML files or dicts naming a MODEL, its weights, preprocessing and classes); their
values go through the one parser of the model options (qact_cli/options/model.py), as CLI flags and
Python keywords do.

Relative paths in a card (model file, weights, class-names file) are relative to the card's folder;
those given on the command line or in Python are relative to the working directory.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml
from torch import nn

from ..errors import InputError, UsageError, first_line
from ..options.model import CARD_VALUE_KEYS, WEIGHTS_NAME, parse_model_values  # noqa: F401 (WEIGHTS_NAME: specs.py)
from .kinds import is_card

MODEL_CARD_KEYS = ("model", *CARD_VALUE_KEYS)


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
    """A card's (or explicit) option values, checked by the one parser of the model options; paths are
    relative to `base` (default: the working directory)."""
    return parse_model_values(values, base or Path.cwd(), where)
