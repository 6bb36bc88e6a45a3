"""Post-hoc temperature scaling (Guo et al. 2017, "On Calibration of Modern Neural Networks").

One scalar T > 0 is fitted on the validation split after training by minimising the NLL of
softmax(logits / T); accuracy is unchanged. The model's output may be logits or log-probabilities
(the quantile head's): they differ by a per-row constant, so softmax(output / T) is the same.
Evaluation reports the metrics at T beside the raw ones (eval/metrics.py `calibrated_metrics`).
"""

from __future__ import annotations

import torch
from torch import nn

from . import distributed
from .data.transforms import to_model_input

CALIBRATIONS = ("temperature",)
_T_RANGE = (1e-2, 1e2)  # beyond this the fit is meaningless (a constant or a one-hot prediction)


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, max_iter: int = 100) -> float:
    """The T minimising mean NLL of softmax(logits / T), by LBFGS on log T (so T stays positive).
    A 1-D convex problem (the NLL is convex in 1/T), so the fit does not depend on where it starts."""
    logits = logits.detach().double()
    labels = labels.long()
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    opt.step(closure)
    return float(log_t.detach().exp().clamp(*_T_RANGE))


def nll(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> float:
    """Mean NLL of softmax(logits / temperature), in float64."""
    return nn.functional.cross_entropy(logits.double() / temperature, labels.long()).item()


def fit_sharpness(head: nn.Module, outputs: torch.Tensor, labels: torch.Tensor) -> dict:
    """Refit the sharpness a of a quantile head (p ~ q^a, nn/heads.py) exactly, by NLL on `outputs`:
    the head's log-probabilities a log q - logsumexp, computed at its current a with the quantiles
    held fixed. softmax(outputs / T) is p ~ q^(a / T), so a' = a / T with T = fit_temperature(outputs),
    a 1-D convex fit that does not depend on how many SGD steps the training gave a. The new a is
    stored in the head (its `log_scale`, in the state_dict); returns the record for the checkpoint."""
    before = head.sharpness
    t = fit_temperature(outputs, labels)
    head.set_sharpness(before / t)
    return {"a_before": before, "a": head.sharpness, "train_nll_before": nll(outputs, labels),
            "train_nll_after": nll(outputs, labels, t)}


@torch.no_grad()
def model_outputs(model: nn.Module, loader, device, mean, std, shard: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's outputs (logits or log-probabilities) and labels over `loader`, in eval mode; under
    torchrun this rank's share of the batches, or every batch with `shard=False`."""
    model.eval()
    outs, ys = [], []
    for xb, yb in (distributed.local_batches(loader) if shard else loader):
        outs.append(model(to_model_input(xb.to(device), mean, std)).float().cpu())
        ys.append(yb)
    return torch.cat(outs), torch.cat(ys)
