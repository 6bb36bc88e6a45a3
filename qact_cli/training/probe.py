"""Fitting probes: `qact train --backbone SPEC --head linear|quantile` (`--arch dinov2_*` is an alias
of `--backbone dinov2_*`): the paper's protocol, a classifier fitted on a frozen network's train-set
embeddings (Challa et al., arXiv 2405.11573, "Last layer"): logistic regression for ReLU networks
and DINOv2, the quantile classifier for QAct networks. The backbones are in models/backbones.py,
the model that `qact eval` runs in models/probe.py.

- `--head linear` follows DINOv2's logistic-regression eval (`dinov2/eval/log_regression.py`):
  L2-regularised multinomial logistic regression (L-BFGS, max_iter 1000, float64) on the raw
  features, no standardisation, C chosen on a held-out split; DINOv2 chooses by accuracy (ties to
  the smaller C), we by validation log-loss (C_SELECT says why; `fit_linear(select="acc")` is DINOv2's).
  DINOv2 sweeps 45 values 10^-6..10^5 (0.25-decade steps); we walk the same grid coarse to fine:
  up the decades, each fit warm-started from the previous one, until three decades in a row bring
  no better validation score, then ±0.25/0.5/0.75 decade around the best one (at most 18 fits).
  The held-out split is the 80:20 validation split of training (seed 42). Unlike DINOv2 we do
  *not* refit on train+val: every model in a qact comparison then sees the same 80 % of the
  training set, and `best_val_acc` stays a held-out figure.
- `--head quantile`: the paper's quantile classifier (nn/heads.py) trained on the features with
  Adam (`--lr`, `--epochs`, `--batch-size`), ReduceLROnPlateau and early stopping as in training,
  best epoch on validation.

Training features. DINOv2's are computed once per (weights, dataset content, resolution) and cached
on disk (models/feature_cache.py). A network with QAct layers gives an image features that depend
on its batch (the batch is each layer's context), so its features are never cached and are
computed the way the network saw its training data: in batches of its training batch size (the
backbone checkpoint's `train.batch_size`, else `--batch-size`) drawn from the training split in a
seeded random order (training batches are shuffled, so each context mixes the classes), with the
network in eval mode (BatchNorm running statistics, as at test time) and its QAct layers in
context "batch", or the context its checkpoint records. At eval time each evaluation batch of a
cell is that context (`qact eval --context`), as for the network itself. Other backbones are
computed in plain batches.
"""

from __future__ import annotations

import copy
import hashlib
import os
import time
import warnings
from dataclasses import asdict
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..errors import InputError, UsageError
from ..models import feature_cache
from ..models.backbones import DinoBackbone, NetBackbone, resolve_backbone
from ..models.common import make_head
from ..constants import IMAGENET_MEAN, IMAGENET_STD
from ..models.probe import DEFAULT_RES, ProbeModel
from ..suggest import unknown

C_COARSE = [10.0**p for p in range(-6, 6)]  # every decade of DINOv2's 10^-6..10^5 sweep
C_REFINE = (-0.75, -0.5, -0.25, 0.25, 0.5, 0.75)  # decades around the best coarse C: DINOv2's 0.25 step
C_RANGE = (1e-6, 1e5)
C_PATIENCE = 3  # stop walking up the decades after this many without a better validation accuracy
LOGREG_MAX_ITER = 1000
SMALL_PROBLEM = 4_000_000  # features x samples below which the fit runs on one thread
LOGREG_TOL = 1e-6  # DINOv2 (cuML) uses 1e-12; scikit-learn's L-BFGS then always runs to max_iter
# C by validation log-loss, not DINOv2's accuracy: on a small validation split accuracy is flat over
# decades of C and its argmax can sit deep in the over-regularised range, whose probabilities are near
# uniform. Measured (sample_configs/paper_protocol_digits.yaml, ReLU LeNet, 287 validation images): by
# accuracy C = 5.6e-5 (0.993 vs 0.990 for every C up to 0.1) gave clean accuracy 1.000 with top-label
# ECE 0.85. Calibration is half of what the paper's protocol measures, so the proper scoring rule decides.
C_SELECT = "nll"


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


def _val_nll(clf, x: np.ndarray, y: np.ndarray) -> float:
    """Mean negative log-likelihood of the labels (a class never seen in training: probability 1e-12)."""
    proba = clf.predict_proba(x)
    col = {int(c): i for i, c in enumerate(clf.classes_)}
    p = np.array([proba[i, col[int(t)]] if int(t) in col else 0.0 for i, t in enumerate(y)])
    return float(-np.log(np.clip(p, 1e-12, 1.0)).mean())


def fit_linear(x_tr: torch.Tensor, y_tr: np.ndarray, x_va: torch.Tensor, y_va: np.ndarray, num_classes: int,
               log: Callable[[str], None] = lambda s: None, select: str = C_SELECT) -> tuple[nn.Module, dict]:
    """Logistic regression with C picked on the validation split; returns (LinearHead, record).

    `select="nll"`: the lowest validation log-loss; `"acc"`: DINOv2's rule, the highest validation
    accuracy, ties to the smaller C (see C_SELECT for why nll is the default)."""
    if select not in ("nll", "acc"):
        raise UsageError(unknown("C selection", select, ("nll", "acc")))
    xtr, xva = x_tr.double().numpy(), x_va.double().numpy()
    if len(np.unique(y_tr)) < 2:
        raise InputError("the training split holds a single class; a classifier needs at least two")
    tried: dict[float, tuple[float, int, float]] = {}
    fits: dict[float, object] = {}

    def trial(C: float, start=None) -> None:
        if C in tried:
            return
        clf = _logreg(C, xtr, y_tr, start)
        acc = float((clf.predict(xva) == y_va).mean())
        tried[C] = (acc, int(np.max(clf.n_iter_)), _val_nll(clf, xva, y_va))
        fits[C] = clf

    def best() -> float:
        if select == "nll":
            return min(sorted(tried), key=lambda c: tried[c][2])
        return max(sorted(tried), key=lambda c: tried[c][0])  # ties to the smaller C, as DINOv2

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
    log(f"logistic regression: C = {C:.3g} (by validation {select}), validation accuracy {tried[C][0]:.4f}, "
        f"log-loss {tried[C][2]:.4f} ({len(tried)} values of C tried)")
    sweep = [{"C": c, "val_acc": a, "val_nll": nll, "n_iter": it, "converged": it < LOGREG_MAX_ITER}
             for c, (a, it, nll) in sorted(tried.items())]
    head = _linear_head_from(fits[C], x_tr.shape[1], num_classes)
    record = {"solver": "lbfgs", "C": C, "select": select, "max_iter": LOGREG_MAX_ITER, "tol": LOGREG_TOL,
              "standardize": False, "refit_on_train_val": False, "sweep": sweep, "val_acc": tried[C][0],
              "val_nll": tried[C][2]}
    return head, record


def _head_accuracy(head: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> float:
    head.eval()
    with torch.no_grad():
        pred = torch.cat([head(xb).argmax(1) for xb in x.split(batch_size)])
    return float((pred.cpu() == y.cpu()).float().mean())


def fit_quantile(x_tr: torch.Tensor, y_tr: np.ndarray, x_va: torch.Tensor, y_va: np.ndarray, num_classes: int,
                 epochs: int, batch_size: int, lr: float, seed: int, early_stop: int, lr_patience: int,
                 device: torch.device, log: Callable[[str], None] = lambda s: None,
                 on_epoch: Callable[[dict], None] | None = None, kind: str = "quantile") -> tuple[nn.Module, dict]:
    """The quantile classifier trained on fixed features (Adam, best epoch on validation).

    It is trained on standardised features (train mean/std), which makes Adam's step size
    independent of the backbone's feature scale, and the standardisation is then folded into
    its linear layer, so the saved head takes raw features (and gives the same scores).
    """
    if batch_size < 2:
        raise UsageError("--head quantile needs --batch-size ≥ 2: the batch is the quantile layer's context")
    torch.manual_seed(seed)
    head = make_head(kind, x_tr.shape[1], num_classes).to(device)
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
    sharpness = _refit_sharpness(head, xtr, ytr, batch_size, seed) if head.refits_sharpness else None
    head = head.cpu().eval()
    _fold_standardisation(head.fc, mu, sd)
    record = {"optimizer": "adam", "best_epoch": best_epoch, "val_acc": best, "history": history,
              "stopped_early": len(history) < epochs, "standardize": "folded into the head"}
    if sharpness:
        record["head_sharpness"] = sharpness
    return head, record


def _refit_sharpness(head: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int) -> dict:
    """The head's sharpness a (p ~ q^a) fitted exactly by NLL on the training features, the scores held
    fixed: eval mode, the head's QAct context the batch, seeded batches of the training batch size (the
    contexts it was trained with). See calibration.py `fit_sharpness`."""
    from ..calibration import fit_sharpness
    from ..nn import set_context

    head.eval()
    set_context(head, "batch")
    batches = [torch.as_tensor(i, device=x.device) for i in feature_batches(len(x), batch_size, seed)]
    with torch.no_grad():
        outputs = torch.cat([head(x[i]).float().cpu() for i in batches])
    labels = torch.cat([y[i].cpu() for i in batches])
    return {"split": "train", "batch_size": batch_size, "context": "batch", **fit_sharpness(head, outputs, labels)}


def _fold_standardisation(fc: nn.Linear, mu: torch.Tensor, sd: torch.Tensor) -> None:
    """W((x - mu)/sd) + b = (W/sd) x + (b - (W/sd) mu), computed in float64."""
    with torch.no_grad():
        w = fc.weight.double() / sd.double()
        fc.bias.copy_((fc.bias.double() - w @ mu.double()).float())
        fc.weight.copy_(w.float())




# ----------------------------------------------------------------------------------------------
# training features


def _dino_features(bb: DinoBackbone, ds, source, cfg, device, log) -> tuple[torch.Tensor, dict]:
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


def _net_features(bb: NetBackbone, source, mean, std, cfg, device, log) -> tuple[torch.Tensor, dict]:
    from ..data.transforms import to_model_input
    from ..nn import set_context

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


# ----------------------------------------------------------------------------------------------
# qact train --backbone SPEC (--arch dinov2_* is an alias)


def backbone_spec(cfg) -> str:
    return str(cfg.backbone or cfg.arch)


def is_dinov2(spec: str) -> bool:
    return str(spec).startswith("dinov2")


def _probe_res(cfg) -> int:
    res = getattr(cfg, "probe_res", None) or DEFAULT_RES
    if int(res) <= 0 or int(res) % 14:
        raise UsageError(f"--probe-res must be a positive multiple of 14 (the patch size), got {res}")
    return int(res)


def check_config(cfg) -> None:
    """The options a probe takes (exit 2 otherwise); checked before anything is loaded."""
    if cfg.arch == "probe" and not cfg.backbone:
        raise UsageError("--arch probe fits a probe on a frozen backbone: give it with --backbone SPEC")
    if cfg.backbone and cfg.arch not in ("", "probe", cfg.backbone):
        raise UsageError(f"give --backbone or --arch, not both (--arch {cfg.arch}, --backbone {cfg.backbone})")
    if cfg.head.split(":", 1)[0] not in ("linear", "quantile"):  # quantile:VARIANT (nn/heads.py)
        raise UsageError(unknown("--head", cfg.head, ("linear", "quantile")))
    if cfg.loss != "ce":
        raise UsageError("--loss watershed trains an embedding; a frozen backbone's embedding is fixed (use --loss ce)")
    if cfg.act not in ("relu", "none"):
        raise UsageError(f"--act {cfg.act} does not apply to a frozen backbone (its activations are fixed); "
                         "use --head quantile for the paper's quantile classifier on its features")
    if cfg.augment:
        raise UsageError("--augment does not apply to a probe: features of the training images are computed once")
    if cfg.epochs < 1 or cfg.batch_size < 1 or not cfg.lr > 0:
        raise UsageError("--epochs and --batch-size must be ≥ 1 and --lr > 0")
    if is_dinov2(backbone_spec(cfg)):
        _probe_res(cfg)


def train_probe(cfg, log: Callable[[str], None] = lambda s: None,
                on_epoch: Callable[[dict], None] | None = None) -> dict:
    """Fit a probe on a frozen backbone's features and write its checkpoint to `cfg.out`.

    `cfg` is a TrainConfig (`backbone`, else a dinov2_* `arch`; `probe_res` sets DINOv2's input
    resolution). Returns the checkpoint's `train` section (with `best_val_acc`, `best_epoch`, `probe`).
    """
    from ..checkpoint import make_checkpoint, save_checkpoint
    from ..data import get_dataset
    from .protocol import SPLIT_SEED, VAL_FRACTION, split_train_val
    from ..utils import environment, select_device

    t0 = time.time()
    check_config(cfg)
    spec_text = backbone_spec(cfg)
    device = select_device(cfg.device)
    if cfg.resume:
        log("--resume: a probe has no epochs to resume; a fresh fit is quick")
    bb = resolve_backbone(spec_text, weights=cfg.weights, download=cfg.download, seed=cfg.seed,
                          res=_probe_res(cfg) if is_dinov2(spec_text) else DEFAULT_RES)
    ds = get_dataset(cfg.dataset, cfg.data_root, cfg.download)
    source = ds.split("train")
    if len(source) < 10:
        raise InputError(f"{cfg.dataset}: only {len(source)} training images; need at least 10 for the 80:20 split")
    labels = _labels(source)
    if isinstance(bb, DinoBackbone):
        mean, std = list(IMAGENET_MEAN), list(IMAGENET_STD)
        feats, feat_record = _dino_features(bb, ds, source, cfg, device, log)
    else:
        mean, std = [float(v) for v in bb.meta["model"]["mean"]], [float(v) for v in bb.meta["model"]["std"]]
        feats, feat_record = _net_features(bb, source, mean, std, cfg, device, log)
    tr, va = split_train_val(len(source))
    args = (feats[tr], labels[tr], feats[va], labels[va], ds.num_classes)
    from .loop import resolve_head

    head_kind = resolve_head(cfg.head)  # --head quantile: the default variant, recorded
    if cfg.head == "linear":
        head, record = fit_linear(*args, log=log)
        best, best_epoch, epochs, history, stopped = record["val_acc"], 1, 1, record["sweep"], False
    else:
        head, record = fit_quantile(*args, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed,
                                    early_stop=cfg.early_stop, lr_patience=cfg.lr_patience, device=device, log=log,
                                    on_epoch=on_epoch, kind=head_kind)
        best, best_epoch, history, stopped = record["val_acc"], record["best_epoch"], record["history"], record["stopped_early"]
        if "head_sharpness" in record:
            log(f"quantile head sharpness refitted on the training features: a = {record['head_sharpness']['a']:.3f}")
        epochs = len(history)
    model = ProbeModel(bb, head)
    backbone = bb.record()
    if isinstance(bb, DinoBackbone):
        arch, act, input_size = spec_text, "none", list(source.image_size)
    else:
        arch = "probe"  # rebuilt by the probe family; the backbone's own arch is in `backbone`
        act = backbone.get("act") or "none"  # a qact network keeps its activation; the probe adds none
        input_size = list(source.image_size)
    info = {
        "arch": arch, "act": act, "head": head_kind, "num_classes": ds.num_classes, "arch_kwargs": {},
        "input_size": input_size, "mean": mean, "std": std,
        "classes": list(ds.classes) if ds.classes else None, "backbone": backbone,
    }
    train_cfg = {k: v for k, v in asdict(cfg).items() if k not in ("resume", "device", "out", "workers")}
    if isinstance(bb, DinoBackbone):
        train_cfg["probe_res"] = bb.spec.res
    train_info = {
        "dataset": cfg.dataset, "epochs": epochs, "max_epochs": cfg.epochs if cfg.head != "linear" else 1,
        "seed": cfg.seed, "loss": "ce", "head": cfg.head, "batch_size": cfg.batch_size,
        "lr": cfg.lr if cfg.head != "linear" else None, "optimizer": "adam" if cfg.head != "linear" else "lbfgs",
        "split": {"val_fraction": VAL_FRACTION, "seed": SPLIT_SEED, "n_train": len(tr), "n_val": len(va)},
        "best_val_acc": float(best), "best_epoch": best_epoch, "stopped_early": stopped, "history": history,
        "config": train_cfg,
        "probe": {k: v for k, v in record.items() if k not in ("sweep", "history", "head_sharpness")}
        | {"backbone": spec_text, "backbone_sha256": backbone.get("sha256", backbone.get("weights_sha256"))}
        | feat_record,
        "elapsed_s": round(time.time() - t0, 2), "environment": environment(device),
    }
    if "head_sharpness" in record:
        train_info["head_sharpness"] = record["head_sharpness"]
    # A probe is not data-parallel: under torchrun every rank fits the same (deterministic) probe
    # and the first one writes it.
    if int(os.environ.get("RANK", "0")) == 0:
        save_checkpoint(make_checkpoint(model, info, train_info), cfg.out)
    return train_info


def backbone_unchanged(probe_path) -> bool:
    """False when a probe's recorded backbone file now holds other weights (an experiment then fits the
    probe again instead of reusing it)."""
    from ..checkpoint import read_checkpoint
    from ..utils import sha256_file

    try:
        record = read_checkpoint(probe_path)["model"].get("backbone") or {}
    except InputError:
        return False
    path = record.get("path")
    if record.get("impl") != "qact-checkpoint" or not path:
        return True
    return os.path.isfile(path) and sha256_file(path) == record.get("sha256")
