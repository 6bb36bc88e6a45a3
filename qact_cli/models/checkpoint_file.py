"""The qact checkpoint file (docs/reference.md, "Checkpoints"): a dict of primitives and tensors,
written atomically and read with torch.load(weights_only=True).

This module only serialises: a checkpoint carrying a pickled payload is refused, not executed.
Rebuilding the network a checkpoint describes is `models.load_checkpoint`.
"""

from __future__ import annotations

import pickle
import time
import zipfile
from pathlib import Path

import torch
from torch import nn

from ..errors import InputError, first_line
from ..utils import atomic_path
from ..version import __version__
from .weights import clean_state_dict

FORMAT = "qact-checkpoint"
FORMAT_VERSION = 1


def make_checkpoint(model: nn.Module, model_info: dict, train_info: dict, extra: dict | None = None) -> dict:
    ckpt = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": model_info,
        "train": train_info,
        "provenance": {
            "qact_version": __version__,
            "torch_version": str(torch.__version__),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
        "state_dict": {k: v.detach().cpu() for k, v in clean_state_dict(model.state_dict()).items()},
    }
    ckpt.update(extra or {})
    return ckpt


def save_checkpoint(ckpt: dict, path: str | Path) -> None:
    with atomic_path(path, ".pt") as tmp:
        torch.save(ckpt, tmp)


def load_file(path: Path) -> object:
    """torch.load(weights_only=True) of a file qact wrote (a checkpoint or a training state), with every
    failure (missing, a JSON file, pickled objects, truncation) turned into one clear InputError."""
    if not path.is_file():
        raise InputError(f"checkpoint not found: {path}; check the path, or train one with `qact train ... --out {path}`")
    _refuse_json(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise InputError(f"refusing to load {path}: it contains objects other than tensors and plain data "
                         f"({first_line(e, limit=160)}); only load checkpoints written by qact") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, KeyError, AttributeError) as e:
        raise InputError(f"cannot read checkpoint {path}: the file is truncated or not a torch checkpoint "
                         f"({type(e).__name__}); re-create it with `qact train`") from None
    return ckpt


def read_checkpoint(path: str | Path) -> dict:
    """torch.load(weights_only=True) with every failure turned into one clear InputError."""
    path = Path(path)
    ckpt = load_file(path)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT or "model" not in ckpt:
        raise InputError(f"{path} is not a qact checkpoint (no '{FORMAT}' header); train one with `qact train`")
    info, state = ckpt.get("model"), ckpt.get("state_dict")
    if not isinstance(info, dict) or not all(k in info for k in ("arch", "act", "num_classes")) \
            or not isinstance(state, dict):
        raise InputError(f"{path}: its 'model' section ({type(info).__name__}) or 'state_dict' is missing or damaged; "
                         "re-create the checkpoint with `qact train`")
    if not isinstance(ckpt.get("format_version", 0), int) or isinstance(ckpt.get("format_version"), bool):
        raise InputError(f"{path}: format_version {ckpt.get('format_version')!r} is not an integer; the checkpoint is damaged")
    check_finite(path, state)
    if int(ckpt.get("format_version", 0)) > FORMAT_VERSION:
        raise InputError(f"{path} has checkpoint format {ckpt['format_version']}, newer than this qact "
                         f"({__version__}) reads; upgrade qact")
    return ckpt


def check_finite(path: Path, state_dict: dict) -> None:
    """Refuse NaN/inf weights: they give NaN probabilities, a wrong number or a crash later."""
    bad = next((k for k, v in state_dict.items() if isinstance(v, torch.Tensor) and v.is_floating_point()
                and not bool(torch.isfinite(v).all())), None)
    if bad is not None:
        raise InputError(f"{path}: weight {bad} holds NaN or infinite values (a diverged training?); "
                         "use an earlier checkpoint or train again")


def _refuse_json(path: Path) -> None:
    """A JSON file (a result, most likely) given where a checkpoint belongs: say what it is."""
    with open(path, "rb") as f:
        head = f.read(64).lstrip()
    if not head.startswith(b"{"):
        return
    import json

    try:
        schema = json.loads(path.read_text()).get("schema", "")
    except (ValueError, UnicodeDecodeError, AttributeError):
        schema = ""
    if str(schema).startswith("qact.eval"):
        raise InputError(f"{path} is a qact result JSON, not a checkpoint; put results side by side with "
                         f"`qact compare {path} ...` or gate on it with `qact eval CKPT --baseline {path}`")
    raise InputError(f"{path} is a JSON file, not a torch checkpoint; pass a checkpoint written by `qact train`")
