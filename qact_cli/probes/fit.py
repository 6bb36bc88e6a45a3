"""Fitting probes: `qact train --backbone SPEC --head linear|quantile` (`--arch dinov2_*` is an alias
of `--backbone dinov2_*`): the paper's protocol, a classifier fitted on a frozen network's train-set
embeddings (Challa et al., arXiv 2405.11573, "Last layer"): logistic regression for ReLU networks
and DINOv2, the quantile classifier for QAct networks. The backbones are in backbones.py,
the model that `qact eval` runs in model.py, the training features in features.py.

- `--head linear` (linear.py) follows DINOv2's logistic-regression eval
  (`dinov2/eval/log_regression.py`): L2-regularised multinomial logistic regression (L-BFGS,
  max_iter 1000, float64) on the raw features, no standardisation, C chosen on a held-out split;
  DINOv2 chooses by accuracy (ties to the smaller C), we by validation log-loss (C_SELECT says why;
  `fit_linear(select="acc")` is DINOv2's).
  DINOv2 sweeps 45 values 10^-6..10^5 (0.25-decade steps); we walk the same grid coarse to fine:
  up the decades, each fit warm-started from the previous one, until three decades in a row bring
  no better validation score, then ±0.25/0.5/0.75 decade around the best one (at most 18 fits).
  The held-out split is the 80:20 validation split of training (seed 42). Unlike DINOv2 we do
  *not* refit on train+val: every model in a qact comparison then sees the same 80 % of the
  training set, and `best_val_acc` stays a held-out figure.
- `--head quantile` (quantile_head.py): the paper's quantile classifier (nn/heads.py) trained on
  the features with Adam (`--lr`, `--epochs`, `--batch-size`), ReduceLROnPlateau and early stopping
  as in training, best epoch on validation.

Training features. DINOv2's are computed once per (weights, dataset content, resolution) and cached
on disk (feature_cache.py). A network with QAct layers gives an image features that depend
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

import time
from typing import Callable

import torch

from .. import distributed
from ..constants import IMAGENET_MEAN, IMAGENET_STD
from ..data import get_dataset
from ..errors import InputError
from ..models.checkpoint_file import make_checkpoint, save_checkpoint
from ..nn.heads import resolve_head
from ..schedule import recorded_options, split_record, split_train_val
from ..utils import environment, select_device
from .backbones import Backbone, DinoBackbone, backbone_spec, is_dinov2, resolve_backbone
from .features import dino_features, labels_of, net_features
from .linear import fit_linear
from .model import DEFAULT_RES, ProbeModel
from .quantile_head import fit_quantile


def train_probe(cfg, log: Callable[[str], None] = lambda s: None,
                on_epoch: Callable[[dict], None] | None = None) -> dict:
    """Fit a probe on a frozen backbone's features and write its checkpoint to `cfg.out`.

    `cfg` is a TrainConfig whose options training/config.py has checked (`backbone`, else a dinov2_*
    `arch`; `probe_res` sets DINOv2's input resolution). Returns the checkpoint's `train` section
    (with `best_val_acc`, `best_epoch`, `probe`).
    """
    t0 = time.time()
    spec_text = backbone_spec(cfg)
    device = select_device(cfg.device)
    if cfg.resume:
        log("--resume: a probe has no epochs to resume; a fresh fit is quick")
    bb = resolve_backbone(spec_text, weights=cfg.weights, download=cfg.download, seed=cfg.seed,
                          res=(cfg.probe_res or DEFAULT_RES) if is_dinov2(spec_text) else DEFAULT_RES)
    ds = get_dataset(cfg.dataset, cfg.data_root, cfg.download)
    source = ds.split("train")
    if len(source) < 10:
        raise InputError(f"{cfg.dataset}: only {len(source)} training images; need at least 10 for the 80:20 split")
    labels = labels_of(source)
    if isinstance(bb, DinoBackbone):
        mean, std = list(IMAGENET_MEAN), list(IMAGENET_STD)
        feats, feat_record = dino_features(bb, ds, source, cfg, device, log)
    else:
        mean, std = [float(v) for v in bb.meta["model"]["mean"]], [float(v) for v in bb.meta["model"]["std"]]
        feats, feat_record = net_features(bb, source, mean, std, cfg, device, log)
    tr, va = split_train_val(len(source))
    head, record, run = _fit_head(cfg, (feats[tr], labels[tr], feats[va], labels[va], ds.num_classes), device, log,
                                  on_epoch)
    info = _model_info(cfg, bb, ds, list(source.image_size), mean, std, spec_text)
    train_info = _train_info(cfg, bb, record, run, feat_record, info["backbone"], (len(tr), len(va)))
    train_info["elapsed_s"], train_info["environment"] = round(time.time() - t0, 2), environment(device)
    if "head_sharpness" in record:
        train_info["head_sharpness"] = record["head_sharpness"]
    if cfg.calibrate not in (None, "none"):
        info["temperature"], train_info["calibration"] = _calibrate(head, feats[va], labels[va], cfg.batch_size, log)
    # A probe is not data-parallel: under torchrun every rank fits the same (deterministic) probe
    # and the first one writes it.
    if distributed.is_main():
        save_checkpoint(make_checkpoint(ProbeModel(bb, head), info, train_info), cfg.out)
    return train_info


def _fit_head(cfg, args: tuple, device, log, on_epoch) -> tuple[torch.nn.Module, dict, dict]:
    """The head on (train features, labels, val features, labels, K), its fit's record, and the run
    as the `train` section tells it (`best_epoch`, `history`, `stopped_early`, `epochs`)."""
    if cfg.head == "linear":
        head, record = fit_linear(*args, log=log)
        return head, record, {"best_epoch": 1, "history": record["sweep"], "stopped_early": False, "epochs": 1}
    head, record = fit_quantile(*args, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr, seed=cfg.seed,
                                early_stop=cfg.early_stop, lr_patience=cfg.lr_patience, device=device, log=log,
                                on_epoch=on_epoch, kind=resolve_head(cfg.head))
    if "head_sharpness" in record:
        log(f"quantile head sharpness refitted on the training features: a = {record['head_sharpness']['a']:.3f}")
    run = {k: record[k] for k in ("best_epoch", "history", "stopped_early")}
    return head, record, {**run, "epochs": len(record["history"])}


def _calibrate(head: torch.nn.Module, x_va: torch.Tensor, y_va, batch_size: int, log) -> tuple[float, dict]:
    """--calibrate temperature, as for a trained network (training/loop.py `calibrate`): one T fitted on
    the validation split's features (Guo et al. 2017), the head fixed and in eval mode, in batches of
    the size the validation accuracy was measured with. Eval reports the metrics at T beside the raw ones."""
    from ..calibration import fit_temperature, nll

    head = head.cpu().eval()
    with torch.no_grad():
        outputs = torch.cat([head(xb).float() for xb in torch.as_tensor(x_va).cpu().split(max(batch_size, 256))])
    labels = torch.as_tensor(y_va).long()
    t = fit_temperature(outputs, labels)
    before, after = nll(outputs, labels), nll(outputs, labels, t)
    log(f"temperature scaling: T = {t:.4f} (validation NLL {before:.4f} -> {after:.4f})")
    return t, {"method": "temperature", "split": "val", "temperature": t, "val_nll_before": before, "val_nll_after": after}


def _model_info(cfg, bb: Backbone, ds, input_size: list, mean: list, std: list, spec_text: str) -> dict:
    """The checkpoint's `model` section: a dinov2_* arch, else "probe" (rebuilt by the probe family;
    the backbone's own arch is in `backbone`, and a qact network keeps its activation)."""
    backbone = bb.record()
    if isinstance(bb, DinoBackbone):
        arch, act = spec_text, "none"
    else:
        arch, act = "probe", backbone.get("act") or "none"
    return {
        "arch": arch, "act": act, "head": resolve_head(cfg.head), "num_classes": ds.num_classes, "arch_kwargs": {},
        "input_size": input_size, "mean": mean, "std": std,
        "classes": list(ds.classes) if ds.classes else None, "backbone": backbone,
    }


def _train_info(cfg, bb: Backbone, record: dict, run: dict, feat_record: dict, backbone: dict,
                sizes: tuple[int, int]) -> dict:
    """The checkpoint's `train` section (elapsed time, environment and the head's refitted sharpness
    are added by the caller)."""
    train_cfg = recorded_options(cfg)
    if isinstance(bb, DinoBackbone):
        train_cfg["probe_res"] = bb.spec.res
    linear = cfg.head == "linear"
    info = {
        "dataset": cfg.dataset, "epochs": run["epochs"], "max_epochs": 1 if linear else cfg.epochs,
        "seed": cfg.seed, "loss": "ce", "head": cfg.head, "batch_size": cfg.batch_size,
        "lr": None if linear else cfg.lr, "optimizer": "lbfgs" if linear else "adam",
        "split": {**split_record(), "n_train": sizes[0], "n_val": sizes[1]},
        "best_val_acc": float(record["val_acc"]), "best_epoch": run["best_epoch"],
        "stopped_early": run["stopped_early"], "history": run["history"], "config": train_cfg,
        "probe": {k: v for k, v in record.items() if k not in ("sweep", "history", "head_sharpness")}
        | {"backbone": backbone_spec(cfg), "backbone_sha256": backbone.get("sha256", backbone.get("weights_sha256"))}
        | feat_record,
    }
    return info
