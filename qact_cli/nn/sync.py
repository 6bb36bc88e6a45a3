"""Statistics over the global batch of a data-parallel run: BatchNorm and QAct context synchronisation.

The layers stay usable without a process group: everything here falls back to the plain
single-process behaviour unless torch.distributed is initialised with more than one rank. The
process group itself (joining, sharding, gathering predictions) is `qact_cli.distributed`'s job;
this module talks to torch.distributed directly so that `nn` never imports it.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


def _active() -> bool:
    """A process group with more than one rank is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


# --------------------------------------------------------------------------------------- BatchNorm
class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks with a gradient: the gradient of a sum is the sum of every rank's upstream gradient."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad)
        return grad


class _SyncBatchNormMixin:
    """Training-mode statistics over the global batch (all ranks), on any device and backend.

    torch.nn.SyncBatchNorm refuses CPU tensors; this one pools per-rank counts, means and sums of
    squared deviations with one differentiable all_reduce (in float64, so that E[x²] − E[x]² does not
    cancel) and otherwise behaves as the BatchNorm class it extends (same state_dict, isinstance)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and _active()):
            return super().forward(x)
        self._check_input_dim(x)
        c = x.shape[1]
        dims = [0] + list(range(2, x.dim()))
        shape = (1, c) + (1,) * (x.dim() - 2)
        n = x.numel() // c
        mean = x.mean(dims)
        m2 = ((x - mean.view(shape)) ** 2).sum(dims)
        local = torch.cat([(mean * n).double(), (m2 + n * mean * mean).double(), x.new_full((1,), n, dtype=torch.float64)])
        total = _AllReduceSum.apply(local)
        count = total[-1]  # >= 2 with two or more ranks; no .item(): it would stall the GPU on every layer
        g_mean = total[:c] / count
        g_var = (total[c:2 * c] / count - g_mean * g_mean).clamp_min(0)
        y = (x - g_mean.to(x.dtype).view(shape)) * torch.rsqrt(g_var.to(x.dtype) + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(g_mean.to(self.running_mean.dtype), alpha=m)
                unbiased = g_var * (count / (count - 1).clamp_min(1))
                self.running_var.mul_(1 - m).add_(unbiased.to(self.running_var.dtype), alpha=m)
        return y


class SyncBatchNorm1d(_SyncBatchNormMixin, nn.BatchNorm1d):
    pass


class SyncBatchNorm2d(_SyncBatchNormMixin, nn.BatchNorm2d):
    pass


class SyncBatchNorm3d(_SyncBatchNormMixin, nn.BatchNorm3d):
    pass


_SYNC_BN = {nn.BatchNorm1d: SyncBatchNorm1d, nn.BatchNorm2d: SyncBatchNorm2d, nn.BatchNorm3d: SyncBatchNorm3d}


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Swap every BatchNorm{1,2,3}d for its Sync version in place, sharing parameters and buffers."""
    sync = _SYNC_BN.get(type(module))
    if sync is not None:
        new = sync.__new__(sync)
        new.__dict__.update(module.__dict__)  # same Parameters, buffers, hooks and training flag
        return new
    for name, child in module.named_children():
        new_child = convert_sync_batchnorm(child)
        if new_child is not child:
            setattr(module, name, new_child)
    return module


# --------------------------------------------------------------------------------------- QAct context
def sync_context(module: nn.Module, sample: torch.Tensor) -> torch.Tensor:
    """The hook a QAct layer calls on its per-channel context sample (C, k) before building its CDF.

    Training under a process group with the layer's `sync_context` set: returns (C, k_0 + ... + k_{W-1}),
    every rank's sample in rank order (no gradient flows through it), the way SyncBatchNorm pools
    statistics. Otherwise returns `sample`."""
    if module.training and getattr(module, "sync_context", False) and _active():
        return all_gather_context(sample)
    return sample


def all_gather_context(sample: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's `sample` (..., k_r) along the last dimension, in rank order."""
    s = sample.detach().contiguous()
    w = dist.get_world_size()
    k = torch.tensor([s.shape[-1]], dtype=torch.int64, device=s.device)
    ks = [torch.empty_like(k) for _ in range(w)]
    dist.all_gather(ks, k)
    ks = [int(v) for v in ks]
    k_max = max(ks)
    if s.shape[-1] < k_max:  # all_gather needs equal shapes: pad, then trim
        s = torch.cat([s, s.new_zeros(s.shape[:-1] + (k_max - s.shape[-1],))], dim=-1)
    parts = [torch.empty_like(s) for _ in range(w)]
    dist.all_gather(parts, s)
    return torch.cat([p[..., :kr] for p, kr in zip(parts, ks)], dim=-1)
