"""Reading the tables: one channel affine, one clamp, one int32 cast and one gather per element.

`_lookup` is the forward kernel of every path (training, eval with autograd, and eval with the
BatchNorms folded into the affine); `_QActFunction` adds the backward, the KDE density read back
with the int32 index that forward saved (paper, Algorithm 2: grad = upstream x density).
docs/qact-layer.md explains the choices and their measured cost.
"""

from __future__ import annotations

import threading

import torch
from torch import Tensor

from .table import Table

_SCRATCH = threading.local()


def _scratch(numel: int, device: torch.device) -> Tensor | None:
    """A per-thread float32 buffer reused by eval lookups on CPU. Large fresh CPU allocations are
    returned to the OS on free and page-fault on every use; keeping one buffer of the largest
    activation seen avoids that for the temporary index. (CUDA's caching allocator needs no help.)
    The buffer is always a normal tensor: one made under torch.inference_mode() could not be written
    later outside it (e.g. an eval pass, then a test-time-adaptation pass under no_grad)."""
    if device.type != "cpu":
        return None
    buf = getattr(_SCRATCH, "buf", None)
    if buf is None or buf.numel() < numel:
        with torch.inference_mode(False):
            buf = torch.empty(numel)
        _SCRATCH.buf = buf
    return buf[:numel]


def _channel_affine(x3: Tensor, scale: Tensor, bias: Tensor, out: Tensor) -> Tensor:
    """out = x3 * scale + bias per channel. On CPU the eval BatchNorm kernel (mean 0, var 1, eps 0)
    does it about 25% faster than addcmul's broadcasting, with the same result."""
    c = x3.shape[1]
    if x3.device.type == "cpu":
        zero, one = scale.new_zeros(c), scale.new_ones(c)
        return torch.ops.aten.native_batch_norm.out(x3, scale, bias, zero, one, False, 0.0, 0.0, out=out,
                                                    save_mean=scale.new_empty(0), save_invstd=scale.new_empty(0))[0]
    return torch.addcmul(bias.view(1, c, 1), x3, scale.view(1, c, 1), out=out)


def _lookup(x3: Tensor, scale: Tensor, bias: Tensor, table: Tensor, offsets: Tensor, keep_index: bool,
            out: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
    """y = table[c, floor(clamp(x*scale + bias))] per channel c: the value of the cell x falls in.

    Four passes over the activation and one gather. The float position is converted to the int32
    flat index (with channel offsets) in place, in its own memory; that index is returned when
    `keep_index` (for backward), else it lives in a reused scratch buffer. `out` (float32,
    contiguous, x3's shape) receives y if given: it may be x3 itself. A NaN input casts to an
    out-of-range index on x86 (a ValueError below) and to a valid one elsewhere (a finite output):
    the output is never NaN.
    """
    c, n = table.shape
    if x3.dtype != torch.float32:  # positions are computed in float32 (half inputs, autocast, float64)
        x3 = x3.float()
    # u (and the int32 index written over it) must be contiguous whatever x3's strides are
    # (channels_last, permuted): the flat views below need it; empty_like would copy x3's strides.
    ws = None if keep_index else _scratch(x3.numel(), x3.device)
    u = _channel_affine(x3, scale, bias, x3.new_empty(x3.shape) if ws is None else ws.view(x3.shape))
    u.clamp_(0, n - 1)
    idx = u.view(torch.int32)
    idx.copy_(u)  # same-size elements: each is read before it is overwritten
    idx.add_(offsets.view(1, c, 1))
    try:
        if out is None:
            y = table.view(-1).index_select(0, idx.view(-1)).view(u.shape)
        else:
            y = torch.index_select(table.view(-1), 0, idx.view(-1), out=out.view(-1)).view(u.shape)
    except IndexError as err:  # only an out-of-range index (a NaN position); anything else is a bug to show
        raise ValueError("QAct received NaN values in its input; check the data and the learning rate") from err
    return y, (idx if keep_index else None)


def table_lookup(table: Table, z: Tensor) -> Tensor:
    """The grounded CDF in `table` at z (N, C, ...) in z units: QAct's forward without BatchNorms.

    Public so that a table from `grounded_table` can be read outside a layer (the tests compare it
    with the float64 reference in `reference.py`)."""
    z3 = z.reshape(z.shape[0], z.shape[1], -1)
    offsets = torch.arange(z.shape[1], device=z.device, dtype=torch.int32) * table.cdf.shape[1]
    return _lookup(z3, table.inv_step, table.zero, table.cdf, offsets, keep_index=True)[0].view(z.shape)


def _staircase(y: Tensor, levels: int) -> Tensor:
    """In place: the official output tau_{k+1}, k = #{quantiles <= x}, tau_i = i/(n+1) (the staircase of
    adityac20/quantile_activation, src/quantile_activation_base.py, `CustomQuantFunction2D.forward`)."""
    return y.mul_(levels + 1).floor_().clamp_(0, levels - 1).add_(1).div_(levels + 1)


class _QActFunction(torch.autograd.Function):
    """y = CDF(z) by table lookup; dy/dz = the KDE density at z's cell (read back with the saved index).

    With `overwrite`, y is written into z's memory (z must be a temporary nobody saved, e.g. the
    output of QAct's own input BatchNorm, whose backward needs its input, not its output)."""

    @staticmethod
    def forward(ctx, z3, scale, bias, cdf, density, offsets, levels, overwrite):
        y, idx = _lookup(z3, scale, bias, cdf, offsets, keep_index=True, out=z3 if overwrite else None)
        if overwrite:
            y = z3  # autograd wants the very object marked dirty back
            ctx.mark_dirty(z3)
        if levels:
            y = _staircase(y, levels)
        ctx.save_for_backward(idx, density)
        return y

    @staticmethod
    def backward(ctx, grad):
        idx, density = ctx.saved_tensors
        d = density.reshape(-1).index_select(0, idx.view(-1)).view(grad.shape)
        return d.mul_(grad), None, None, None, None, None, None, None
