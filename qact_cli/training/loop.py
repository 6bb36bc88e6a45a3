"""Network training with the paper's schedule (qact_cli/schedule.py): `train_network(cfg)` writes the best checkpoint.

One run is four steps: `setup` (device, data and its 80:20 split, model, optimizer, scheduler),
`resume` (from `<out>.state`, see state.py), `run_epoch` (one pass over the training split, then
validation), and the saves (`save_best` when validation accuracy is the best so far, `save_state`
after every epoch, `finish` with the best weights). Frozen-backbone families (DINOv2 probes) are
fitted by the probe trainer instead (probes/fit.py); `training.train` picks one or the other.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .. import distributed
from ..data import Dataset, ImageSource, get_dataset, make_loader
from ..data.transforms import crop_flip, to_model_input
from ..errors import InputError, UsageError
from ..models import build_model
from ..models.checkpoint_file import make_checkpoint, save_checkpoint
from ..nn.heads import resolve_head
from ..utils import environment, seed_everything
from ..schedule import EarlyStopping, make_optimizer, make_scheduler, recorded_options, split_record, split_train_val
from .config import TrainConfig
from .state import check_resumable, read_state, save_state, state_path

def model_info(cfg: TrainConfig, ds: Dataset, input_size) -> dict:
    """The checkpoint's `model` section: what `rebuild_model` needs, and the input normalisation."""
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
        from ..nn.losses import watershed_loss

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


@dataclass
class Run:
    """Everything one training run carries from epoch to epoch."""

    cfg: TrainConfig
    device: torch.device
    ds: Dataset
    train_src: ImageSource
    val_src: ImageSource
    info: dict  # the checkpoint's `model` section
    train_cfg: dict  # the options recorded in the checkpoint and the state
    model: nn.Module
    step_model: nn.Module  # the module the training step calls: `model`, or under torchrun `model` in DDP
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.ReduceLROnPlateau
    stopper: EarlyStopping
    out: Path
    state_path: Path
    start_epoch: int = 0
    history: list = field(default_factory=list)
    best_state: dict | None = None


def setup(cfg: TrainConfig) -> Run:
    """Device, data and its split, model, optimizer and scheduler of a fresh run."""
    device = distributed.setup(cfg.device)  # under torchrun: this rank's device, process group joined
    if distributed.active():
        # per-rank BatchNorm/QAct statistics (--no-sync-context) need two samples on every rank
        distributed.local_batch_size(cfg.batch_size, 1 if cfg.sync_context else 2)
    ds = distributed.main_first(lambda: get_dataset(cfg.dataset, cfg.data_root, cfg.download))
    source = ds.split("train")
    if len(source) < 10:
        raise InputError(f"{cfg.dataset}: only {len(source)} training images; need at least 10 for the 80:20 split")
    tr_idx, va_idx = split_train_val(len(source))
    info = model_info(cfg, ds, source.image_size)

    seed_everything(cfg.seed)
    try:
        model = build_model(cfg.arch, act=cfg.act, num_classes=ds.num_classes, head=info["head"], **info["arch_kwargs"])
    except ValueError as e:
        raise UsageError(str(e)) from None
    if cfg.batch_size < 2 and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        # BatchNorm in training mode needs two values per channel; refuse rather than fail mid-epoch
        raise UsageError(f"--batch-size 1 cannot train {cfg.arch}: its BatchNorm layers need at least 2 images per "
                         "batch; use --batch-size 2 or more")
    model.to(device)
    step_model = distributed.prepare_training(model, device, cfg.sync_context)
    opt = make_optimizer(model.parameters(), cfg.lr)
    return Run(cfg=cfg, device=device, ds=ds, train_src=source.subset(tr_idx), val_src=source.subset(va_idx), info=info,
               train_cfg=recorded_options(cfg), model=model,
               step_model=step_model, opt=opt, sched=make_scheduler(opt, cfg.lr_patience),
               stopper=EarlyStopping(cfg.early_stop), out=Path(cfg.out), state_path=state_path(cfg.out))


def resume(run: Run, log: Callable[[str], None]) -> None:
    """With --resume, continue from `<out>.state` when it exists (it must come from the same run)."""
    cfg = run.cfg
    # under torchrun rank 0 reads the state and hands it to every rank (other nodes may not see the file)
    st = distributed.from_main(lambda: read_state(run.state_path) if cfg.resume and run.state_path.is_file() else None)
    if st is None:
        if cfg.resume:
            log(f"no saved state at {run.state_path}; starting from scratch")
        return
    check_resumable(run.state_path, st, cfg.arch, cfg.dataset, run.train_cfg)
    run.model.load_state_dict(st["state_dict"])
    run.opt.load_state_dict(st["optimizer"])
    run.sched.load_state_dict(st["scheduler"])
    run.stopper.load_state_dict(st)
    run.start_epoch, run.history, run.best_state = st["epoch"], st["history"], st["best_state_dict"]
    torch.set_rng_state(st["rng"])
    log(f"resuming {run.out} from epoch {run.start_epoch} (best validation accuracy so far {run.stopper.best:.4f})")


def train_loader(run: Run, epoch: int):
    cfg = run.cfg
    if distributed.active():  # this rank's share of the epoch (DistributedSampler), batch_size / world_size a step
        return distributed.train_loader(run.train_src, cfg.batch_size, seed=cfg.seed * 1000 + epoch, workers=cfg.workers)
    # drop a last batch of one: a QAct or BatchNorm layer cannot form a context from one sample
    return make_loader(run.train_src, cfg.batch_size, shuffle=True, seed=cfg.seed * 1000 + epoch, workers=cfg.workers,
                       drop_last=len(run.train_src) % cfg.batch_size == 1)


def run_epoch(run: Run, epoch: int, val_loader, aug_gen: torch.Generator,
              on_step: Callable[[int, int, float], None] | None = None) -> dict:
    """One pass over the training split, then validation and the scheduler step. Returns the history row."""
    cfg, ds = run.cfg, run.ds
    run.step_model.train()
    loader = train_loader(run, epoch)
    steps = len(loader)
    total = 0.0
    for step, (xb, yb) in enumerate(loader):
        xb, yb = xb.to(run.device, non_blocking=True), yb.to(run.device, non_blocking=True)
        if cfg.augment:
            xb = crop_flip(xb, aug_gen)
        loss = batch_loss(run.step_model, to_model_input(xb, ds.mean, ds.std), yb, cfg.loss)
        if not torch.isfinite(loss):
            raise InputError(f"training diverged at epoch {epoch + 1} (loss {loss.item()}); lower --lr")
        run.opt.zero_grad(set_to_none=True)
        loss.backward()
        run.opt.step()
        total += loss.item()
        if on_step:
            on_step(step + 1, steps, loss.item())
    val_acc = accuracy(run.model, val_loader, run.device, ds.mean, ds.std)
    run.sched.step(val_acc)
    (mean_loss,) = distributed.sum_over_ranks(total / max(steps, 1) / distributed.world_size())
    return {"epoch": epoch + 1, "loss": mean_loss, "val_acc": val_acc, "lr": run.opt.param_groups[0]["lr"]}


def save_best(run: Run) -> None:
    """Keep the current weights as the best ones, and write them to `<out>` (rank 0)."""
    run.best_state = {k: v.detach().cpu().clone() for k, v in run.model.state_dict().items()}
    if distributed.is_main():
        save_checkpoint(make_checkpoint(run.model, run.info, train_info(run, False)), run.out)


def save_run_state(run: Run, epoch: int) -> None:
    """Write `<out>.state` after epoch `epoch` (1-based); rank 0 alone writes, every rank holds the same weights."""
    if distributed.is_main():
        save_state({
            "model": run.info, "config": run.train_cfg, "epoch": epoch, **run.stopper.state_dict(),
            "history": run.history, "state_dict": run.model.state_dict(), "optimizer": run.opt.state_dict(),
            "scheduler": run.sched.state_dict(), "best_state_dict": run.best_state, "rng": torch.get_rng_state(),
        }, run.state_path)


def finish(run: Run, stopped_early: bool, t0: float, val_loader=None, log: Callable[[str], None] = lambda s: None) -> dict:
    """Write the best weights to `<out>`, remove the state, and return the checkpoint's `train` section."""
    if run.best_state is None:
        raise InputError(f"{run.out}: nothing to write (no epoch ran); raise --epochs or drop --resume")
    final = copy.deepcopy(run.model).cpu()
    final.load_state_dict(run.best_state)
    info = train_info(run, stopped_early)
    info["elapsed_s"] = round(time.time() - t0, 2)
    info["environment"] = environment(run.device)
    refit_sharpness(run, final, info, log)  # before the temperature, which is fitted on the final outputs
    calibrate(run, final, info, val_loader, log)
    if distributed.is_main():
        save_checkpoint(make_checkpoint(final, run.info, info), run.out)
        run.state_path.unlink(missing_ok=True)
    distributed.barrier()  # the checkpoint exists on return, on every rank
    return info


def refit_sharpness(run: Run, model: nn.Module, info: dict, log: Callable[[str], None]) -> None:
    """A quantile head whose sharpness a (p ~ q^a) is fitted by NLL gets it fitted exactly once training
    ends, the network held fixed: on the training split (the paper fits its classifier on the train
    embedding), in eval mode with every QAct's context the batch, batches of the training batch size
    (the context the network was trained with). Recorded as the checkpoint's `train.head_sharpness`."""
    head = getattr(model, "head", None)
    if not getattr(head, "refits_sharpness", False):
        return
    from ..calibration import fit_sharpness, model_outputs
    from ..nn import QAct, set_context

    cfg, ds = run.cfg, run.ds
    # seeded shuffled batches, as in training (a batch in file order could hold one class); no augmentation
    loader = make_loader(run.train_src, cfg.batch_size, shuffle=True, seed=cfg.seed * 1000 + cfg.epochs,
                         workers=cfg.workers, drop_last=len(run.train_src) % cfg.batch_size == 1)
    contexts = [(m, m.context) for m in model.modules() if isinstance(m, QAct)]
    set_context(model, "batch")
    try:  # every rank sees every batch, so that every rank fits the same a
        outputs, labels = model_outputs(model.to(run.device), loader, run.device, ds.mean, ds.std, shard=False)
    finally:
        for m, context in contexts:
            m.context = context
        model.cpu()
    record = info["head_sharpness"] = {"split": "train", "batch_size": cfg.batch_size, "context": "batch",
                                       **fit_sharpness(head, outputs, labels)}
    log(f"quantile head sharpness refitted on the training split: a = {record['a_before']:.3f} -> {record['a']:.3f} "
        f"(train NLL {record['train_nll_before']:.4f} -> {record['train_nll_after']:.4f})")


def calibrate(run: Run, model: nn.Module, info: dict, val_loader, log: Callable[[str], None]) -> None:
    """--calibrate temperature: T fitted on the validation split (Guo et al. 2017), stored as the
    model's `temperature`; evaluation then reports calibrated metrics beside the raw ones."""
    if run.cfg.calibrate in (None, "none"):
        return
    from ..calibration import fit_temperature, model_outputs

    ds = run.ds
    logits, labels = model_outputs(model.to(run.device), val_loader, run.device, ds.mean, ds.std)
    model.cpu()
    t = run.info["temperature"] = fit_temperature(logits, labels)

    def nll(temp: float) -> float:
        return torch.nn.functional.cross_entropy(logits.double() / temp, labels.long()).item()

    info["calibration"] = {"method": "temperature", "split": "val", "temperature": t,
                           "val_nll_before": nll(1.0), "val_nll_after": nll(t)}
    log(f"temperature scaling: T = {t:.4f} (validation NLL {nll(1.0):.4f} -> {nll(t):.4f})")


def train_info(run: Run, stopped_early: bool) -> dict:
    cfg = run.cfg
    return {
        "dataset": cfg.dataset, "epochs": len(run.history), "max_epochs": cfg.epochs, "seed": cfg.seed,
        "loss": cfg.loss, "head": cfg.head, "batch_size": cfg.batch_size, "lr": cfg.lr, "optimizer": "adam",
        "split": split_record(), "best_val_acc": float(run.stopper.best), "best_epoch": run.stopper.best_epoch,
        "stopped_early": stopped_early, "history": run.history, "config": run.train_cfg,
        "distributed": distributed.describe(cfg.sync_context),
    }


def train_network(cfg: TrainConfig, on_epoch: Callable[[dict], None] | None = None,
                  on_step: Callable[[int, int, float], None] | None = None,
                  log: Callable[[str], None] = lambda s: None) -> dict:
    """Train a network (options checked by `validate_config`) and write the best checkpoint to
    `cfg.out`. Returns the checkpoint's `train` section."""
    if cfg.weights:
        raise UsageError("--weights is only for frozen backbones (--backbone SPEC, --arch dinov2_vits14)")
    run = setup(cfg)
    resume(run, log)
    val_loader = make_loader(run.val_src, max(cfg.batch_size, 256 if cfg.act != "qact" else cfg.batch_size),
                             workers=cfg.workers)
    aug_gen = torch.Generator().manual_seed(distributed.rank_seed(cfg.seed + 1))
    t0, stopped_early = time.time(), False
    for epoch in range(run.start_epoch, cfg.epochs):
        row = run_epoch(run, epoch, val_loader, aug_gen, on_step)
        run.history.append(row)
        if run.stopper.update(row["val_acc"], epoch + 1):
            save_best(run)
        save_run_state(run, epoch + 1)
        if on_epoch:
            on_epoch(row)
        if run.stopper.should_stop:
            stopped_early = True
            log(run.stopper.message(epoch + 1))
            break
    return finish(run, stopped_early, t0, val_loader, log)
