"""Building a model from a spec string: `torchvision:NAME`, `timm:NAME`, `package.module:callable`
(or `file.py:callable`), and TorchScript / torch.export archives.

Each builder returns `(model, defaults)`: `defaults` holds what the library itself knows about the
model (num_classes, input_size, resize, mean, std, classes and where they came from); the caller lays
explicit options over it. Nothing is downloaded unless `download` is true.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import re
import sys
import warnings
from pathlib import Path

import torch
from torch import nn

from ..errors import InputError, UsageError, first_line
from ..suggest import did_you_mean
from ..utils import sha256_file
from .exported import check_exported_mode
from .weights import read_state_dict

PREFIXES = ("torchvision", "timm")
_CALLABLE = re.compile(r"[A-Za-z_][\w.]*")


# torchvision ---------------------------------------------------------------------------------------

def _torchvision_names() -> list[str]:
    import torchvision.models as tvm

    return tvm.list_models(module=tvm)  # classifiers only (not detection / segmentation / video)


def torchvision_model(name: str, values: dict, download: bool) -> tuple[nn.Module, dict]:
    import torchvision.models as tvm

    names = _torchvision_names()
    if name not in names:
        raise UsageError(f"unknown torchvision model {name!r}{did_you_mean(name, names, several=True)} "
                         "(torchvision.models.list_models() lists them)")
    weights = values.get("weights")
    if weights is None:
        raise UsageError(f"torchvision:{name} needs weights: --weights FILE (.safetensors or a state dict) "
                         "or a torchvision weights name such as DEFAULT or IMAGENET1K_V1")
    if not names_pretrained(values):
        k = values.get("num_classes") or len(values.get("class_names") or []) or 1000
        return _build(lambda: tvm.get_model(name, weights=None, num_classes=k, **values.get("model_kwargs", {})),
                      f"torchvision:{name}"), {"num_classes": k}
    return _torchvision_pretrained(name, weights, values, download)


def _build(make, what: str) -> nn.Module:
    try:
        return make()
    except TypeError as e:
        raise UsageError(f"{what} does not take these arguments ({first_line(e, with_type=True)}); check --model-kwargs") from None
    except (ValueError, RuntimeError) as e:
        raise InputError(f"cannot build {what} ({first_line(e, with_type=True)})") from None


def names_pretrained(values: dict) -> bool:
    """The weights are a torchvision weights enum (DEFAULT, IMAGENET1K_V1...), not a file."""
    weights = values.get("weights")
    return weights is not None and not Path(weights).is_file() and _looks_like_enum(weights)


def _looks_like_enum(weights: str) -> bool:
    from .cards import WEIGHTS_NAME

    return bool(WEIGHTS_NAME.fullmatch(weights))


def _torchvision_pretrained(name: str, weights: str, values: dict, download: bool) -> tuple[nn.Module, dict]:
    import torchvision.models as tvm

    enum = tvm.get_model_weights(name)
    member = weights.rsplit(".", 1)[-1]
    if member not in enum.__members__ or ("." in weights and weights.split(".")[0] != enum.__name__):
        raise UsageError(f"torchvision:{name} has no weights {weights!r}; it has {', '.join(enum.__members__)}")
    w = enum[member]
    categories = list(w.meta.get("categories") or [])
    k = len(categories) or values.get("num_classes") or 1000
    if values.get("num_classes") not in (None, k):
        raise UsageError(f"torchvision weights {w} have {k} classes, not num_classes {values['num_classes']}; "
                         "drop --num-classes or give a weights file")
    path = hub_file(w.url, f"torchvision:{name} --weights {weights}", download)
    # Proven plain tensors first (weights_only=True refuses any pickled object), then built by torchvision's
    # own builder, which also applies what the weights need (input transforms, renamed keys, aux heads).
    read_state_dict(path)
    try:
        model = tvm.get_model(name, weights=w, progress=False, **values.get("model_kwargs", {}))
    except (RuntimeError, ValueError, TypeError, KeyError) as e:
        raise InputError(f"{path}: torchvision cannot load these weights into {name} ({first_line(e, with_type=True)}); "
                         "delete the file and fetch it again with --download") from None
    defaults = {"num_classes": k, "weights": str(w), "weights_path": str(path),
                "classes": categories or None, "class_source": "weights" if categories else None}
    try:
        t = w.transforms()
        crop = list(t.crop_size)
        defaults.update(input_size=crop * 2 if len(crop) == 1 else crop, mean=list(t.mean), std=list(t.std),
                        resize=t.interpolation.value if t.interpolation.value in ("bilinear", "bicubic") else "bilinear",
                        preprocess_source="weights")
    except (AttributeError, TypeError):
        pass
    return model, defaults


def hub_file(url: str, what: str, download: bool) -> Path:
    """The file torch.hub keeps for `url` under $TORCH_HOME/hub/checkpoints; fetched only when asked."""
    from torch.hub import HASH_REGEX, download_url_to_file, get_dir

    path = Path(get_dir()) / "checkpoints" / os.path.basename(url.split("?")[0])
    if path.is_file():
        return path
    if not download:
        raise InputError(f"weights for {what} not found at {path}; fetch them with --download "
                         "(or set TORCH_HOME to where they are)")
    path.parent.mkdir(parents=True, exist_ok=True)
    m = HASH_REGEX.search(path.name)
    try:
        download_url_to_file(url, str(path), hash_prefix=m.group(1) if m else None, progress=True)
    except (OSError, RuntimeError) as e:
        raise InputError(f"cannot download {url} to {path} ({first_line(e, with_type=True)}); check the network or fetch it by hand") from None
    return path


# timm ----------------------------------------------------------------------------------------------

def timm_model(name: str, values: dict) -> tuple[nn.Module, dict]:
    try:
        import timm
    except ImportError:
        raise InputError(f'timm:{name} needs the timm package; install it with: pip install "qact[timm]"') from None
    if not timm.is_model(name):
        close = did_you_mean(name.split('.')[0], timm.list_models(), several=True)
        raise UsageError(f"unknown timm model {name!r}{close} "
                         "(timm.list_models() lists them)")
    if values.get("weights") is None:
        raise UsageError(f"timm:{name} needs --weights FILE (.safetensors or a state dict); qact never fetches timm weights")
    k = values.get("num_classes") or len(values.get("class_names") or [])
    model = _build(lambda: timm.create_model(name, pretrained=False, **({"num_classes": k} if k else {}),
                                             **values.get("model_kwargs", {})), f"timm:{name}")
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    defaults = {"num_classes": k or int(getattr(model, "num_classes", 0) or cfg.get("num_classes") or 0) or None}
    # timm's pretrained config describes timm's own weights: it applies to those only, never to a user's
    # file (a model trained on 32-px images must not be upsampled to 224 px with another mean/std)
    if _is_timm_pretrained_file(cfg, Path(values["weights"])):
        if cfg.get("input_size"):
            defaults["input_size"] = [int(s) for s in cfg["input_size"][-2:]]
        if cfg.get("mean") and cfg.get("std"):
            defaults.update(mean=[float(x) for x in cfg["mean"]], std=[float(x) for x in cfg["std"]])
        if cfg.get("interpolation") in ("bilinear", "bicubic"):
            defaults["resize"] = cfg["interpolation"]
        defaults["preprocess_source"] = "timm pretrained config"
    return model, defaults


def _is_timm_pretrained_file(cfg: dict, weights: Path) -> bool:
    """Whether `weights` is the file timm's pretrained config describes: the Hugging Face hub's copy
    (a `models--timm--NAME.TAG` cache folder) or the release file its `url` names (a hashed name)."""
    hub_id, url = cfg.get("hf_hub_id"), cfg.get("url")
    folder = f"models--{hub_id.replace('/', '--')}" if hub_id else None
    parts = weights.resolve().parts
    return bool(folder and folder in parts) or bool(url and weights.name == os.path.basename(url.split("?")[0]))


# package.module:callable ---------------------------------------------------------------------------

def is_callable_spec(spec: str) -> bool:
    head, sep, tail = spec.partition(":")
    return bool(sep) and bool(_CALLABLE.fullmatch(tail)) and (head.endswith(".py") or bool(_CALLABLE.fullmatch(head)))


def callable_model(spec: str, values: dict) -> tuple[nn.Module, dict]:
    head, _, attr = spec.partition(":")
    module = _import(head)
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UsageError(f"{head} has no attribute {attr!r}{did_you_mean(part, dir(obj), several=True)}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise UsageError(f"{spec}: {attr} is not callable; name a function or class that returns an nn.Module")
    kw = dict(values.get("model_kwargs", {}))
    if values.get("num_classes") and "num_classes" not in kw and _takes_num_classes(obj):
        kw["num_classes"] = values["num_classes"]  # the user's count, or the dataset's (models/class_count.py)
    try:
        model = obj(**kw)
    except Exception as e:  # the user's code: any failure becomes one line naming it
        raise InputError(f"{spec} raised {first_line(e, with_type=True)}; check --model-kwargs and the code") from None
    if not isinstance(model, nn.Module):
        raise InputError(f"{spec} returned {type(model).__name__}, not a torch.nn.Module")
    k = values.get("num_classes") or kw.get("num_classes") or len(values.get("class_names") or []) or _default_k(obj)
    return model, {"num_classes": k}


def _takes_num_classes(obj) -> bool:
    try:
        return "num_classes" in inspect.signature(obj).parameters
    except (TypeError, ValueError):
        return False


def _default_k(obj) -> int | None:
    """The default of the callable's own `num_classes` parameter, when it declares one."""
    try:
        param = inspect.signature(obj).parameters.get("num_classes")
    except (TypeError, ValueError):
        return None
    default = param.default if param is not None else None
    return default if isinstance(default, int) and not isinstance(default, bool) and default > 0 else None


def _import(head: str):
    if head.endswith(".py"):
        path = Path(head)
        if not path.is_file():
            raise InputError(f"model code not found: {path}; check the path in file.py:callable")
        name = f"qact_user_{path.stem}"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as e:  # the user's module
            raise InputError(f"cannot import {path}: {first_line(e, with_type=True)}") from None
        return module
    # as `python script.py` / `python -m` would: modules in the working directory are importable
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(head)
    except ModuleNotFoundError as e:
        top = head.split(".")[0]
        if e.name == top:
            raise UsageError(f"unknown model spec prefix {top!r} (not torchvision, timm or an importable module)"
                             f"{did_you_mean(top, PREFIXES, several=True)}") from None
        raise InputError(f"cannot import {head}: {first_line(e, with_type=True)}") from None
    except Exception as e:  # the user's module
        raise InputError(f"cannot import {head}: {first_line(e, with_type=True)}") from None


# TorchScript / torch.export archives -----------------------------------------------------------------

def archive_model(path: Path, kind: str, trust: bool, device) -> tuple[nn.Module, dict]:
    label = "TorchScript" if kind == "torchscript" else "torch.export"
    if not trust:
        raise InputError(f"{path} is a {label} archive; loading one can run code stored in it, so qact loads it "
                         "only with --trust-model-file (trust_model_file=True); pass it if you trust the file")
    try:
        if kind == "torchscript":
            with warnings.catch_warnings():  # torch deprecates TorchScript; the archive is still the user's
                warnings.simplefilter("ignore", FutureWarning)
                model = torch.jit.load(str(path), map_location=device)
        else:
            model = torch.export.load(str(path)).module()
    except Exception as e:  # loading these formats runs arbitrary stored code: report any failure in one line
        raise InputError(f"cannot load {label} archive {path} ({first_line(e, with_type=True)})") from None
    if kind == "export":
        check_exported_mode(model, str(path))
    return model, {"weights": str(path), "weights_sha256": sha256_file(path)}
