"""Training with the paper's protocol (qact-method.md §5).

Adam (lr 1e-3), an 80:20 train/validation split of the training set with seed 42,
ReduceLROnPlateau on validation accuracy (factor 0.1, patience 50, cooldown 10, threshold 0.01
absolute, min lr 1e-6), early stopping when validation accuracy stops improving by 0.001, and the
best checkpoint chosen on validation, never on the test set. `--resume` continues from the state
written after every epoch (`<out>.state`).
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from . import distributed
from .checkpoint import make_checkpoint, read_checkpoint, save_checkpoint
from .data import Dataset, get_dataset, make_loader
from .data.transforms import crop_flip, to_model_input
from .errors import InputError, UsageError
from .models import build_model
from .utils import environment, seed_everything

SPLIT_SEED = 42
VAL_FRACTION = 0.2


@dataclass
class TrainConfig:
    dataset: str
    arch: str
    out: str
    data_root: str | None = None
    download: bool = False
    act: str = "relu"
    loss: str = "ce"
    head: str = "linear"
    epochs: int = 30
    batch_size: int = 128
    lr: float = 1e-3
    seed: int = 0
    device: str = "auto"
    resume: bool = False
    augment: bool = False
    placement: str = "all"
    early_stop: int = 10  # epochs without a 0.001 gain in validation accuracy
    lr_patience: int = 50
    workers: int | None = None  # None: make_loader's default (up to 4 for image folders)
    weights: str | None = None  # frozen backbones only
    probe_res: int = 224  # frozen backbones only: input resolution (multiple of 14)
    sync_context: bool = True  # under torchrun: QAct context and BatchNorm statistics over the global batch
    qact: dict = field(default_factory=dict)  # extra QAct options (context_size, n_quantiles, ...)
    calibrate: str | None = None  # "temperature": fit T on the validation split after training (calibration.py)


def split_train_val(n: int, seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """The paper's 80:20 split of the training set, fixed by `seed` (42) whatever the run's seed."""
    perm = np.random.default_rng(seed).permutation(n)
    n_val = int(round(VAL_FRACTION * n))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def validate_config(cfg: TrainConfig) -> None:
    if cfg.loss not in ("ce", "watershed"):
        raise UsageError(f"unknown --loss {cfg.loss!r}; choose ce or watershed")
    if cfg.epochs < 1 or cfg.batch_size < 1 or not cfg.lr > 0:
        raise UsageError("--epochs and --batch-size must be ≥ 1 and --lr > 0")
    if cfg.calibrate not in (None, "none", "temperature"):
        raise UsageError(f"unknown --calibrate {cfg.calibrate!r}; choose temperature (or leave it out)")
    if cfg.calibrate == "temperature" and cfg.arch.startswith("dinov2"):
        raise UsageError("--calibrate is not available for frozen-backbone probes (dinov2_*) yet; leave it out")
    if cfg.act == "qact" and cfg.batch_size < 2:
        raise UsageError("--act qact needs --batch-size ≥ 2: the batch is the activation's context")


def resolve_head(head: str) -> str:
    """`--head quantile` trains the default variant and records it ("quantile:<variant>"), so that
    checkpoints from before variants (head "quantile") keep loading as the first reading."""
    from .nn.heads import DEFAULT_VARIANT

    return f"quantile:{DEFAULT_VARIANT}" if head == "quantile" else head


def model_info(cfg: TrainConfig, ds: Dataset, input_size) -> dict:
    arch_kwargs: dict = {"input_size": list(input_size)}
    if cfg.arch == "resnet18":
        arch_kwargs["placement"] = cfg.placement
    if cfg.act == "qact" and cfg.qact:
        arch_kwargs["qact_kwargs"] = dict(cfg.qact)
    return {
        "arch": cfg.arch, "act": cfg.act, "head": resolve_head(cfg.head), "num_classes": ds.num_classes,
        "arch_kwargs": arch_kwargs, "input_size": list(input_size),
        "mean": [float(m) for m in ds.mean], "std": [float(s) for s in ds.std],
        "classes": list(ds.classes) if ds.classes else None, "backbone": None,
    }


def batch_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_kind: str) -> torch.Tensor:
    """The head's own loss (cross-entropy, or the quantile head's weighted BCE), plus the watershed
    loss on the embedding when asked. `model` may be wrapped in DistributedDataParallel."""
    head = getattr(model, "module", model).head
    if loss_kind == "watershed":
        from .nn.losses import watershed_loss

        logits, feats = model(x, return_features=True)
        return head.loss(logits, y) + watershed_loss(feats, y)
    return head.loss(model(x), y)


@torch.no_grad()
def accuracy(model: nn.Module, loader, device, mean, std) -> float:
    model.eval()
    correct = total = 0
    for xb, yb in distributed.local_batches(loader):  # under torchrun: this rank's share of the batches
        xb = to_model_input(xb.to(device, non_blocking=True), mean, std)
        correct += (model(xb).argmax(1).cpu() == yb).sum().item()
        total += len(yb)
    correct, total = distributed.sum_over_ranks(correct, total)
    return correct / max(total, 1)


def train(cfg: TrainConfig, on_epoch: Callable[[dict], None] | None = None,
          on_step: Callable[[int, int, float], None] | None = None, log: Callable[[str], None] = lambda s: None) -> dict:
    """Train and write the best checkpoint to `cfg.out`. Returns the checkpoint's `train` section."""
    validate_config(cfg)
    if cfg.arch.startswith("dinov2") and distributed.launched():
        raise UsageError("a frozen-backbone probe (dinov2_*) trains in one process; run it without torchrun")
    if cfg.arch.startswith("dinov2"):
        from .models.probe import train_probe

        return train_probe(cfg, log=log)
    if cfg.weights:
        raise UsageError("--weights is only for frozen backbones (--arch dinov2_vits14)")
    device = distributed.setup(cfg.device)  # under torchrun: this rank's device, process group joined
    if distributed.active():
        # per-rank BatchNorm/QAct statistics (--no-sync-context) need two samples on every rank
        distributed.local_batch_size(cfg.batch_size, 1 if cfg.sync_context else 2)
    out, state_path = Path(cfg.out), Path(str(cfg.out) + ".state")
    ds = distributed.main_first(lambda: get_dataset(cfg.dataset, cfg.data_root, cfg.download))
    source = ds.split("train")
    if len(source) < 10:
        raise InputError(f"{cfg.dataset}: only {len(source)} training images; need at least 10 for the 80:20 split")
    tr_idx, va_idx = split_train_val(len(source))
    train_src, val_src = source.subset(tr_idx), source.subset(va_idx)
    input_size = source.image_size
    info = model_info(cfg, ds, input_size)

    seed_everything(cfg.seed)
    try:
        model = build_model(cfg.arch, act=cfg.act, num_classes=ds.num_classes, head=info["head"], **info["arch_kwargs"])
    except ValueError as e:
        raise UsageError(str(e)) from None
    model.to(device)
    # the module the training step calls: `model` itself, or under torchrun `model` wrapped in DDP
    step_model = distributed.prepare_training(model, device, cfg.sync_context)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.1, patience=cfg.lr_patience, cooldown=10,
                                                       threshold=0.01, threshold_mode="abs", min_lr=1e-6)
    start_epoch, best, best_epoch, stale, history = 0, -1.0, -1, 0, []
    best_state = None
    # under torchrun rank 0 reads the state and hands it to every rank (other nodes may not see the file)
    st = distributed.from_main(lambda: read_checkpoint(state_path) if cfg.resume and state_path.is_file() else None)
    if st is not None:
        if st.get("config", {}).get("arch") != cfg.arch or st.get("config", {}).get("dataset") != cfg.dataset:
            raise InputError(f"{state_path} belongs to another run ({st.get('config', {}).get('arch')} on "
                             f"{st.get('config', {}).get('dataset')}); remove it or change --out")
        model.load_state_dict(st["state_dict"])
        opt.load_state_dict(st["optimizer"])
        sched.load_state_dict(st["scheduler"])
        start_epoch, best, best_epoch, stale, history = st["epoch"], st["best"], st["best_epoch"], st["stale"], st["history"]
        best_state = st["best_state_dict"]
        torch.set_rng_state(st["rng"])
        log(f"resuming {out} from epoch {start_epoch} (best validation accuracy so far {best:.4f})")
    elif cfg.resume:
        log(f"no saved state at {state_path}; starting from scratch")

    train_cfg = {k: v for k, v in asdict(cfg).items() if k not in ("resume", "device", "out", "workers")}
    val_loader = make_loader(val_src, max(cfg.batch_size, 256 if cfg.act != "qact" else cfg.batch_size), workers=cfg.workers)
    aug_gen = torch.Generator().manual_seed(distributed.rank_seed(cfg.seed + 1))
    t0, epoch, stopped_early = time.time(), start_epoch, False
    for epoch in range(start_epoch, cfg.epochs):
        step_model.train()
        if distributed.active():  # this rank's share of the epoch (DistributedSampler), batch_size / world_size a step
            loader = distributed.train_loader(train_src, cfg.batch_size, seed=cfg.seed * 1000 + epoch, workers=cfg.workers)
        else:  # drop a last batch of one: a QAct or BatchNorm layer cannot form a context from one sample
            loader = make_loader(train_src, cfg.batch_size, shuffle=True, seed=cfg.seed * 1000 + epoch,
                                 workers=cfg.workers, drop_last=len(train_src) % cfg.batch_size == 1)
        steps = len(loader)
        total = 0.0
        for step, (xb, yb) in enumerate(loader):
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            if cfg.augment:
                xb = crop_flip(xb, aug_gen)
            loss = batch_loss(step_model, to_model_input(xb, ds.mean, ds.std), yb, cfg.loss)
            if not torch.isfinite(loss):
                raise InputError(f"training diverged at epoch {epoch + 1} (loss {loss.item()}); lower --lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item()
            if on_step:
                on_step(step + 1, steps, loss.item())
        val_acc = accuracy(model, val_loader, device, ds.mean, ds.std)
        sched.step(val_acc)
        (mean_loss,) = distributed.sum_over_ranks(total / max(steps, 1) / distributed.world_size())
        row = {"epoch": epoch + 1, "loss": mean_loss, "val_acc": val_acc, "lr": opt.param_groups[0]["lr"]}
        history.append(row)
        if val_acc > best:
            stale = 0 if val_acc > best + 1e-3 else stale + 1
            best, best_epoch = val_acc, epoch + 1
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            if distributed.is_main():
                save_checkpoint(make_checkpoint(model, info, _train_info(cfg, train_cfg, best, best_epoch, history, False)), out)
        else:
            stale += 1
        if distributed.is_main():  # rank 0 alone writes; every rank holds the same weights
            save_checkpoint({
                "format": "qact-checkpoint", "model": info, "config": train_cfg, "epoch": epoch + 1, "best": best,
                "best_epoch": best_epoch, "stale": stale, "history": history, "state_dict": model.state_dict(),
                "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "best_state_dict": best_state,
                "rng": torch.get_rng_state(),
            }, state_path)
        if on_epoch:
            on_epoch(row)
        if stale >= cfg.early_stop:
            stopped_early = True
            log(f"early stop after epoch {epoch + 1}: no 0.001 gain in validation accuracy for {cfg.early_stop} epochs")
            break
    if best_state is None:
        raise InputError(f"{out}: nothing to write (no epoch ran); raise --epochs or drop --resume")
    final = copy.deepcopy(model).cpu()
    final.load_state_dict(best_state)
    train_info = _train_info(cfg, train_cfg, best, best_epoch, history, stopped_early)
    train_info["elapsed_s"] = round(time.time() - t0, 2)
    train_info["environment"] = environment(device)
    _calibrate(cfg, final, info, train_info, val_loader, device, ds, log)
    if distributed.is_main():
        save_checkpoint(make_checkpoint(final, info, train_info), out)
        state_path.unlink(missing_ok=True)
    distributed.barrier()  # the checkpoint exists on return, on every rank
    return train_info


def _calibrate(cfg: TrainConfig, model: nn.Module, info: dict, train_info: dict, val_loader, device, ds, log) -> None:
    """--calibrate temperature: T fitted on the validation split, stored as the model's `temperature`."""
    if cfg.calibrate in (None, "none"):
        return
    from .calibration import fit_temperature, model_outputs

    logits, labels = model_outputs(model.to(device), val_loader, device, ds.mean, ds.std)
    model.cpu()
    info["temperature"] = fit_temperature(logits, labels)
    nll = lambda t: torch.nn.functional.cross_entropy(logits.double() / t, labels.long()).item()  # noqa: E731
    train_info["calibration"] = {"method": "temperature", "split": "val", "temperature": info["temperature"],
                                 "val_nll_before": nll(1.0), "val_nll_after": nll(info["temperature"])}
    log(f"temperature scaling: T = {info['temperature']:.4f} (validation NLL {nll(1.0):.4f} -> "
        f"{nll(info['temperature']):.4f})")


def _train_info(cfg: TrainConfig, train_cfg: dict, best: float, best_epoch: int, history: list, stopped_early: bool) -> dict:
    return {
        "dataset": cfg.dataset, "epochs": len(history), "max_epochs": cfg.epochs, "seed": cfg.seed, "loss": cfg.loss,
        "head": cfg.head, "batch_size": cfg.batch_size, "lr": cfg.lr, "optimizer": "adam",
        "split": {"val_fraction": VAL_FRACTION, "seed": SPLIT_SEED},
        "best_val_acc": float(best), "best_epoch": best_epoch, "stopped_early": stopped_early,
        "history": history, "config": train_cfg, "distributed": distributed.describe(cfg.sync_context),
    }
