"""The evaluation options, declared once: what `qact eval`, `qact compare` (items, configs,
experiments) and `qact_cli.evaluate()` accept, with one parser for values from the command line,
from YAML and from Python keywords, and one validator.

`EvalOptions` holds the protocol and run options; `model_options(...)` turns the single-model flags
(`--weights`, `--num-classes`, `--input-size`, `--mean`, ...) into a `ModelOptions` for
`qact_cli.models.external.resolve_model`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path, PurePath
from typing import Any, Mapping

from ..errors import UsageError
from ..suggest import unknown as unknown_name

CHOICES = {"context": ("batch", "stored"), "adapt": ("none", "bn"), "resize": ("bilinear", "bicubic")}
MINIMUM = {"batch_size": 1, "limit": 1, "workers": 0, "num_classes": 1}
FRACTIONS = {"tolerance": "an absolute fraction in [0, 1], e.g. 0.01 for one point",
             "fail_under": "an accuracy fraction in [0, 1], e.g. 0.7"}
# the single-model flags (a model card's keys); they describe one external model, not the protocol
MODEL_FIELDS = ("weights", "model_kwargs", "num_classes", "input_size", "resize", "mean", "std", "class_names",
                "trust_model_file")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


@dataclass
class EvalOptions:
    """Dataset, protocol and run options of one evaluation (defaults: those of `qact eval`).

    `severities=None` is the dataset's default (0-5 on a corrupted set, 0 on a clean one)."""

    dataset: str | None = None
    data_root: str | None = None
    download: bool = False
    corruptions: str = "common"
    severities: str | None = None
    batch_size: int = 256
    context: str = "batch"
    adapt: str = "none"
    limit: int | None = None
    seed: int = 0
    device: str = "auto"
    workers: int | None = None
    tolerance: float = 0.01
    fail_under: float | None = None

    @classmethod
    def from_values(cls, values: Mapping[str, Any], where: str = "the options") -> "EvalOptions":
        """From a mapping (YAML, keywords, CLI parameters); None means the default, unknown keys are exit 2."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise UsageError(f"unknown option {unknown[0]!r} in {where}; valid: {', '.join(sorted(names))}")
        opts = cls(**{k: coerce(k, v, where) for k, v in values.items() if v is not None})
        opts.check()
        return opts

    def check(self) -> None:
        for f in fields(self):
            check_value(f.name, getattr(self, f.name))


_TYPES = {"batch_size": int, "limit": int, "workers": int, "seed": int, "num_classes": int, "download": bool,
          "trust_model_file": bool, "tolerance": float, "fail_under": float}


def coerce(name: str, value, where: str = "the options"):
    """A YAML / keyword value as the option's type: '8' -> 8 for integers, [0, 1] -> '0,1' for
    comma-separated options; anything else that does not fit is a usage error naming the option."""
    if value is None:
        return None
    want = _TYPES.get(name)
    if name in ("corruptions", "severities") and isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    if name in MODEL_FIELDS and want is None:
        return value  # parsed by model_options
    if want is bool:
        if isinstance(value, bool):
            return value
    elif want is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
    elif want is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        try:
            return float(value)
        except (TypeError, ValueError):
            pass
    elif isinstance(value, (str, int, float, PurePath)) and not isinstance(value, bool):
        return str(value)
    kind = {bool: "true or false", int: "an integer", float: "a number"}.get(want, "a string")
    raise UsageError(f"{_flag(name)} in {where} must be {kind}, got {value!r}")


def check_value(name: str, value) -> None:
    """The one validation rule of each option (exit 2 with the flag's name)."""
    if value is None:
        return
    if name in CHOICES and value not in CHOICES[name]:
        raise UsageError(unknown_name(_flag(name), value, CHOICES[name]))
    if name in MINIMUM and value < MINIMUM[name]:
        raise UsageError(f"{_flag(name)} must be ≥ {MINIMUM[name]}, got {value}")
    if name in FRACTIONS and not 0 <= value <= 1:
        raise UsageError(f"{_flag(name)} {value}: expected {FRACTIONS[name]}")


# ----------------------------------------------------------------------------------------- model flags
def _numbers(name: str, value, count: tuple[int, ...], cast=float) -> list:
    parts = value if isinstance(value, (list, tuple)) else str(value).replace(" ", "").split(",")
    try:
        out = [cast(v) for v in parts if v != ""]
    except (TypeError, ValueError):
        out = []
    if len(out) not in count:
        shape = " or ".join({1: "N", 2: "H,W", 3: "R,G,B"}[c] for c in count)
        raise UsageError(f"{_flag(name)} {value!r}: expected {shape}")
    return out


def _mapping(value) -> dict:
    if isinstance(value, Mapping):
        return dict(value)
    import yaml

    try:  # JSON is YAML; YAML also allows `{depth: 18}`
        data = yaml.safe_load(str(value))
    except yaml.YAMLError:
        data = None
    if not isinstance(data, dict):
        raise UsageError(f"--model-kwargs {value!r}: expected a JSON or YAML mapping, e.g. '{json.dumps({'depth': 18})}'")
    return data


def _class_names(value):
    """A list, 'a,b,c', a file with one name a line, or a dataset name (resolved with the model)."""
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    text = str(value)
    path = Path(text)
    if path.is_file():
        names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        if not names:
            raise UsageError(f"--class-names {text}: the file holds no names; write one class name a line")
        return names
    return [v.strip() for v in text.split(",") if v.strip()] if "," in text else text


def model_options(**values):
    """The single-model flags as a `ModelOptions` (None when none is given); values may be CLI strings
    ('224', '0.5,0.5,0.5', 'a,b,c', a JSON mapping) or Python / YAML values."""
    from ..models.external import ModelOptions

    unknown = sorted(set(values) - set(MODEL_FIELDS))
    if unknown:
        raise UsageError(f"unknown model option {unknown[0]!r}; valid: {', '.join(MODEL_FIELDS)}")
    given = {k: v for k, v in values.items() if v is not None and v is not False}
    if not given:
        return None
    out = {}
    for k, v in given.items():
        if k == "input_size":
            size = _numbers(k, v, (1, 2), int)
            out[k] = size * 2 if len(size) == 1 else size
            if min(out[k]) < 1:
                raise UsageError(f"--input-size {v!r}: sizes must be ≥ 1")
        elif k in ("mean", "std"):
            out[k] = _numbers(k, v, (3,))
            if k == "std" and min(out[k]) <= 0:
                raise UsageError(f"--std {v!r}: every value must be > 0")
        elif k == "model_kwargs":
            out[k] = _mapping(v)
        elif k == "class_names":
            out[k] = _class_names(v)
        elif k == "weights":
            out[k] = str(v)
        else:
            out[k] = coerce(k, v, "the model options")
            check_value(k, out[k])
    return ModelOptions(**out)
