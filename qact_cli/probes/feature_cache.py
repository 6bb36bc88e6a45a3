"""On-disk cache of frozen-backbone features.

A DINOv2 forward costs ~0.1 s per image on a CPU, so features of a clean split are computed once
and reused. An entry is identified by the backbone (name + weights sha256, or the seed of a random
init), a dataset/split key chosen by the caller (it must change whenever the images do), and the
`FeatureSpec`. Layout: `<root>/<backbone name>/<weights id>/<key slug>-<hash>.pt`, with root
`cache_dir`, else `$QACT_CACHE/features`, else `~/.cache/qact/features`.
Cache what is reused (clean splits); a corrupted cell is a fresh input, so caching it rarely pays.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from qact_cli.models.dinov2 import DinoVisionTransformer, FeatureSpec, backbone_info, extract_features
from qact_cli.utils import output_mode

FORMAT = "qact-features"
FORMAT_VERSION = 1


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    base = os.environ.get("QACT_CACHE")
    return (Path(base).expanduser() if base else Path.home() / ".cache" / "qact") / "features"


def _identity(backbone: DinoVisionTransformer, key: str, spec: FeatureSpec) -> dict:
    return {"backbone": backbone_info(backbone), "key": key, "spec": spec.to_dict()}


def cache_path(
    backbone: DinoVisionTransformer, key: str, spec: FeatureSpec | None = None, cache_dir: str | os.PathLike | None = None
) -> Path:
    spec = spec or FeatureSpec()
    ident = _identity(backbone, key, spec)
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
    weights_id = (backbone.weights_sha256 or "")[:16] or f"random-seed{backbone.seed}"
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", key).strip("_")[:80] or "features"
    return cache_root(cache_dir) / backbone.name / weights_id / f"{slug}-{digest}.pt"


def _load(path: Path, ident: dict) -> torch.Tensor | None:
    """The cached features, or None when absent, unreadable or made for something else."""
    try:
        entry = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        return None
    except Exception:  # a torn or foreign file is just a miss; it gets overwritten
        return None
    if not isinstance(entry, dict) or entry.get("format") != FORMAT or entry.get("identity") != ident:
        return None
    feats = entry.get("features")
    return feats if isinstance(feats, torch.Tensor) else None


def _save(path: Path, ident: dict, feats: torch.Tensor) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(
                {"format": FORMAT, "format_version": FORMAT_VERSION, "identity": ident, "features": feats},
                f,
            )
        os.chmod(tmp, output_mode(path))  # mkstemp makes 0600; a shared cache follows the umask like open() would
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cached_features(
    backbone: DinoVisionTransformer,
    key: str,
    images_fn: Callable[[], object],
    *,
    spec: FeatureSpec | None = None,
    cache_dir: str | os.PathLike | None = None,
    batch_size: int = 64,
    device: str | torch.device | None = None,
    refresh: bool = False,
) -> torch.Tensor:
    """`extract_features(backbone, images_fn(), ...)`, read from / written to the cache.

    `images_fn` is called only on a miss (so loading the images is skipped too); it returns what
    `extract_features` accepts. `key` names the images, e.g. "cifar10/train" or
    "npy:/data/x/test"; `refresh` recomputes and overwrites.
    """
    spec = spec or FeatureSpec()
    ident = _identity(backbone, key, spec)
    path = cache_path(backbone, key, spec, cache_dir)
    if not refresh:
        feats = _load(path, ident)
        if feats is not None:
            return feats
    feats = extract_features(backbone, images_fn(), batch_size=batch_size, device=device, spec=spec)
    _save(path, ident, feats)
    return feats
