"""Frozen DINOv2 backbones: offline weights, loading, and feature extraction.

The model is our own `DinoVisionTransformer` (vit.py), which loads the official
`<name>_pretrain.pth` state dicts with `strict=True`; torch.hub and timm are not used.
Weights come from an explicit path, else the torch hub cache
`$TORCH_HOME/hub/checkpoints/<name>_pretrain.pth`; the network is touched only with
`download=True`.

Preprocessing (`FeatureSpec`) mirrors DINOv2's classification eval transform
(Resize(224, bicubic) + CenterCrop(224) on PIL images, ImageNet mean/std): PIL's bicubic is
torch's `antialias=True` bicubic (cubic a = -0.5, antialiased when shrinking), so that is the
default; we stay in float and only clamp to [0, 1], so we differ from PIL by its uint8 rounding.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..constants import IMAGENET_MEAN, IMAGENET_STD
from ..errors import InputError, UsageError, first_line
from ..suggest import unknown
from ..utils import select_device, sha256_file
from .vit import DinoVisionTransformer

WEIGHTS_BASE_URL = "https://dl.fbaipublicfiles.com/dinov2"

# name -> (embed_dim, depth, num_heads); all patch 14, mlp_ratio 4, built for 518 px (37×37 grid).
ARCHS: dict[str, tuple[int, int, int]] = {
    "dinov2_vits14": (384, 12, 6),
    "dinov2_vitb14": (768, 12, 12),
    "dinov2_vitl14": (1024, 24, 16),
}

Progress = Callable[[int, int | None], None]  # (bytes done, total bytes or None)


# ----------------------------------------------------------------------------------------------
# weights: location, download, hashing


def weights_url(name: str) -> str:
    return f"{WEIGHTS_BASE_URL}/{name}/{name}_pretrain.pth"


def default_weights_path(name: str) -> Path:
    """Where torch.hub would cache the file (honours TORCH_HOME and XDG_CACHE_HOME like torch)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / f"{name}_pretrain.pth"


def resolve_weights(
    name: str, weights: str | os.PathLike | None, download: bool = False, progress: Progress | None = None
) -> Path:
    """The weights file to load: `weights` if given, else the hub cache (downloaded on request)."""
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise InputError(f"DINOv2 weights file not found: {path}; pass the official {name}_pretrain.pth")
        return path
    path = default_weights_path(name)
    if path.is_file():
        return path
    if not download:
        raise InputError(
            f"DINOv2 weights not found: {path.name} in {path.parent}; run "
            f"`qact train --arch {name} --download ...` to fetch them from {weights_url(name)}, "
            "or pass --weights PATH"
        )
    from qact_cli.data.download import download_url  # resumable, atomic; imported only when needed

    try:
        return download_url(weights_url(name), path, progress=progress)
    except InputError as e:
        raise InputError(
            f"could not download {name} weights to {path}: {e}; run again, or fetch {weights_url(name)} "
            "yourself and pass --weights PATH"
        ) from None


# ----------------------------------------------------------------------------------------------
# building and loading


def _build(name: str) -> DinoVisionTransformer:
    """The architecture on the meta device: shapes only; `_materialize` supplies the tensors."""
    if name not in ARCHS:
        raise UsageError(unknown("DINOv2 backbone", name, ARCHS))
    dim, depth, heads = ARCHS[name]
    with torch.device("meta"):  # no wasted default init (and no draw from the global RNG)
        return DinoVisionTransformer(dim, depth, heads)


def _materialize(model: DinoVisionTransformer, state_dict: dict[str, torch.Tensor]) -> None:
    model.load_state_dict({k: v.to(torch.float32) for k, v in state_dict.items()}, strict=True, assign=True)


def _random_state_dict(model: DinoVisionTransformer, seed: int) -> dict[str, torch.Tensor]:
    # Like the DINOv2 init (normal std 0.02 weights, zero biases, unit norms, LayerScale = the
    # hub's init_values 1.0), drawn from a private generator so the global RNG is untouched.
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, p in model.state_dict().items():
        if key == "cls_token":
            sd[key] = torch.empty(p.shape).normal_(0.0, 1e-6, generator=g)
        elif key == "mask_token" or key.endswith("bias"):
            sd[key] = torch.zeros(p.shape)
        elif key.endswith(("norm1.weight", "norm2.weight", "norm.weight", "gamma")):
            sd[key] = torch.ones(p.shape)
        else:
            sd[key] = torch.empty(p.shape).normal_(0.0, 0.02, generator=g)
    return sd


def _read_state_dict(path: Path, model: torch.nn.Module, name: str) -> dict[str, torch.Tensor]:
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # any failure to unpickle means a truncated or foreign file
        raise InputError(
            f"cannot read DINOv2 weights {path} ({first_line(e, with_type=True, limit=10_000)}): the file is truncated or corrupt; "
            "delete it and download it again (--download), or pass --weights PATH"
        ) from None
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise InputError(f"{path} is not a state dict of tensors; pass the official {name}_pretrain.pth")
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(expected.keys() - sd.keys())
    unexpected = sorted(sd.keys() - expected.keys())
    reshaped = sorted(k for k in expected.keys() & sd.keys() if tuple(sd[k].shape) != expected[k])
    if missing or unexpected or reshaped:
        problems = [
            f"{len(missing)} missing (e.g. {missing[0]})" if missing else "",
            f"{len(unexpected)} unexpected (e.g. {unexpected[0]})" if unexpected else "",
            f"{len(reshaped)} of another shape (e.g. {reshaped[0]} {tuple(sd[reshaped[0]].shape)}, "
            f"expected {expected[reshaped[0]]})" if reshaped else "",
        ]
        raise InputError(
            f"{path} does not hold {name} weights: keys {', '.join(p for p in problems if p)}; "
            f"pass the official {name}_pretrain.pth or the matching --arch"
        )
    return sd


def load_backbone(
    name: str = "dinov2_vits14",
    weights: str | os.PathLike | None = None,
    download: bool = False,
    progress: Progress | None = None,
    *,
    seed: int = 0,
    expected_sha256: str | None = None,
) -> DinoVisionTransformer:
    """Frozen DINOv2 backbone in eval mode, on the CPU.

    weights: a file path; None for the torch hub cache (fetched there when `download`); or
    "random" for a seeded random init (tests). The module carries `.name`, `.embed_dim`,
    `.weights_sha256` (None when random), `.weights_path` and `.seed` (random only).
    `expected_sha256`: refuse (InputError) weights whose sha256 differs, e.g. the one a probe
    checkpoint was trained on.
    """
    model = _build(name)
    if isinstance(weights, str) and weights == "random":
        _materialize(model, _random_state_dict(model, seed))
        sha, path, model.seed = None, None, seed
    else:
        path = resolve_weights(name, weights, download, progress)
        _materialize(model, _read_state_dict(path, model, name))
        sha, model.seed = sha256_file(path, cached=True), None
    if expected_sha256 is not None and sha != expected_sha256:
        raise InputError(
            f"DINOv2 weights {path or 'random'} have sha256 {sha}, but {expected_sha256} was expected "
            "(the checkpoint was trained on other backbone weights); pass the matching --weights"
        )
    model.name = name
    model.weights_sha256 = sha
    model.weights_path = str(path) if path is not None else None
    return model.eval().requires_grad_(False)


def backbone_info(backbone: DinoVisionTransformer) -> dict:
    """JSON-safe identity of a backbone, for checkpoints and caches."""
    return {
        "name": backbone.name,
        "impl": "qact-dinov2",  # official interpolation: bicubic pos-embed, offset 0.1, no antialias
        "weights_sha256": backbone.weights_sha256,
        "seed": backbone.seed,
        "embed_dim": backbone.embed_dim,
    }


# ----------------------------------------------------------------------------------------------
# preprocessing and features


@dataclass(frozen=True)
class FeatureSpec:
    """How images become features; `to_dict()` is JSON-safe and round-trips via `FeatureSpec(**d)`."""

    res: int = 224  # square input side, a multiple of 14
    interpolation: str = "bicubic"
    antialias: bool = True  # PIL-style bicubic, as in the official eval transform
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    feature: str = "cls"  # "cls": CLS token after the final norm; "cls+avgpool": cat with mean patch token

    def __post_init__(self) -> None:
        if self.res <= 0 or self.res % 14:
            raise UsageError(f"DINOv2 input resolution must be a positive multiple of 14, got {self.res}")
        if self.interpolation not in ("bicubic", "bilinear"):
            raise UsageError(f"unknown resize interpolation {self.interpolation!r}; choose bicubic or bilinear")
        if self.feature not in ("cls", "cls+avgpool"):
            raise UsageError(f"unknown DINOv2 feature {self.feature!r}; choose cls or cls+avgpool")
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def dim(self, embed_dim: int) -> int:
        return embed_dim * (2 if self.feature == "cls+avgpool" else 1)


def resize_normalized(x: torch.Tensor, spec: FeatureSpec) -> torch.Tensor:
    """Normalised float (B, 3, H, W) at any size -> (B, 3, res, res), as `preprocess` would.

    For models whose input is already `(uint8/255 - mean)/std` at the dataset's size (a probe
    checkpoint): resampling weights sum to 1, so resizing commutes with the per-channel
    normalisation, and the clamp to [0, 1] becomes a clamp to [-mean/std, (1-mean)/std].
    Resize(res) on the shorter side then centre crop, i.e. a plain resize for square images.
    """
    h, w = x.shape[-2:]
    r = spec.res
    if (h, w) == (r, r):
        return x
    # torchvision Resize(int): the short side becomes r, the long side int(r * long / short).
    size = (r, int(r * w / h)) if h <= w else (int(r * h / w), r)
    x = F.interpolate(x, size=size, mode=spec.interpolation, align_corners=False, antialias=spec.antialias)
    top, left = int(round((size[0] - r) / 2.0)), int(round((size[1] - r) / 2.0))
    mean, std = _stats(spec, x.device)
    return torch.clamp(x[..., top : top + r, left : left + r], min=-mean / std, max=(1 - mean) / std)


def preprocess(images: torch.Tensor, spec: FeatureSpec) -> torch.Tensor:
    """uint8 (B, C, H, W), C in {1, 3} -> normalised float (B, 3, res, res)."""
    x = images.float().div_(255)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    mean, std = _stats(spec, x.device)
    return resize_normalized((x - mean) / std, spec)


def _stats(spec: FeatureSpec, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    mean = torch.tensor(spec.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, device=device).view(1, 3, 1, 1)
    return mean, std


def backbone_features(backbone: DinoVisionTransformer, x: torch.Tensor, spec: FeatureSpec) -> torch.Tensor:
    """Normalised float images (B, 3, H, W), any size -> features (B, spec.dim(embed_dim)).

    No grad handling here: call it under `torch.no_grad()`/`inference_mode()` for a frozen probe.
    """
    tokens = backbone.forward_tokens(resize_normalized(x, spec))
    if spec.feature == "cls":
        return tokens[:, 0]
    return torch.cat([tokens[:, 0], tokens[:, 1:].mean(1)], dim=1)


def _as_nchw_uint8(batch) -> torch.Tensor:
    if isinstance(batch, np.ndarray):
        batch = np.ascontiguousarray(batch)
        if not batch.flags.writeable:  # e.g. a read-only memory map; torch.from_numpy wants writable
            batch = batch.copy()
        batch = torch.from_numpy(batch)
        if batch.ndim == 4 and batch.shape[-1] in (1, 3) and batch.shape[1] not in (1, 3):
            batch = batch.permute(0, 3, 1, 2)  # numpy images are (N, H, W, C)
    if not isinstance(batch, torch.Tensor):
        raise TypeError(f"expected a uint8 tensor or array of images, got {type(batch).__name__}")
    if batch.ndim == 3:
        batch = batch.unsqueeze(1)  # (N, H, W) grayscale
    if batch.dtype != torch.uint8 or batch.ndim != 4 or batch.shape[1] not in (1, 3):
        raise ValueError(f"expected uint8 images (N, 3, H, W), got {batch.dtype} {tuple(batch.shape)}")
    return batch


def _batches(images, batch_size: int) -> Iterable[torch.Tensor]:
    chunks = [images] if isinstance(images, (torch.Tensor, np.ndarray)) else images
    for chunk in chunks:
        for i in range(0, len(chunk), batch_size):
            yield _as_nchw_uint8(chunk[i : i + batch_size])


def extract_features(
    backbone: DinoVisionTransformer,
    images,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    spec: FeatureSpec | None = None,
    progress: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Frozen features, float32 (N, spec.dim(embed_dim)) on the CPU.

    images: uint8 (N, 3, H, W) tensor (also (N, H, W, 3) numpy or grayscale), or an iterable of
    such batches (streamed, so a dataset never needs to be in memory). Runs on `device` (None or
    "auto": CUDA if present); the backbone is moved there. `progress(n_done)` after each batch.
    """
    spec = spec or FeatureSpec()
    dev = select_device("auto" if device is None else str(device))
    backbone.to(dev).eval()
    out = []
    with torch.inference_mode():
        for batch in _batches(images, batch_size):
            feats = backbone_features(backbone, preprocess(batch.to(dev, non_blocking=True), spec), spec)
            out.append(feats.float().cpu())
            if progress is not None:
                progress(sum(len(f) for f in out))
    # Built outside inference mode so callers can train a head on the result (inference tensors
    # cannot be saved for backward).
    if not out:
        return torch.empty(0, spec.dim(backbone.embed_dim))
    return torch.cat(out)
