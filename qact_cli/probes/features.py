"""The training features a probe is fitted on (see fit.py for how each backbone's are computed):
DINOv2's through the on-disk feature cache, a network's in the batches and context it was trained
with."""

from __future__ import annotations

import time

import numpy as np
import torch

from ..data import make_loader
from ..data.identity import source_fingerprint
from ..data.transforms import to_model_input
from ..errors import InputError
from ..nn import set_context
from . import feature_cache
from .backbones import DinoBackbone, NetBackbone


def _image_batches(source, batch_size: int, workers: int):
    for xb, _ in make_loader(source, batch_size, workers=workers):
        yield xb


def labels_of(source) -> np.ndarray:
    """Every label of an ImageSource, as int64 (read in chunks when it holds no `labels` array)."""
    labels = getattr(source, "labels", None)
    if labels is None:
        labels = np.concatenate([source.__getitems__(np.arange(i, min(i + 256, len(source))))[1].numpy()
                                 for i in range(0, len(source), 256)])
    return np.asarray(labels, dtype=np.int64)


def dino_features(bb: DinoBackbone, ds, source, cfg, device, log) -> tuple[torch.Tensor, dict]:
    key = f"{ds.name}/train/{source_fingerprint(source)}"
    module, spec = bb.module, bb.spec
    cached = feature_cache.cache_path(module, key, spec).is_file()
    log(f"{'reading cached' if cached else 'computing'} {module.name} features of {len(source)} training images "
        f"at {spec.res}px on {device}")
    t = time.time()
    feats = feature_cache.cached_features(module, key, lambda: _image_batches(source, cfg.batch_size, cfg.workers),
                                          spec=spec, batch_size=cfg.batch_size, device=device)
    module.cpu()
    if len(feats) != len(source):
        raise InputError(f"feature cache entry for {key} holds {len(feats)} rows for {len(source)} images; "
                         f"delete {feature_cache.cache_path(module, key, spec)} and run again")
    return feats, {"features_cached": cached, "feature_seconds": round(time.time() - t, 2), "res": spec.res,
                   "weights_sha256": module.weights_sha256}


def feature_batches(n: int, batch_size: int, shuffle_seed: int | None) -> list[np.ndarray]:
    """Index batches over n images (a seeded random order when `shuffle_seed` is given). A last batch of
    one joins the previous one: a single image is no context."""
    order = np.random.default_rng(shuffle_seed).permutation(n) if shuffle_seed is not None else np.arange(n)
    chunks = [order[i:i + batch_size] for i in range(0, n, batch_size)]
    if len(chunks) > 1 and len(chunks[-1]) == 1:
        chunks[-2:] = [np.concatenate(chunks[-2:])]
    return [np.sort(c) for c in chunks]


def net_features(bb: NetBackbone, source, mean, std, cfg, device, log) -> tuple[torch.Tensor, dict]:
    t = time.time()
    if bb.batch_dependent:  # the network's training context: its batch size, shuffled batches, see the module doc
        size = int(bb.identity.get("train_batch_size") or cfg.batch_size)
        context = bb.identity.get("context") or "batch"
        set_context(bb.module, context)
        batches = feature_batches(len(source), size, cfg.seed)
    else:
        size, context = cfg.batch_size, None
        batches = feature_batches(len(source), size, None)
    how = f"batches of {size}" + (f", QAct context {context!r}, seeded random order" if context else "")
    log(f"computing {bb.name} features of {len(source)} training images on {device} ({how})")
    bb.module.to(device)
    out = None
    try:
        with torch.no_grad():
            for idx in batches:
                x, _ = source.__getitems__(idx)
                f = bb.features(to_model_input(x.to(device), mean, std)).float().cpu()
                if out is None:
                    out = torch.empty(len(source), f.shape[1])
                out[torch.as_tensor(idx)] = f
    finally:
        bb.module.cpu()
    bb.dim = int(out.shape[1])
    if not bool(torch.isfinite(out).all()):
        raise InputError(f"backbone {bb.name} gives NaN or infinite features on {cfg.dataset}; check its weights "
                         "and preprocessing (mean, std in a card)")
    return out, {"feature_batch_size": size, "feature_order": "seeded random" if context else "file order",
                 "feature_mode": "eval", "feature_context": context, "features_cached": False,
                 "feature_seconds": round(time.time() - t, 2)}
