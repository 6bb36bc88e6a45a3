"""Reading weights files for models built elsewhere, without ever running a pickle.

`.safetensors` files are read by the safetensors library (plain tensors by construction); anything
else goes through `torch.load(weights_only=True)`, which refuses pickled objects. `fit_weights`
checks the file against the model key by key, so a mismatch names the first keys that differ.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch
from torch import nn

from ..errors import InputError
from .kinds import ARCHIVE_KINDS

SHOWN = 3  # how many differing keys an error message names


def clean_state_dict(state_dict: dict) -> dict:
    """Strip the prefixes DistributedDataParallel (`module.`) and torch.compile (`_orig_mod.`) add."""
    out = {}
    for k, v in state_dict.items():
        for prefix in ("module.", "_orig_mod."):
            while k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    return out


def is_safetensors(path: Path) -> bool:
    """By extension, or by the layout: 8-byte little-endian header length, then a JSON object."""
    if path.suffix == ".safetensors":
        return True
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{" and 2 <= int.from_bytes(head[:8], "little") < path.stat().st_size


def archive_kind(path: Path) -> str | None:
    """'torchscript' or 'export' when `path` is such an archive (these run code while loading), else None."""
    if path.suffix in ARCHIVE_KINDS:
        return ARCHIVE_KINDS[path.suffix]
    if not zipfile.is_zipfile(path):
        return None
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError):
        return None
    # torch.load itself tells a TorchScript zip by its constants.pkl record
    if any(n.rsplit("/", 1)[-1] == "constants.pkl" for n in names):
        return "torchscript"
    if any(n.rsplit("/", 1)[-1] in ("archive_format", "serialized_exported_program.json") for n in names):
        return "export"
    return None


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A weights file -> {name: tensor} with DDP / torch.compile prefixes stripped. A dict holding a
    `state_dict` entry (a Lightning or qact checkpoint) gives that entry."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"weights file not found: {path}; check the path given as weights")
    if is_safetensors(path):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            sd = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as e:
            first = (str(e).strip().splitlines() or ["unreadable"])[0]
            raise InputError(f"cannot read {path}: not a complete .safetensors file ({first[:160]}); "
                             "the file is truncated or damaged, save it again") from None
    else:
        kind = archive_kind(path)
        if kind:
            raise InputError(f"{path} is a {'TorchScript' if kind == 'torchscript' else 'torch.export'} archive, "
                             "not a weights file; give it as the MODEL (with --trust-model-file)")
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            first = (str(e).strip().splitlines() or ["unsafe content"])[0]
            raise InputError(f"refusing to load {path}: it holds pickled objects, not only tensors ({first[:120]}); "
                             "save model.state_dict() (or a .safetensors file) instead") from None
        except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, KeyError, AttributeError) as e:
            raise InputError(f"cannot read weights {path}: truncated or not a torch/safetensors file "
                             f"({type(e).__name__}); save the state dict again") from None
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not sd or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                     for k, v in sd.items()):
        raise InputError(f"{path} is not a state dict (a mapping of names to tensors); "
                         "save model.state_dict() or a .safetensors file")
    return clean_state_dict(sd)


def _differences(model: nn.Module, sd: dict) -> tuple[list[str], list[str], list[str]]:
    own = model.state_dict()
    # BatchNorm fills a missing num_batches_tracked itself (files from older torch or safetensors lack it)
    missing = [k for k in own if k not in sd and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in sd if k not in own]
    shapes = [f"{k} {list(sd[k].shape)} in file vs {list(v.shape)} in model"
              for k, v in own.items() if k in sd and sd[k].shape != v.shape]
    return missing, unexpected, shapes


def _strip_common_prefix(sd: dict) -> dict | None:
    """Lightning saves `self.<attr>.` in front of every key: strip one leading component shared by all keys."""
    heads = {k.split(".", 1)[0] for k in sd}
    if len(heads) != 1 or not all("." in k for k in sd):
        return None
    return {k.split(".", 1)[1]: v for k, v in sd.items()}


def fit_weights(model: nn.Module, sd: dict, path: str | Path, what: str, hint: str = "") -> None:
    """Load `sd` into `model`, exactly: every key present with its shape (else one InputError line)."""
    missing, unexpected, shapes = _differences(model, sd)
    if missing or unexpected or shapes:
        stripped = _strip_common_prefix(sd)
        if stripped is not None and not any(_differences(model, stripped)):
            sd, missing, unexpected, shapes = stripped, [], [], []
    if missing or unexpected or shapes:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape", shapes)):
            if keys:
                more = f" (+{len(keys) - SHOWN} more)" if len(keys) > SHOWN else ""
                parts.append(f"{label} {', '.join(keys[:SHOWN])}{more}")
        raise InputError(f"weights {path} do not fit {what}: {'; '.join(parts)}; "
                         f"give weights saved from this model{hint}")
    model.load_state_dict(sd, strict=False)
