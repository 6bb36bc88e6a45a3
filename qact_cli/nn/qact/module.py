"""The QAct layer: BatchNorm -> QAct -> BatchNorm with a grounded-CDF output (Challa et al., arXiv
2405.11573, Algorithms 1 and 2), its training and eval paths, and the model-wide switches.

Forward: the context of a channel is its values over the batch (dense) or over batch x H x W
(conv). Negatives and positives each carry half of the mass, two sentinels +-c make a one-signed
channel well defined, so 0 maps to 0.5, negatives below, positives above (paper, eq. 3). Output
"interp" is the piecewise-linear CDF through the knots (-c, 0), (a_r, r/(2(m+1))), (0, 0.5),
(b_j, 0.5 + j/(2(p+1))), (c, 1); "step" is the official code's staircase of n_quantiles levels
(eq. 5). Backward: grad = upstream x density of the grounded distribution, a Gaussian KDE of
`kde_samples` weighted context values (eq. 4; the paper ignores the context's own dependence on z).

How it is made fast (docs/qact-layer.md): a bounded context sample (`table.sample_context`), a
tabulated CDF and density (`table.grounded_table`), a four-pass lookup (`lookup`). In eval the
BatchNorms around QAct are affine maps and are folded into the lookup: BN -> QAct -> BN costs one
lookup. Fresh large CPU allocations page-fault on every use, so the eval path converts in place
and reuses a scratch buffer (and, with inplace=True, writes its output into its input, as
nn.ReLU(inplace=True) does).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..sync import sync_context
from .lookup import _lookup, _QActFunction, _staircase
from .table import (BANDWIDTH_RULES, DEFAULT_CONTEXT_SIZE, DEFAULT_TABLE_SIZE, REFINE, Table, grounded_table,
                    sample_context, workspace)
from . import native
from .wrapped import batch_stats, usable, wrapped_forward

CONTEXTS = ("batch", "stored")
OUTPUTS = ("interp", "step")
_STORED_WHEN_ALL = 4096  # reservoir size when context_size=None ("use every value")


def _bn_affine(bn: nn.BatchNorm1d | None, c: int, ref: Tensor) -> tuple[Tensor, Tensor]:
    """An eval-mode BatchNorm as y = a*x + b per channel."""
    if bn is None:
        return torch.ones(c, device=ref.device), torch.zeros(c, device=ref.device)
    a = torch.rsqrt(bn.running_var.float() + bn.eps)
    if bn.weight is not None:
        a = a * bn.weight.detach().float()
    b = -a * bn.running_mean.float()
    if bn.bias is not None:
        b = b + bn.bias.detach().float()
    return a, b


def _eval_generator(device: torch.device) -> torch.Generator:
    """Eval draws its context positions from a fixed seed: the same batch always gives the same output."""
    return torch.Generator(device=device).manual_seed(20240519)


@dataclass
class _Cache:
    key: tuple
    table: Table


class QAct(nn.Module):
    """Quantile activation for (N, C) or (N, C, *spatial) inputs, wrapped BatchNorm -> QAct -> BatchNorm.

    wrap_bn: the paper's BatchNorm on either side (built here, so a fresh module loads a state_dict).
    output: "interp" (the piecewise-linear grounded CDF, in [0, 1]) or "step" (the official code's
    staircase of n_quantiles levels). kde_samples: the KDE for the gradient uses every
    (k // kde_samples)-th context value (between kde_samples and twice as many; None: all);
    bandwidth: a number (z units, 0.5 as the official code) or "silverman" / "scott".
    sentinel: the +-c appended to every context (values beyond count as at the sentinels).
    context: what eval-mode forwards use as each channel's context: "batch" (the current batch, the
    paper's protocol) or "stored" (a per-channel reservoir refreshed in every training forward and
    saved in the state_dict). Training always uses the current batch.
    context_size: values per channel the table is built from (None: all of them), and the size of
    the reservoir (4096 when None).
    context_momentum: share of the reservoir replaced per training batch, oldest first (0.5: the
    last two batches); None = cumulative (each batch weighs the same, as BatchNorm's momentum=None).
    table_size: nodes of the per-channel CDF grid (each cell split in up to 8 lookup cells).
    inplace: in eval without autograd, write the output into the input's memory (as
    nn.ReLU(inplace=True) does; it saves an allocation).
    A NaN input raises ValueError (or, where a NaN casts to a valid index, gives a finite output):
    the output is never NaN.
    """

    def __init__(self, num_features: int, wrap_bn: bool = True, n_quantiles: int = 100, kde_samples: int | None = 1000,
                 bandwidth: float | str = 0.5, sentinel: float = 100.0, output: str = "interp", context: str = "batch",
                 context_size: int | None = DEFAULT_CONTEXT_SIZE, context_momentum: float | None = 0.5,
                 table_size: int = DEFAULT_TABLE_SIZE, inplace: bool = False):
        super().__init__()
        if output not in OUTPUTS:
            raise ValueError(f"unknown QAct output {output!r}; choose one of {', '.join(OUTPUTS)}")
        if context not in CONTEXTS:
            raise ValueError(f"unknown QAct context {context!r}; choose one of {', '.join(CONTEXTS)}")
        if isinstance(bandwidth, str) and bandwidth not in BANDWIDTH_RULES:
            raise ValueError(f"unknown bandwidth rule {bandwidth!r}; give a number or one of "
                             f"{', '.join(BANDWIDTH_RULES)}")
        if not isinstance(bandwidth, str) and not bandwidth > 0:
            raise ValueError(f"QAct bandwidth must be positive, got {bandwidth}")
        if context_size is not None and context_size < 2:
            raise ValueError(f"QAct context_size must be at least 2 or None, got {context_size}")
        if table_size < 8 or n_quantiles < 1 or num_features < 1 or not sentinel > 0:
            raise ValueError("QAct needs num_features >= 1, table_size >= 8, n_quantiles >= 1 and sentinel > 0")
        self.num_features = num_features
        self.n_quantiles = n_quantiles
        self.kde_samples = kde_samples
        self.bandwidth = bandwidth
        self.sentinel = float(sentinel)
        self.output = output
        self.context = context
        self.context_size = context_size
        self.context_momentum = context_momentum
        self.table_size = table_size
        self.inplace = inplace
        # Under a process group in training: pool the context over every rank (the global batch), as
        # SyncBatchNorm pools statistics; set by set_context_sync (qact_cli.nn.sync does the gather).
        self.sync_context = False
        self.bn_in = nn.BatchNorm1d(num_features) if wrap_bn else None
        self.bn_out = nn.BatchNorm1d(num_features) if wrap_bn else None
        reservoir = context_size or _STORED_WHEN_ALL
        self.register_buffer("stored_context", torch.zeros(num_features, reservoir))
        self.register_buffer("stored_batches", torch.zeros((), dtype=torch.long))
        self._cache: _Cache | None = None
        self._offsets: tuple | None = None

    @property
    def wrap_bn(self) -> bool:
        return self.bn_in is not None

    def extra_repr(self) -> str:
        return (f"{self.num_features}, wrap_bn={self.wrap_bn}, output={self.output!r}, context={self.context!r}, "
                f"context_size={self.context_size}, bandwidth={self.bandwidth!r}, kde_samples={self.kde_samples}, "
                f"table_size={self.table_size}")

    # -- helpers ------------------------------------------------------------------------------

    def _table(self, ctx: Tensor, density: bool, per_channel: int) -> Table:
        """The tables for a batch of `per_channel` values per channel: refined at most 8x and to about
        1/8 of the activation's size, so that building them stays cheap next to the lookup."""
        refine = max(1, min(REFINE, per_channel // (8 * self.table_size)))
        return grounded_table(ctx, self.table_size, self.sentinel, self.bandwidth, self.kde_samples, density, refine)

    def _offsets_for(self, table: Table) -> Tensor:
        """int32 start of each channel's row in the flattened table."""
        key = (table.cdf.device, table.cdf.shape[1])
        if self._offsets is None or self._offsets[0] != key:
            self._offsets = (key, torch.arange(self.num_features, device=key[0], dtype=torch.int32) * key[1])
        return self._offsets[1]

    def _stored_table(self, density: bool) -> Table:
        if int(self.stored_batches) == 0:
            raise ValueError("QAct has no stored context: train the model (or load a checkpoint saved after training) "
                             "before evaluating with context='stored', or use context='batch'")
        buf = self.stored_context
        key = (buf.data_ptr(), buf._version, buf.device, density, self.table_size, self.bandwidth,
               self.kde_samples, self.sentinel)
        if self._cache is None or self._cache.key != key:  # built once, so at the finest refinement
            self._cache = _Cache(key, grounded_table(buf.float(), self.table_size, self.sentinel, self.bandwidth,
                                                     self.kde_samples, density, REFINE))
        return self._cache.table

    @torch.no_grad()
    def _remember(self, sample: Tensor) -> None:
        """Refresh the reservoir with this training batch's context sample (z units)."""
        res = self.stored_context
        r, k = res.shape[1], sample.shape[1]
        seen = int(self.stored_batches)
        if seen == 0:
            n = r
        else:
            rate = self.context_momentum if self.context_momentum is not None else 1.0 / (seen + 1)
            n = min(r, max(1, round(rate * r)))
        dev = res.device
        # Random columns: a sample of every value is in (image, position) order, and a regular
        # stride through it would keep the same pixel positions every time.
        cols = torch.randperm(k, device=dev)[:n] if k >= n else torch.randint(k, (n,), device=dev)
        fresh = workspace("fresh_context", (sample.shape[0], n), sample.dtype, dev)
        torch.index_select(sample, 1, cols, out=fresh)
        if self.context_momentum is not None and seen > 0:  # a sliding window over the last batches
            start = (seen * n) % r
            first = min(n, r - start)
            res[:, start:start + first] = fresh[:, :first]
            res[:, : n - first] = fresh[:, first:]
        else:  # first fill, or cumulative: random slots keep every batch's share equal
            slots = torch.randperm(r, device=dev)[:n] if n < r else torch.arange(r, device=dev)
            res.index_copy_(1, slots, fresh.to(res.dtype))
        self.stored_batches += 1

    def _bn(self, bn: nn.BatchNorm1d | None, x3: Tensor) -> Tensor:
        return x3 if bn is None else bn(x3)

    # -- forward ------------------------------------------------------------------------------

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() < 2 or x.shape[1] != self.num_features:
            c = self.num_features
            raise ValueError(f"QAct({c}) expects input (N, {c}, ...), got {tuple(x.shape)}")
        if x.numel() == 0:
            raise ValueError("QAct received an empty batch")
        shape = x.shape
        x3 = x.reshape(shape[0], shape[1], -1)
        if self.training:
            out = self._forward_train(x3)
        else:
            out = self._forward_eval(x3)
        return out.view(shape) if out.is_contiguous() else out.reshape(shape)

    def _apply_table(self, z3: Tensor, table: Table, grad: bool, overwrite: bool) -> Tensor:
        """QAct on z3 (z units) with `table`; `overwrite`: z3 is our own temporary, write y into it."""
        levels = self.n_quantiles if self.output == "step" else 0
        offsets = self._offsets_for(table)
        scale, bias = table.inv_step, table.zero  # an exact integer: z = 0 lands in the cell right of 0
        overwrite = overwrite and z3.dtype == torch.float32 and z3.is_contiguous()
        if grad:
            return _QActFunction.apply(z3, scale, bias, table.cdf, table.density, offsets, levels, overwrite)
        y, _ = _lookup(z3, scale, bias, table.cdf, offsets, keep_index=False, out=z3 if overwrite else None)
        return _staircase(y, levels) if levels else y

    def _forward_train(self, x3: Tensor) -> Tensor:
        if self.wrap_bn and usable(self, x3):
            return self._forward_train_wrapped(x3.contiguous())
        z3 = self._bn(self.bn_in, x3)
        sample = sample_context(z3, self.context_size, reuse=True)
        sample = sync_context(self, sample)  # with self.sync_context under torchrun: every rank's sample
        grad = torch.is_grad_enabled() and z3.requires_grad
        table = self._table(sample, grad, x3.shape[0] * x3.shape[2])  # raises on NaN (a NaN input spreads via BN)
        self._remember(sample)
        y = self._apply_table(z3, table, grad, overwrite=self.wrap_bn)
        return self._bn(self.bn_out, y if y.dtype == x3.dtype else y.to(x3.dtype))

    def _forward_train_wrapped(self, x3: Tensor) -> Tensor:
        """Training on the native kernels, both BatchNorms folded into one autograd function (wrapped.py):
        the context sample is taken from x and mapped to z units by BN_in's affine; z is never written."""
        stats = batch_stats(x3, self.bn_in.eps)
        mean, _, inv = stats
        a1 = self.bn_in.weight.detach() * inv
        sample = sample_context(x3, self.context_size, reuse=True)
        sample = torch.addcmul((self.bn_in.bias.detach() - mean * a1)[:, None], sample, a1[:, None], out=sample)
        sample = sync_context(self, sample)
        grad = torch.is_grad_enabled() and (x3.requires_grad or any(p.requires_grad for p in self.parameters()))
        table = self._table(sample, grad, x3.shape[0] * x3.shape[2])
        self._remember(sample)
        levels = self.n_quantiles if self.output == "step" else 0
        return wrapped_forward(self, x3, stats, table, levels)

    def _forward_eval(self, x3: Tensor) -> Tensor:
        grad = torch.is_grad_enabled() and (x3.requires_grad or any(p.requires_grad for p in self.parameters()))
        m = x3.shape[0] * x3.shape[2]
        if grad:  # keep the BNs as modules so that autograd sees them
            z3 = self._bn(self.bn_in, x3)
            if self.context == "stored":
                table = self._stored_table(True)
            else:
                table = self._table(sample_context(z3, self.context_size, _eval_generator(x3.device), True), True, m)
            y = self._apply_table(z3, table, True, overwrite=self.wrap_bn)
            return self._bn(self.bn_out, y if y.dtype == x3.dtype else y.to(x3.dtype))
        # BN_in and BN_out are affine in eval: fold them into the lookup, so BN -> QAct -> BN is one lookup.
        c = self.num_features
        a1, b1 = _bn_affine(self.bn_in, c, x3)
        a2, b2 = _bn_affine(self.bn_out, c, x3)
        if self.context == "stored":
            table = self._stored_table(False)
        else:
            raw = sample_context(x3, self.context_size, _eval_generator(x3.device), reuse=True)
            table = self._table(torch.addcmul(b1[:, None], raw, a1[:, None], out=raw), False, m)
        scale = a1 * table.inv_step
        bias = torch.addcmul(table.zero, b1, table.inv_step)
        offsets = self._offsets_for(table)
        out = x3 if (self.inplace and x3.dtype == torch.float32 and x3.is_contiguous()) else None
        if native.active(x3):  # one pass: both BatchNorms and the staircase folded into the table
            if self.output == "step":  # the same two roundings as the torch path below
                folded = _staircase(table.cdf.clone(), self.n_quantiles).mul_(a2[:, None]).add_(b2[:, None])
            else:
                folded = torch.addcmul(b2[:, None], table.cdf, a2[:, None]).contiguous()
            xc = x3.contiguous()
            return native.lookup(xc, torch.empty_like(xc) if out is None else out, scale.contiguous(),
                                 bias.contiguous(), folded)
        if self.output == "interp":
            y, _ = _lookup(x3, scale, bias, torch.addcmul(b2[:, None], table.cdf, a2[:, None]), offsets, False, out)
        else:
            y, _ = _lookup(x3, scale, bias, table.cdf, offsets, False, out)
            y = _staircase(y, self.n_quantiles).mul_(a2.view(1, c, 1)).add_(b2.view(1, c, 1))
        return y if y.dtype == x3.dtype else y.to(x3.dtype)


def set_context(model: nn.Module, mode: str) -> int:
    """Set the eval-time context ("batch" or "stored") of every QAct in `model`; returns how many."""
    if mode not in CONTEXTS:
        raise ValueError(f"unknown context {mode!r}; choose one of {', '.join(CONTEXTS)}")
    count = 0
    for m in model.modules():
        if isinstance(m, QAct):
            m.context = mode
            count += 1
    return count


def set_context_sync(model: nn.Module, enabled: bool) -> int:
    """Mark every QAct layer of `model` to pool (or not) its training context over ranks. Returns their count."""
    layers = [m for m in model.modules() if isinstance(m, QAct)]
    for m in layers:
        m.sync_context = bool(enabled)
    return len(layers)
