"""`--head quantile`: the paper's quantile classifier (nn/heads.py) trained on fixed features with
the schedule of network training (qact_cli/schedule.py: Adam, ReduceLROnPlateau, early stopping,
best epoch on validation)."""

from __future__ import annotations

import copy
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..calibration import fit_sharpness
from ..errors import InputError, UsageError
from ..models.common import make_head
from ..nn import set_context
from ..schedule import EarlyStopping, make_optimizer, make_scheduler
from .features import feature_batches

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
    opt = make_optimizer(head.parameters(), lr)
    sched = make_scheduler(opt, lr_patience)
    stopper, best_state, history = EarlyStopping(early_stop, best_epoch=0), None, []
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
        if stopper.update(val_acc, epoch + 1):
            best_state = copy.deepcopy(head.state_dict())
        if stopper.should_stop:
            log(stopper.message(epoch + 1))
            break
    head.load_state_dict(best_state)
    sharpness = _refit_sharpness(head, xtr, ytr, batch_size, seed) if head.refits_sharpness else None
    head = head.cpu().eval()
    _fold_standardisation(head.fc, mu, sd)
    record = {"optimizer": "adam", "best_epoch": stopper.best_epoch, "val_acc": stopper.best, "history": history,
              "stopped_early": len(history) < epochs, "standardize": "folded into the head"}
    if sharpness:
        record["head_sharpness"] = sharpness
    return head, record


def _refit_sharpness(head: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int) -> dict:
    """The head's sharpness a (p ~ q^a) fitted exactly by NLL on the training features, the scores held
    fixed: eval mode, the head's QAct context the batch, seeded batches of the training batch size (the
    contexts it was trained with). See calibration.py `fit_sharpness`."""
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
