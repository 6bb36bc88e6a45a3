"""The single-model options, declared and parsed once: the flags of `qact eval` / `qact compare`
that describe one model from elsewhere, the keys of a model card (qact_cli/models/cards.py) and the
keywords of `qact_cli.evaluate` / `qact_cli.load_model`, all read by `parse_model_values`.

Relative paths in a card (weights, class-names file) are relative to the card's folder; those given
on the command line or in Python are relative to the working directory.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ..errors import InputError, UsageError
from .schema import check_value, flag_of, option

RESIZE_MODES = ("bilinear", "bicubic")
OUTPUT_KINDS = ("logits", "probs", "log-probs")  # what a model returns (eval/outputs.py)
CHANNELS = (1, 3)
# a torchvision weights name (DEFAULT, IMAGENET1K_V1, ResNet18_Weights.IMAGENET1K_V1), not a file name
WEIGHTS_NAME = re.compile(r"(\w+\.)?[A-Z][A-Z0-9_]*")


@dataclass
class ModelOptions:
    """The single-model flags of `qact eval` / `qact compare` and the keys of a model card."""

    weights: str | None = option("--weights", None, "The model's weights (.safetensors or a state dict; torchvision: "
                                 "also DEFAULT, IMAGENET1K_V1...). For qact DINOv2 probes: the backbone's weights file.")
    model_kwargs: dict | None = option("--model-kwargs", None, "JSON or YAML mapping of keyword arguments for the "
                                       "model's builder.", cli_type=str | None)
    num_classes: int | None = option("--num-classes", None, "The model's number of outputs (classes).")
    input_size: list[int] | None = option("--input-size", None, "H[,W]: the image size the model expects.",
                                          cli_type=str | None)
    resize: str | None = option("--resize", None, "bilinear|bicubic: resize images to --input-size on the device "
                                "(default: they must have it).", choices=RESIZE_MODES)
    mean: list[float] | None = option("--mean", None, "R,G,B normalisation mean on the 0..1 scale, one value with "
                                      "--channels 1 (default: ImageNet's, or the weights').", cli_type=str | None)
    std: list[float] | None = option("--std", None, "R,G,B normalisation std on the 0..1 scale, one value with "
                                     "--channels 1.", cli_type=str | None)
    class_names: list[str] | str | None = option("--class-names", None, "FILE (one name a line) or a,b,c: the "
                                                 "model's classes, matched by name to the dataset's.",
                                                 cli_type=str | None)
    outputs: str | None = option("--outputs", None, "What the model returns: logits (default), probs (it ends in "
                                 "softmax) or log-probs (log_softmax).", choices=OUTPUT_KINDS)
    channels: int | None = option("--channels", None, "1 for a grayscale model (images converted as Pillow's \"L\", "
                                  "one --mean/--std value), 3 (default) for RGB.", choices=CHANNELS)
    trust_model_file: bool = option("--trust-model-file", False, "Allow TorchScript (.ts) and torch.export (.pt2) "
                                    "files, which can run code while loading.")
    features: str | None = field(default=None)  # a card key: the module whose output is the penultimate feature

    def given(self) -> dict:
        """The values set (trust_model_file aside, which is a permission, not a description)."""
        return {k: v for k, v in asdict(self).items() if k != "trust_model_file" and v is not None}


# the single-model flags (a model card's keys beside `model:` and `features:`)
MODEL_FIELDS = tuple(f.name for f in fields(ModelOptions) if "flag" in f.metadata)
CARD_VALUE_KEYS = tuple(f.name for f in fields(ModelOptions) if f.name != "trust_model_file")


def model_options(**values) -> ModelOptions | None:
    """The single-model flags or keywords as a `ModelOptions` (None when none is given); values may be
    CLI strings ('224', '0.5,0.5,0.5', 'a,b,c', a JSON mapping) or Python / YAML values."""
    unknown = sorted(set(values) - set(MODEL_FIELDS))
    if unknown:
        raise UsageError(f"unknown model option {unknown[0]!r}; valid: {', '.join(MODEL_FIELDS)}")
    given = {k: v for k, v in values.items() if v is not None and v is not False}
    if not given:
        return None
    trust = given.pop("trust_model_file", False)
    if not isinstance(trust, bool):
        raise UsageError(f"--trust-model-file must be true or false, got {trust!r}")
    return ModelOptions(trust_model_file=trust, **parse_model_values(given, None, "the model options"))


def parse_model_values(values: dict, base: Path | None = None, where: str = "model options") -> dict:
    """Validate and normalise option values (None = not given): input_size -> [H, W], class_names -> list,
    model_kwargs -> dict. With a `base` folder (a card's), relative paths are resolved against it and
    `weights` becomes an existing file's path, else stays a torchvision weights name or a missing path."""
    out = {k: v for k, v in values.items() if v is not None}
    if "num_classes" in out:
        out["num_classes"] = _positive_int(out["num_classes"], "num_classes", where)
    if "input_size" in out:
        out["input_size"] = _size(out["input_size"], where)
    if "channels" in out and isinstance(out["channels"], str) and out["channels"].strip().isdigit():
        out["channels"] = int(out["channels"])  # a YAML / keyword "1"
    for f in fields(ModelOptions):  # the declared rules (choices, minimum) of every option
        spec = f.metadata.get("flag")
        if f.name in out and spec is not None and (spec.choices or spec.minimum is not None):
            try:
                check_value(f, out[f.name])
            except UsageError as e:
                raise UsageError(f"{where}: {e}") from None
    for key in ("mean", "std"):
        if key in out:
            out[key] = _channel_floats(out[key], key, where, out.get("channels"))
    if "model_kwargs" in out:
        out["model_kwargs"] = _mapping(out["model_kwargs"], where)
    if "weights" in out:
        w = str(out["weights"])
        local = _local(w, base)
        out["weights"] = w if (base is None or (WEIGHTS_NAME.fullmatch(w) and not local.is_file())) else str(local)
    if "class_names" in out:
        out["class_names"] = class_names(out["class_names"], base, where)
    if "features" in out and (not isinstance(out["features"], str) or not out["features"].strip()):
        raise UsageError(f"{where}: features must name a module of the model (e.g. avgpool), got {out['features']!r}")
    k, names = out.get("num_classes"), out.get("class_names")
    if k is not None and names is not None and len(names) != k:
        raise UsageError(f"{where}: {len(names)} class names for num_classes {k}; give one name per class")
    return out


def _local(path: str, base: Path | None) -> Path:
    return Path(path) if base is None or Path(path).is_absolute() else base / path


def _size(size, where: str) -> list[int]:
    given = size
    if isinstance(size, str):  # the CLI's H or H,W
        size = [int(p) if p.strip().isdigit() else p for p in size.split(",")]
        size = size * 2 if len(size) == 1 else size
    size = [size, size] if isinstance(size, int) and not isinstance(size, bool) else size
    if not isinstance(size, (list, tuple)) or len(size) != 2:
        raise UsageError(f"{where}: input_size ({flag_of('input_size')}) must be one integer or [H, W], got {given!r}")
    return [_positive_int(s, "input_size", where) for s in size]


def _mapping(kw, where: str) -> dict:
    given = kw
    if isinstance(kw, str):
        import yaml

        try:
            kw = yaml.safe_load(kw)  # JSON is YAML; YAML also allows `{depth: 18}`
        except yaml.YAMLError:
            kw = None
    if not isinstance(kw, dict) or not all(isinstance(k, str) for k in kw):
        raise UsageError(f"{where}: model_kwargs ({flag_of('model_kwargs')}) must be a mapping of argument names "
                         f"to values, e.g. '{{\"depth\": 18}}', got {given!r}")
    return dict(kw)


def class_names(value, base: Path | None, where: str) -> list[str]:
    """A list, a dataset name whose names are known offline, a file with one name a line, or `a,b,c`."""
    from ..models.classnames import dataset_class_names, known_datasets

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
        raise UsageError(f"{where}: {key} ({flag_of(key)}) must be a positive integer, got {v!r}")
    return int(v)


def check_channel_values(channels: int | None, mean, std, where: str) -> None:
    """mean and std hold one value per channel: 3 (R, G, B), or 1 for a 1-channel model (exit 2)."""
    n = channels or 3
    for key, vals in (("mean", mean), ("std", std)):
        if vals is not None and len(vals) != n:
            raise UsageError(f"{where}: {key} ({flag_of(key)}) has {len(vals)} value(s) but the model takes {n} "
                             f"channel(s) ({flag_of('channels')} {n}); give {_count_text(n)}")


def _count_text(n: int) -> str:
    return "3 numbers (R, G, B)" if n == 3 else "1 number (grey)"


def _channel_floats(v, key: str, where: str, channels: int | None) -> list[float]:
    """3 values (R, G, B), or 1 with channels 1; with channels unknown here (a card may say it) 1 or 3,
    checked against the model's channels once all sources are merged (check_channel_values)."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        v = [v]
    if isinstance(v, str):
        v = v.split(",")
    try:
        vals = [float(x) for x in v]
    except (TypeError, ValueError):
        vals = []
    counts = (channels,) if channels else (3, 1)
    if len(vals) not in counts:
        wanted = _count_text(channels) if channels else "3 numbers (R, G, B), or 1 with --channels 1"
        raise UsageError(f"{where}: {key} ({flag_of(key)}) must be {wanted}, got {v!r}")
    if any(not (0.0 <= x <= 1.0) for x in vals) or (key == "std" and any(x == 0 for x in vals)):
        raise UsageError(f"{where}: {key} {vals} must be on the 0..1 scale (e.g. 0.485 not 123.7)"
                         + ("; std must be > 0" if key == "std" else ""))
    return vals
