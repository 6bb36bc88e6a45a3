"""Probes on a frozen DINOv2 backbone: `qact train --arch dinov2_vits14 --head linear|quantile`.

The backbone stays frozen; only a head is fitted on its features of the training split, which
are cached on disk (feature_cache.py) under the weights' sha256, the dataset's content and the
preprocessing, so a second run does not recompute them.

- `--head linear` follows DINOv2's logistic-regression eval (`dinov2/eval/log_regression.py`;
  ecosystem.md §3.5): L2-regularised multinomial logistic regression (L-BFGS, max_iter 1000,
  float64) on the raw CLS token, no standardisation, C chosen on a held-out split by accuracy,
  ties to the smaller C. DINOv2 sweeps 45 values 10^-6..10^5 (0.25-decade steps); we walk the
  same grid coarse to fine: up the decades, each fit warm-started from the previous one, until
  three decades in a row bring no better validation accuracy, then ±0.25/0.5/0.75 decade around
  the best one (at most 18 fits). The held-out split is our 80:20 validation split (seed 42).
  Unlike DINOv2 we do *not* refit on train+val: every model in a qact comparison then sees the
  same 80 % of the training set, and `best_val_acc` stays a held-out figure.
- `--head quantile`: the paper's quantile classifier (nn/heads.py) trained on the features with
  Adam (`--lr`, `--epochs`, `--batch-size`), ReduceLROnPlateau and early stopping as in train.py,
  best epoch on validation.

The checkpoint (interface §5) holds the head only (a few kB) plus the backbone's identity (name,
weights sha256 or random seed) and the `FeatureSpec`; `build_probe` reloads the backbone from the
hub cache, `--weights`, or the path recorded at training time, and refuses weights with another
sha256 (exit 3). The model input is `(uint8/255 - mean)/std` at the dataset's size with ImageNet
mean/std, which `backbone_features` resizes to the probe resolution inside, so `qact eval` runs
it like any other checkpoint. `act` is recorded as "none": the probe itself has no activation
(the backbone's GELUs are fixed).

At eval time the features of each batch are cached too (`QACT_FEATURE_CACHE=0` turns it off),
keyed by the sha256 of the batch's exact input bytes, the backbone, the spec and the device
type: content-addressed, so never stale, and a second eval of the same cells (another probe on
the same backbone, a CI re-run) skips the backbone. Each entry is batch × 384 float32 (1.5 kB
an image: a full CIFAR-10-C grid is ~1.2 GB under `$QACT_CACHE/features`).
"""

from __future__ import annotations

import copy
import hashlib
import os
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..errors import InputError, UsageError
from ..suggest import unknown
from . import feature_cache
from .common import make_head
from .dinov2 import (
    DinoVisionTransformer,
    FeatureSpec,
    backbone_features,
    backbone_info,
    default_weights_path,
    load_backbone,
    sha256_file,
)

IMPL = "qact-dinov2"
DEFAULT_RES = 224
C_COARSE = [10.0**p for p in range(-6, 6)]  # every decade of DINOv2's 10^-6..10^5 sweep
C_REFINE = (-0.75, -0.5, -0.25, 0.25, 0.5, 0.75)  # decades around the best coarse C: DINOv2's 0.25 step
C_RANGE = (1e-6, 1e5)
C_PATIENCE = 3  # stop walking up the decades after this many without a better validation accuracy
LOGREG_MAX_ITER = 1000
SMALL_PROBLEM = 4_000_000  # features x samples below which the fit runs on one thread
LOGREG_TOL = 1e-6  # DINOv2 (cuML) uses 1e-12; scikit-learn's L-BFGS then always runs to max_iter
FORWARD_CHUNK = 64  # images per backbone call inside forward (bounds memory for large eval batches)


# ----------------------------------------------------------------------------------------------
# the model


class ProbeModel(nn.Module):
    """A frozen backbone + a trainable head; `forward(x)` takes `(uint8/255 - mean)/std` images.

    The backbone is deliberately not a submodule: `state_dict()`, `parameters()` and
    `load_state_dict(strict=True)` see only the head (a checkpoint never holds the 88 MB
    backbone), while `.to()`/`.cuda()` still move it (`_apply`).
    """

    def __init__(self, backbone: DinoVisionTransformer, head: nn.Module, spec: FeatureSpec,
                 eval_cache: bool = False, cache_dir: str | os.PathLike | None = None):
        super().__init__()
        self._frozen = (backbone,)  # a tuple hides it from Module's registration
        self.head = head
        self.spec = spec
        self.embed_dim = spec.dim(backbone.embed_dim)
        self.eval_cache = eval_cache
        self.cache_dir = cache_dir

    @property
    def backbone(self) -> DinoVisionTransformer:
        return self._frozen[0]

    def _apply(self, fn, *args, **kwargs):
        self.backbone._apply(fn, *args, **kwargs)
        return super()._apply(fn, *args, **kwargs)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised images -> (B, embed_dim) frozen features (no grad)."""
        if self.eval_cache:
            return self._cached_features(x)
        return self._compute_features(x)

    def _compute_features(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            parts = [backbone_features(self.backbone, c, self.spec) for c in x.split(FORWARD_CHUNK)]
        return torch.cat(parts) if parts else x.new_empty(0, self.embed_dim)

    def _cached_features(self, x: torch.Tensor) -> torch.Tensor:
        xc = x.detach().to("cpu", torch.float32).contiguous()
        h = hashlib.sha256(f"{tuple(x.shape)}|{x.dtype}".encode())
        h.update(memoryview(xc.numpy()).cast("B"))
        key = f"input/{x.device.type}/{h.hexdigest()}"
        ident = feature_cache._identity(self.backbone, key, self.spec)
        path = feature_cache.cache_path(self.backbone, key, self.spec, self.cache_dir)
        feats = feature_cache._load(path, ident)
        if feats is not None and feats.shape == (len(x), self.embed_dim):
            return feats.to(x.device)
        feats = self._compute_features(x)
        try:
            feature_cache._save(path, ident, feats.detach().cpu().clone())
        except OSError:  # a read-only or full cache folder costs speed, never the result
            pass
        return feats

    def forward(self, x: torch.Tensor, return_features: bool = False):
        feats = self.features(x)
        logits = self.head(feats)
        return (logits, feats) if return_features else logits


def _find_weights(info: dict, weights) -> str | os.PathLike | None:
    """`--weights` if given; else the hub cache or the file the probe was trained on, whichever
    holds the recorded sha256 (hub first); else None, and load_backbone names what is missing."""
    if weights is not None:
        return weights
    hub = default_weights_path(info["name"])
    recorded = info.get("weights_path")
    for path in (hub, Path(recorded) if recorded else None):
        if path is not None and path.is_file() and sha256_file(path) == info["weights_sha256"]:
            return path
    return None


def build_probe(info: dict, weights: str | os.PathLike | None = None, device: str | torch.device | None = None,
                download: bool = False) -> ProbeModel:
    """Rebuild a probe from a checkpoint's `model` section (the head's weights are loaded by the caller).

    Refuses (InputError, exit 3) backbone weights whose sha256 differs from the recorded one, and a
    weights file for a probe trained on a random backbone.
    """
    bb_info = info["backbone"]
    if bb_info.get("impl", IMPL) != IMPL:
        raise InputError(f"probe backbone implementation {bb_info.get('impl')!r} is not {IMPL!r}; "
                         "re-train the probe with this qact")
    try:
        spec = FeatureSpec(**bb_info["spec"])
    except UsageError as e:
        raise InputError(f"probe checkpoint has an invalid preprocessing record ({e})") from None
    name, sha = bb_info["name"], bb_info.get("weights_sha256")
    if sha is None:  # trained on a seeded random init (tests)
        if weights not in (None, "random"):
            raise InputError(f"this probe was trained on a random {name} backbone (seed {bb_info.get('seed')}), "
                             f"not on {weights}; evaluate it without --weights")
        bb = load_backbone(name, "random", seed=int(bb_info.get("seed") or 0))
    else:
        bb = load_backbone(name, _find_weights(bb_info, weights), download=download, expected_sha256=sha)
    if bb.embed_dim != bb_info.get("embed_dim", bb.embed_dim):
        raise InputError(f"probe expects a {bb_info['embed_dim']}-d backbone but {name} has {bb.embed_dim}")
    head = make_head(info["head"], spec.dim(bb.embed_dim), int(info["num_classes"]))
    cache = os.environ.get("QACT_FEATURE_CACHE", "1").lower() not in ("0", "off", "false", "no")
    model = ProbeModel(bb, head, spec, eval_cache=cache)
    return model.to(device) if device is not None else model


def dinov2_weights_available(name: str = "dinov2_vits14", weights: str | os.PathLike | None = None) -> tuple[bool, Path | None]:
    """(True, path) when the weights a probe needs are on disk (`weights`, else the hub cache);
    (False, the path looked for) otherwise. `weights="random"` is always available (None path)."""
    if isinstance(weights, str) and weights == "random":
        return True, None
    path = Path(weights).expanduser() if weights is not None else default_weights_path(name)
    return path.is_file(), path


# ----------------------------------------------------------------------------------------------
# dataset identity for the feature cache


def source_fingerprint(source) -> str:
    """A short digest that changes whenever the images or labels of an ImageSource do.

    Arrays in memory are hashed whole (digits: 4 MB, CIFAR: 150 MB, ~0.3 s); a memory-mapped
    `.npy` by its path, size and mtime; image files by their paths, sizes and mtimes; a subset
    by its base and indices. Anything else is read and hashed in full (safe, if slow).
    """
    from ..data.base import ArraySource, FolderSource, Subset

    h = hashlib.sha256(type(source).__name__.encode())
    if isinstance(source, Subset):
        h.update(source_fingerprint(source.base).encode())
        h.update(np.ascontiguousarray(source.indices, dtype=np.int64).tobytes())
    elif isinstance(source, ArraySource):
        images = source.images
        filename = getattr(images, "filename", None)
        if filename:
            st = os.stat(filename)
            h.update(f"{os.path.realpath(filename)}|{st.st_size}|{st.st_mtime_ns}|{images.shape}".encode())
        else:
            h.update(f"{images.shape}|{images.dtype}".encode())
            h.update(memoryview(np.ascontiguousarray(images)).cast("B"))
        h.update(np.ascontiguousarray(source.labels, dtype=np.int64).tobytes())
    elif isinstance(source, FolderSource):
        for path, label in source.samples:
            st = os.stat(path)
            h.update(f"{path}|{st.st_size}|{st.st_mtime_ns}|{label}\n".encode())
    else:
        for start in range(0, len(source), 256):
            x, y = source.__getitems__(np.arange(start, min(start + 256, len(source))))
            h.update(x.contiguous().numpy().tobytes())
            h.update(y.numpy().astype(np.int64).tobytes())
    return h.hexdigest()[:16]


def _image_batches(source, batch_size: int, workers: int):
    from ..data import make_loader

    for xb, _ in make_loader(source, batch_size, workers=workers):
        yield xb


def _labels(source) -> np.ndarray:
    labels = getattr(source, "labels", None)
    if labels is None:
        labels = np.concatenate([source.__getitems__(np.arange(i, min(i + 256, len(source))))[1].numpy()
                                 for i in range(0, len(source), 256)])
    return np.asarray(labels, dtype=np.int64)


# ----------------------------------------------------------------------------------------------
# fitting the heads


def _logreg(C: float, x: np.ndarray, y: np.ndarray, start=None):
    """L-BFGS logistic regression at C; `start`: a fitted estimator whose solution starts the solver."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    if start is None:
        clf = LogisticRegression(C=C, solver="lbfgs", max_iter=LOGREG_MAX_ITER, tol=LOGREG_TOL, warm_start=True)
    else:  # warm start (scikit-learn reads coef_/intercept_ of the estimator it fits)
        clf = copy.deepcopy(start).set_params(C=C, warm_start=True)
    # On small problems OpenMP/BLAS threads only cost: measured 1.3 ms vs 15 ms an L-BFGS iteration
    # (1150 x 32, two busy cores). Large ones (CIFAR: 40k x 384) keep every thread.
    with warnings.catch_warnings(), threadpool_limits(limits=1 if x.size < SMALL_PROBLEM else None):
        warnings.simplefilter("ignore", ConvergenceWarning)  # recorded per C instead (n_iter == max_iter)
        clf.fit(x, y)
    return clf


def _linear_head_from(clf, in_features: int, num_classes: int) -> nn.Module:
    """A LinearHead whose logits are `clf.decision_function` (so softmax = `predict_proba`), with
    rows for every class: a binary fit's single score w·x+b becomes logits (0, w·x+b), and a class
    absent from the training split gets a logit of -1e4 (probability ~0)."""
    coef = torch.as_tensor(clf.coef_, dtype=torch.float64)
    bias = torch.as_tensor(clf.intercept_, dtype=torch.float64)
    if len(clf.classes_) == 2:
        coef, bias = torch.cat([torch.zeros_like(coef), coef]), torch.cat([torch.zeros_like(bias), bias])
    weight = torch.zeros(num_classes, in_features, dtype=torch.float64)
    b = torch.full((num_classes,), -1e4, dtype=torch.float64)
    rows = torch.as_tensor(np.asarray(clf.classes_, dtype=np.int64))
    weight[rows], b[rows] = coef, bias
    head = make_head("linear", in_features, num_classes)
    with torch.no_grad():
        head.fc.weight.copy_(weight.float())
        head.fc.bias.copy_(b.float())
    return head


def fit_linear(x_tr: torch.Tensor, y_tr: np.ndarray, x_va: torch.Tensor, y_va: np.ndarray, num_classes: int,
               log: Callable[[str], None] = lambda s: None) -> tuple[nn.Module, dict]:
    """Logistic regression with C picked on the validation split; returns (LinearHead, record)."""
    xtr, xva = x_tr.double().numpy(), x_va.double().numpy()
    if len(np.unique(y_tr)) < 2:
        raise InputError("the training split holds a single class; a classifier needs at least two")
    tried: dict[float, tuple[float, int]] = {}
    fits: dict[float, object] = {}

    def trial(C: float, start=None) -> None:
        if C in tried:
            return
        clf = _logreg(C, xtr, y_tr, start)
        acc = float((clf.predict(xva) == y_va).mean())
        tried[C] = (acc, int(np.max(clf.n_iter_)))
        fits[C] = clf

    def best() -> float:  # highest accuracy, ties to the smaller C (stronger regularisation), as DINOv2
        return max(sorted(tried), key=lambda c: tried[c][0])

    # Each fit starts from the solution at the neighbouring C (a regularisation path): about half
    # the L-BFGS iterations of cold starts, and the same optimum wherever the solver converges.
    previous, stale = None, 0
    for C in sorted(C_COARSE):
        trial(C, previous)
        stale = 0 if best() == C else stale + 1
        if stale >= C_PATIENCE:  # larger C only weakens the regularisation further, at the highest cost
            break
        previous = fits[C]
    centre = best()
    for d in C_REFINE:
        C = float(10.0 ** (np.log10(centre) + d))
        if C_RANGE[0] <= C <= C_RANGE[1]:
            trial(C, fits[centre])
    C = best()
    log(f"logistic regression: C = {C:.3g}, validation accuracy {tried[C][0]:.4f} ({len(tried)} values of C tried)")
    sweep = [{"C": c, "val_acc": a, "n_iter": it, "converged": it < LOGREG_MAX_ITER} for c, (a, it) in sorted(tried.items())]
    head = _linear_head_from(fits[C], x_tr.shape[1], num_classes)
    record = {"solver": "lbfgs", "C": C, "max_iter": LOGREG_MAX_ITER, "tol": LOGREG_TOL, "standardize": False,
              "refit_on_train_val": False, "sweep": sweep, "val_acc": tried[C][0]}
    return head, record


def _head_accuracy(head: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> float:
    head.eval()
    with torch.no_grad():
        pred = torch.cat([head(xb).argmax(1) for xb in x.split(batch_size)])
    return float((pred.cpu() == y.cpu()).float().mean())


def fit_quantile(x_tr: torch.Tensor, y_tr: np.ndarray, x_va: torch.Tensor, y_va: np.ndarray, num_classes: int,
                 epochs: int, batch_size: int, lr: float, seed: int, early_stop: int, lr_patience: int,
                 device: torch.device, log: Callable[[str], None] = lambda s: None,
                 on_epoch: Callable[[dict], None] | None = None) -> tuple[nn.Module, dict]:
    """The quantile classifier trained on fixed features (Adam, best epoch on validation).

    It is trained on standardised features (train mean/std), which makes Adam's step size
    independent of the backbone's feature scale, and the standardisation is then folded into
    its linear layer, so the saved head takes raw features (and gives the same scores).
    """
    if batch_size < 2:
        raise UsageError("--head quantile needs --batch-size ≥ 2: the batch is the quantile layer's context")
    torch.manual_seed(seed)
    head = make_head("quantile", x_tr.shape[1], num_classes).to(device)
    mu, sd = x_tr.mean(0), x_tr.std(0).clamp_min(1e-6)
    xtr, ytr = ((x_tr - mu) / sd).to(device), torch.as_tensor(y_tr).to(device)
    xva, yva = ((x_va - mu) / sd).to(device), torch.as_tensor(y_va)
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.1, patience=lr_patience, cooldown=10,
                                                       threshold=0.01, threshold_mode="abs", min_lr=1e-6)
    best, best_epoch, stale, best_state, history = -1.0, 0, 0, None, []
    n = len(xtr)
    for epoch in range(epochs):
        head.train()
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1000 + epoch)).to(device)
        if n % batch_size == 1:  # a batch of one cannot form a quantile context
            perm = perm[:-1]
        total, steps = 0.0, 0
        for idx in perm.split(batch_size):
            loss = head.loss(head(xtr[idx]), ytr[idx])
            if not torch.isfinite(loss):
                raise InputError(f"quantile head training diverged at epoch {epoch + 1}; lower --lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total, steps = total + loss.item(), steps + 1
        val_acc = _head_accuracy(head, xva, yva, max(batch_size, 256))
        sched.step(val_acc)
        row = {"epoch": epoch + 1, "loss": total / max(steps, 1), "val_acc": val_acc, "lr": opt.param_groups[0]["lr"]}
        history.append(row)
        if on_epoch:
            on_epoch(row)
        if val_acc > best:
            stale = 0 if val_acc > best + 1e-3 else stale + 1
            best, best_epoch = val_acc, epoch + 1
            best_state = copy.deepcopy(head.state_dict())
        else:
            stale += 1
        if stale >= early_stop:
            log(f"early stop after epoch {epoch + 1}: no 0.001 gain in validation accuracy for {early_stop} epochs")
            break
    head.load_state_dict(best_state)
    head = head.cpu().eval()
    _fold_standardisation(head.fc, mu, sd)
    record = {"optimizer": "adam", "best_epoch": best_epoch, "val_acc": best, "history": history,
              "stopped_early": len(history) < epochs, "standardize": "folded into the head"}
    return head, record


def _fold_standardisation(fc: nn.Linear, mu: torch.Tensor, sd: torch.Tensor) -> None:
    """W((x - mu)/sd) + b = (W/sd) x + (b - (W/sd) mu), computed in float64."""
    with torch.no_grad():
        w = fc.weight.double() / sd.double()
        fc.bias.copy_((fc.bias.double() - w @ mu.double()).float())
        fc.weight.copy_(w.float())


# ----------------------------------------------------------------------------------------------
# qact train --arch dinov2_*


def _probe_res(cfg) -> int:
    res = getattr(cfg, "probe_res", None) or DEFAULT_RES
    if int(res) <= 0 or int(res) % 14:
        raise UsageError(f"--probe-res must be a positive multiple of 14 (the patch size), got {res}")
    return int(res)


def _check_config(cfg) -> None:
    if cfg.head not in ("linear", "quantile"):
        raise UsageError(unknown("--head", cfg.head, ("linear", "quantile")))
    if cfg.loss != "ce":
        raise UsageError("--loss watershed trains an embedding; a frozen backbone's embedding is fixed (use --loss ce)")
    if cfg.act not in ("relu", "none"):
        raise UsageError(f"--act {cfg.act} does not apply to a frozen DINOv2 backbone (its activations are fixed); "
                         "use --head quantile for the paper's quantile classifier on its features")
    if cfg.augment:
        raise UsageError("--augment does not apply to a probe: features of the training images are computed once")


def train_probe(cfg, log: Callable[[str], None] = lambda s: None,
                on_epoch: Callable[[dict], None] | None = None) -> dict:
    """Fit a probe on frozen DINOv2 features and write its checkpoint to `cfg.out`.

    `cfg` is a train.TrainConfig (an optional `probe_res` attribute sets the input resolution).
    Returns the checkpoint's `train` section (with `best_val_acc`, `best_epoch`, `probe`).
    """
    from ..checkpoint import make_checkpoint, save_checkpoint
    from ..data import get_dataset
    from ..train import SPLIT_SEED, VAL_FRACTION, split_train_val
    from ..utils import environment, select_device

    t0 = time.time()
    _check_config(cfg)
    spec = FeatureSpec(res=_probe_res(cfg))
    device = select_device(cfg.device)
    if cfg.resume:
        log("--resume: a probe has no epochs to resume; cached features make a fresh fit quick")
    bb = load_backbone(cfg.arch, weights=cfg.weights, download=cfg.download, seed=cfg.seed)
    ds = get_dataset(cfg.dataset, cfg.data_root, cfg.download)
    source = ds.split("train")
    if len(source) < 10:
        raise InputError(f"{cfg.dataset}: only {len(source)} training images; need at least 10 for the 80:20 split")
    labels = _labels(source)
    key = f"{ds.name}/train/{source_fingerprint(source)}"
    cached = feature_cache.cache_path(bb, key, spec).is_file()
    log(f"{'reading cached' if cached else 'computing'} {bb.name} features of {len(source)} training images "
        f"at {spec.res}px on {device}")
    tf = time.time()
    feats = feature_cache.cached_features(bb, key, lambda: _image_batches(source, cfg.batch_size, cfg.workers),
                                          spec=spec, batch_size=cfg.batch_size, device=device)
    feat_s = time.time() - tf
    bb.cpu()
    if len(feats) != len(labels):
        raise InputError(f"feature cache entry for {key} holds {len(feats)} rows for {len(labels)} images; "
                         f"delete {feature_cache.cache_path(bb, key, spec)} and run again")
    tr, va = split_train_val(len(source))
    args = (feats[tr], labels[tr], feats[va], labels[va], ds.num_classes)
    if cfg.head == "linear":
        head, record = fit_linear(*args, log=log)
        best, best_epoch, epochs, history, stopped = record["val_acc"], 1, 1, record["sweep"], False
    else:
        head, record = fit_quantile(*args, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed,
                                    early_stop=cfg.early_stop, lr_patience=cfg.lr_patience, device=device, log=log,
                                    on_epoch=on_epoch)
        best, best_epoch, history, stopped = record["val_acc"], record["best_epoch"], record["history"], record["stopped_early"]
        epochs = len(history)
    model = ProbeModel(bb, head, spec)
    info = {
        "arch": cfg.arch, "act": "none", "head": cfg.head, "num_classes": ds.num_classes, "arch_kwargs": {},
        "input_size": list(source.image_size), "mean": list(spec.mean), "std": list(spec.std),
        "classes": list(ds.classes) if ds.classes else None,
        "backbone": {**backbone_info(bb), "weights_path": bb.weights_path, "spec": spec.to_dict()},
    }
    train_cfg = {k: v for k, v in asdict(cfg).items() if k not in ("resume", "device", "out", "workers")}
    train_cfg["probe_res"] = spec.res
    train_info = {
        "dataset": cfg.dataset, "epochs": epochs, "max_epochs": cfg.epochs if cfg.head == "quantile" else 1,
        "seed": cfg.seed, "loss": "ce", "head": cfg.head, "batch_size": cfg.batch_size,
        "lr": cfg.lr if cfg.head == "quantile" else None, "optimizer": "adam" if cfg.head == "quantile" else "lbfgs",
        "split": {"val_fraction": VAL_FRACTION, "seed": SPLIT_SEED, "n_train": len(tr), "n_val": len(va)},
        "best_val_acc": float(best), "best_epoch": best_epoch, "stopped_early": stopped, "history": history,
        "config": train_cfg,
        "probe": {k: v for k, v in record.items() if k not in ("sweep", "history")}
        | {"weights_sha256": bb.weights_sha256, "res": spec.res, "features_cached": cached,
           "feature_seconds": round(feat_s, 2)},
        "elapsed_s": round(time.time() - t0, 2), "environment": environment(device),
    }
    # A probe is not data-parallel: under torchrun every rank fits the same (deterministic) probe
    # and the first one writes it.
    if int(os.environ.get("RANK", "0")) == 0:
        save_checkpoint(make_checkpoint(model, info, train_info), cfg.out)
    return train_info
