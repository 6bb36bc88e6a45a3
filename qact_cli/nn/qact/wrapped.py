"""BatchNorm -> QAct -> BatchNorm in training as one autograd function on the native kernels (native.c).

With the batch statistics known, both BatchNorms are per-channel affine maps: the input one folds
into the lookup's affine (the normalised z is never written) and the output one into the table that
the output is gathered from. Backward is written out: for a BatchNorm y = a x + c with a = w / sigma
(Ioffe & Szegedy 2015, section 3), the input gradient is
    dx = a (g - mean(g) - xhat mean(g xhat)),   xhat = (x - mu) / sigma,
which per channel is a*g + p*x + q once the two sums are known. The gradient through QAct itself is
the KDE density at each value's cell (paper, Algorithm 2), so the gradient at z is
u[cell] * g + v[cell] for two small per-cell tables. Forward is three passes over the activation
(moments of x; moments of y; the output), backward three, each recomputing the cells from x instead
of storing an index (docs/qact-layer.md, "The native kernels"), where autograd's BatchNorms and the
torch lookup make about twenty.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from . import native
from .lookup import _staircase
from .native import f32
from .table import Table


def usable(layer: nn.Module, x3: Tensor) -> bool:
    """Whether `wrapped_forward` can stand in for layer.bn_in -> lookup -> layer.bn_out on x3: the
    native kernels selected, CPU float32, plain nn.BatchNorm1d with affine weights and running
    statistics, more than one value per channel (else nn.BatchNorm1d's own error)."""
    bns = (layer.bn_in, layer.bn_out)
    return (all(type(bn) is nn.BatchNorm1d and bn.affine and bn.track_running_stats for bn in bns)
            and x3.shape[0] * x3.shape[2] > 1 and not torch.is_autocast_enabled(x3.device.type)
            and native.active(x3))


def _mean_var(total: Tensor, total_sq: Tensor, n: int, eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """Per-channel mean, biased variance and 1/sqrt(var + eps) (float32) from float64 sums of n values."""
    mean = total / n
    var = (total_sq / n - mean * mean).clamp_min_(0.0)
    return mean.float(), var.float(), torch.rsqrt(var + eps).float()


def batch_stats(x3: Tensor, eps: float) -> tuple[Tensor, Tensor, Tensor]:
    """Per-channel batch mean, biased variance (summed in float64) and 1/sqrt(var + eps), float32."""
    return _mean_var(*native.moments(x3), x3.shape[0] * x3.shape[2], eps)


@torch.no_grad()
def _update_running(bn: nn.BatchNorm1d, mean: Tensor, var: Tensor, n: int) -> None:
    """nn.BatchNorm's running statistics update (unbiased variance, momentum or cumulative average)."""
    bn.num_batches_tracked.add_(1)
    rate = bn.momentum if bn.momentum is not None else 1.0 / float(bn.num_batches_tracked)
    bn.running_mean.mul_(1 - rate).add_(mean.to(bn.running_mean.dtype), alpha=rate)
    bn.running_var.mul_(1 - rate).add_((var * (n / (n - 1))).to(bn.running_var.dtype), alpha=rate)


class _Wrapped(torch.autograd.Function):
    """(x, w1, b1, w2, b2) -> BN_out(QAct(BN_in(x))) given BN_in's statistics and the table."""

    @staticmethod
    def forward(ctx, x3, w1, b1, w2, b2, stats_in, table, levels, bn_out):
        n = x3.shape[0] * x3.shape[2]
        mean1, _, inv1 = stats_in
        a1 = w1.detach() * inv1
        scale = f32(a1 * table.inv_step)
        bias = f32(torch.addcmul(table.zero, b1.detach() - mean1 * a1, table.inv_step))
        cdf = f32(_staircase(table.cdf.clone(), levels) if levels else table.cdf)  # per cell: y = f(cdf[cell])
        mean2, var2, inv2 = _mean_var(*native.table_moments(x3, scale, bias, cdf), n, bn_out.eps)
        _update_running(bn_out, mean2, var2, n)
        a2 = w2.detach() * inv2
        folded = f32(torch.addcmul((b2.detach() - mean2 * a2)[:, None], cdf, a2[:, None]))
        out = native.lookup(x3, torch.empty_like(x3), scale, bias, folded)
        density = f32(table.density) if table.density is not None else None
        # no cell index is kept: backward recomputes the cells from x (x3 is saved anyway)
        ctx.save_for_backward(x3, scale, bias, cdf, density, w1.detach(), w2.detach(), mean1, inv1, mean2, inv2)
        return out

    @staticmethod
    def backward(ctx, g):
        x3, scale, bias, cdf, density, w1, w2, mean1, inv1, mean2, inv2 = ctx.saved_tensors
        g = f32(g)
        n = x3.shape[0] * x3.shape[2]
        # BN_out: dL/dy = a2 g + k y + m per channel, from sum(g) and sum(g y)
        sum_g, sum_gy = (t.float() for t in native.table_moments(x3, scale, bias, cdf, g))
        dw2 = (sum_gy - mean2 * sum_g) * inv2  # sum(g * yhat)
        a2 = w2 * inv2
        k = -a2 * inv2 * dw2 / n
        m = -a2 * sum_g / n - k * mean2
        # through QAct: dL/dz = density[cell] * dL/dy = u[cell] g + v[cell]
        u = f32(density * a2[:, None])
        v = f32(density * torch.addcmul(m[:, None], cdf, k[:, None]))
        sum_gz, sum_gzx = (t.float() for t in native.gz_moments(g, x3, scale, bias, u, v))
        # BN_in: dx = a1 gz + p x + q per channel, from sum(gz) and sum(gz x)
        dw1 = (sum_gzx - mean1 * sum_gz) * inv1  # sum(gz * xhat)
        a1 = w1 * inv1
        p = -a1 * inv1 * dw1 / n
        dx = native.grad_input(g, x3, scale, bias, u, v, f32(a1), f32(p), f32(-a1 * sum_gz / n - p * mean1))
        return dx, dw1, sum_gz, dw2, sum_g, None, None, None, None


def wrapped_forward(layer: nn.Module, x3: Tensor, stats_in: tuple[Tensor, Tensor, Tensor], table: Table,
                    levels: int) -> Tensor:
    """BN_in -> lookup in `table` -> BN_out of `layer` on contiguous x3 (N, C, L), updating both running
    statistics as nn.BatchNorm1d does; `stats_in` from `batch_stats(x3)`."""
    bn_in, bn_out = layer.bn_in, layer.bn_out
    _update_running(bn_in, stats_in[0], stats_in[1], x3.shape[0] * x3.shape[2])
    return _Wrapped.apply(x3, bn_in.weight, bn_in.bias, bn_out.weight, bn_out.bias, stats_in, table, levels, bn_out)
