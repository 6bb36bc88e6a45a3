"""Quantile activation (QAct, Challa et al., arXiv 2405.11573): y = F(z), the grounded CDF of z in its context.

Forward (qact-method.md §1): the context of a channel is its values over the batch (dense) or over
batch x H x W (conv). Negatives and positives each carry half of the mass (weights 1/n- and 1/n+), two
sentinels +-c make a one-signed channel well defined, so 0 maps to 0.5, negatives below, positives
above. Output "interp" is the piecewise-linear CDF through the knots (-c, 0), (a_r, r/(2(m+1))),
(0, 0.5), (b_j, 0.5 + j/(2(p+1))), (c, 1); "step" is the official code's staircase of n_quantiles levels.
Backward (§2): grad = upstream x density of the grounded distribution, a Gaussian KDE of
`kde_samples` weighted context values (the paper ignores the context's own dependence on z).

How it is made fast (performance.md): per channel, a bounded context sample is taken by indexing
positions (no transpose of the activation); its grounded CDF is tabulated on a uniform grid of
`table_size` nodes from a count histogram (no sort); each grid cell is split into up to 8 lookup
cells (fewer when the activation is small next to the table) holding the linear interpolation at
their centres, so that every element costs one channel affine, one clamp, one int32 cast and one
gather. The KDE is a histogram of the same cells smoothed by an FFT Gaussian, read in backward
with the int32 index saved by forward. In eval the BatchNorms around QAct are affine maps and are
folded into the lookup: BN -> QAct -> BN costs one lookup. Fresh large CPU allocations page-fault
on every use, so the eval path converts in place and reuses a scratch buffer (and, with
inplace=True, writes its output into its input, as nn.ReLU(inplace=True) does).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

from .sync import sync_context

CONTEXTS = ("batch", "stored")
OUTPUTS = ("interp", "step")
BANDWIDTH_RULES = ("silverman", "scott")
# Evidence in benchmarks/bench_qact.py: with 2048 context values the CDF error is sampling-bound
# (mean 0.0045 vs 0.0062 at 1024 and 0.0032 at 4096) and fits are the same from 256 up; a grid of
# 512 nodes adds less than a fifth of that (mean 0.0008; 256 nodes: 0.0018, and too coarse for
# the "step" output's 100 levels when the activation is small and the grid is not refined).
DEFAULT_CONTEXT_SIZE = 2048
DEFAULT_TABLE_SIZE = 512
_STORED_WHEN_ALL = 4096  # reservoir size when context_size=None ("use every value")
_MIN_BANDWIDTH = 1e-3
REFINE = 8  # most lookup cells per table cell: a lookup cell's centre is within 1/16 cell of its values


class Table(NamedTuple):
    """Per-channel lookup tables: z falls in cell floor(z * inv_step + zero), 0 starts cell `zero`."""

    zero: Tensor  # (C,) index of the cell that starts at z = 0 (an integer, stored as float)
    inv_step: Tensor  # (C,) 1 / lookup cell width (z units)
    cdf: Tensor  # (C, R(T-1)) grounded CDF at the cell centres (see grounded_table)
    density: Tensor | None  # (C, R(T-1)) KDE density at the cell centres


# ---------------------------------------------------------------------------------------------
# Context sample and tables
# ---------------------------------------------------------------------------------------------


def sample_context(z3: Tensor, size: int | None, generator: torch.Generator | None = None) -> Tensor:
    """(N, C, L) -> (C, k) float32: every value if N*L <= size, else a stratified random sample.

    Positions (n, l) are drawn once for all channels, one per stratum of the flattened (n, l)
    index (so the sample covers the batch evenly; the random offset in each stratum avoids
    aliasing with the image width), and read with one flat gather: no transpose of the activation.
    """
    z3 = z3.detach()
    n, c, length = z3.shape
    m = n * length
    if size is None or m <= size:
        return z3.transpose(0, 1).reshape(c, m).float()
    dev = z3.device
    jitter = torch.rand(size, device=dev, generator=generator)
    pos = ((torch.arange(size, device=dev) + jitter) * (m / size)).long().clamp_(max=m - 1)
    base = (pos // length) * (c * length) + pos % length
    flat = (torch.arange(c, device=dev) * length)[:, None] + base[None, :]
    return z3.contiguous().view(-1).index_select(0, flat.view(-1)).view(c, size).float()


def _bandwidth(ctx: Tensor, w: Tensor, bandwidth: float | str) -> Tensor:
    """Per-channel KDE bandwidth: a fixed value, or Silverman's / Scott's rule on the grounded sample."""
    if not isinstance(bandwidth, str):
        return torch.full((ctx.shape[0],), float(bandwidth), device=ctx.device)
    wn = w / w.sum(1, keepdim=True)
    mean = (wn * ctx).sum(1, keepdim=True)
    sd = ((wn * (ctx - mean) ** 2).sum(1)).sqrt()
    n_eff = 1.0 / (wn**2).sum(1)  # Kish's effective sample size of the weighted sample
    if bandwidth == "scott":
        h = 1.059 * sd * n_eff ** (-0.2)
    else:
        # Silverman: 0.9 min(sd, IQR/1.34) n^-1/5, IQR of the grounded (weighted) distribution.
        srt, order = ctx.sort(1)
        cw = wn.gather(1, order).cumsum(1)
        last = ctx.shape[1] - 1
        q1 = srt.gather(1, torch.searchsorted(cw, torch.full_like(cw[:, :1], 0.25)).clamp_(max=last))
        q3 = srt.gather(1, torch.searchsorted(cw, torch.full_like(cw[:, :1], 0.75)).clamp_(max=last))
        iqr = (q3 - q1).squeeze(1)
        spread = torch.where(iqr > 0, torch.minimum(sd, iqr / 1.34), sd)
        h = 0.9 * spread * n_eff ** (-0.2)
    return h.clamp_min(_MIN_BANDWIDTH)


def _grounding_weights(neg: Tensor) -> Tensor:
    """Per-value weights 1/(2(n-+1)) for negatives, 1/(2(n++1)) for values >= 0 (+1: a sentinel per side)."""
    m = neg.sum(1, keepdim=True)
    return torch.where(neg, 0.5 / (m + 1).float(), 0.5 / (neg.shape[1] - m + 1).float())


def grounded_table(ctx: Tensor, table_size: int = DEFAULT_TABLE_SIZE, sentinel: float = 100.0,
                   bandwidth: float | str = 0.5, kde_samples: int | None = 1000, density: bool = True,
                   refine: int = REFINE) -> Table:
    """Tabulate the grounded CDF (and, if `density`, the KDE density) of each row of `ctx` (C, k).

    No sort: a count histogram on a grid of `table_size` nodes gives, for each node, the number of
    values below it. A node strictly between two knots takes the midpoint of the CDF's range there
    (the weight below plus half a knot weight), so it is within half a knot weight of the exact
    piecewise-linear CDF; nodes beyond the extreme values lie on the exact segments to the
    sentinels. 0 is a node: the cells left of it end at F(0-) = 1/2 and the cells right of it start
    at F(0) = 1/2 + (exact zeros) w+ (values >= 0 are positive, the CDF is right-continuous), so an
    atom at 0 is kept. Each cell is split into `refine` lookup cells holding the linear
    interpolation at their centres. The grid spans the context, 0, and 3 bandwidths either side
    (the density's tails). For x in a grid cell [g_j, g_j+1], the output lies between the exact
    CDF at g_j and at g_j+1, give or take one knot weight.
    """
    vmin, vmax = ctx.amin(1), ctx.amax(1)  # NaN propagates through both
    if bool(torch.isnan(vmin).any() or torch.isnan(vmax).any()):
        raise ValueError("QAct received NaN values in its input; check the data and the learning rate")
    if bool((vmin < -sentinel).any() or (vmax > sentinel).any()):  # inf or beyond: count them as at the sentinels
        ctx = ctx.clamp(-sentinel, sentinel)
        vmin, vmax = vmin.clamp(-sentinel, sentinel), vmax.clamp(-sentinel, sentinel)
    c, k = ctx.shape
    t = table_size
    dev = ctx.device
    # The KDE sample: every stride-th value of the (already random) context sample, i.e. between
    # kde_samples and 2*kde_samples of them (a strided view costs nothing, a gather would).
    stride = 1 if kde_samples is None else max(1, k // kde_samples)
    if isinstance(bandwidth, str):
        ks = ctx[:, ::stride]
        h = _bandwidth(ks, _grounding_weights(ks < 0), bandwidth)
    else:
        h = torch.full((c,), float(bandwidth), device=dev)
    first = vmin.clamp_max(0.0)  # the lowest knot above -c: a_1, or 0 without negatives
    last = vmax.clamp_min(0.0)  # the highest knot below c: b_p, or 0 without positives
    lo0, hi0 = first - 3.0 * h, last + 3.0 * h
    step = (hi0 - lo0) / (t - 2)
    k0 = torch.ceil(-lo0 / step).clamp_(1, t - 2)  # node index of 0; lo = -k0*step makes 0 a node
    lo = -k0 * step
    inv = 1.0 / step
    # Cell of each value, counted from 0's node; floor(v/step) keeps the sign exact, so the
    # negatives are exactly the values in the cells left of 0.
    bins = (ctx * inv[:, None]).floor_().add_(k0[:, None]).clamp_(0, t - 1).long()
    ones = ctx.new_ones(1).expand(c, k)
    counts = torch.zeros(c, t, device=dev).scatter_add_(1, bins, ones)
    below = counts.cumsum(1).sub_(counts)  # number of values < g_j
    k0i = k0.long()[:, None]
    m = below.gather(1, k0i)  # negatives
    w_neg, w_pos = 0.5 / (m + 1), 0.5 / (k - m + 1)
    j = torch.arange(t, device=dev, dtype=ctx.dtype)[None]
    # Negative side: w- (below + 1/2); positive side: 1/2 + w+ (positives below + 1/2); 0 -> 1/2.
    cdf = torch.where(j < k0i, (below + 0.5) * w_neg, (below - m + 0.5) * w_pos + 0.5)
    g = torch.addcmul(lo[:, None], j, step[:, None])
    left = ((g + sentinel) * (1.0 / (first + sentinel).clamp_min(1e-12))[:, None]).clamp_(0, 1).mul_(w_neg)
    right = ((sentinel - g) * (1.0 / (sentinel - last).clamp_min(1e-12))[:, None]).clamp_(0, 1).mul_(-w_pos).add_(1)
    cdf = torch.where(g < first[:, None], left, torch.where(g > last[:, None], right, cdf)).clamp_(0.0, 1.0)
    ends = cdf.scatter(1, k0i, 0.5)  # F(0-) closes the cell left of 0
    zeros = (ctx == 0).sum(1, keepdim=True)
    starts = cdf.scatter_(1, k0i, (0.5 + zeros * w_pos).clamp_(max=1.0))  # F(0) opens the cell right of 0
    cdf = _centres(starts, ends, refine)
    dens = None
    if density:
        s = k
        if stride > 1:
            sub = bins[:, ::stride]
            s = sub.shape[1]
            counts = torch.zeros(c, t, device=dev).scatter_add_(1, sub, ones[:, :s])
            m = (counts * (j < k0i)).sum(1, keepdim=True)
        mass = counts * torch.where(j < k0i, 0.5 / (m + 1), 0.5 / (s - m + 1))
        dens = _kde(mass, h * inv, inv, refine)
    return Table(k0 * refine, inv * refine, cdf, dens)


_KDE_COARSE = 4  # KDE grid = 4 table cells: the bandwidth spans many of them, and it quarters the FFT


def _centres(starts: Tensor, ends: Tensor, r: int) -> Tensor:
    """Node values (C, n) -> the linear interpolation at the centres of r equal parts of each of
    the n-1 cells, (C, r(n-1)); cell j runs from starts[j] to ends[j+1]."""
    frac = (torch.arange(r, device=starts.device, dtype=starts.dtype) + 0.5) / r
    core = torch.addcmul(starts[:, :-1, None], (ends[:, 1:] - starts[:, :-1])[:, :, None], frac)
    return core.flatten(1)


def _kde(mass: Tensor, h_cells: Tensor, scale: Tensor, refine: int) -> Tensor:
    """Gaussian KDE (std `h_cells`, in table cells) of the mass counted per cell, at the lookup cells.

    Binned KDE: the mass is summed on a grid 4x coarser than the table, smoothed by an FFT Gaussian
    (zero padded: the grid has >= 3 bandwidths of empty margin, so wrap-around is negligible),
    multiplied by `scale` (1/cell width) and interpolated linearly to the lookup cells' centres.
    """
    c, t = mass.shape
    f = _KDE_COARSE if t % _KDE_COARSE == 0 and t >= 16 * _KDE_COARSE else 1
    tc = t // f
    if f > 1:
        mass = mass.view(c, tc, f).sum(2)
    n = 2 * tc
    freq = torch.fft.rfftfreq(n, device=mass.device)
    expo = (-2.0 * math.pi**2) * ((h_cells / f)[:, None] * freq[None]) ** 2
    gain = expo.clamp_min_(-80.0).exp_()  # the clamp keeps exp away from denormals (slow on CPUs)
    dens = torch.fft.irfft(torch.fft.rfft(mass, n=n) * gain, n=n)[:, :tc].clamp_min_(0.0).mul_((scale / f)[:, None])
    # Coarse cell q is centred (q + 1/2) coarse cells from lo; lookup cell o at (o + 1/2)/(f r):
    # interpolate between coarse centres, flat beyond the first and last ones.
    r = f * refine
    width = refine * (t - 1)
    out = torch.cat([dens[:, :1].expand(c, r // 2), _centres(dens, dens, r)], 1)
    if out.shape[1] < width:
        out = torch.cat([out, out[:, -1:].expand(c, width - out.shape[1])], 1)
    return out[:, :width]


# ---------------------------------------------------------------------------------------------
# Lookup
# ---------------------------------------------------------------------------------------------


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
    ws = None if keep_index else _scratch(x3.numel(), x3.device)
    u = _channel_affine(x3, scale, bias, torch.empty_like(x3) if ws is None else ws.view(x3.shape))
    u.clamp_(0, n - 1)
    idx = u.view(torch.int32)
    idx.copy_(u)  # same-size elements: each is read before it is overwritten
    idx.add_(offsets.view(1, c, 1))
    try:
        if out is None:
            y = table.view(-1).index_select(0, idx.view(-1)).view(u.shape)
        else:
            y = torch.index_select(table.view(-1), 0, idx.view(-1), out=out.view(-1)).view(u.shape)
    except (RuntimeError, IndexError) as err:
        raise ValueError("QAct received NaN values in its input; check the data and the learning rate") from err
    return y, (idx if keep_index else None)


def table_lookup(table: Table, z: Tensor) -> Tensor:
    """The grounded CDF in `table` at z (N, C, ...) in z units: QAct's forward without BatchNorms."""
    z3 = z.reshape(z.shape[0], z.shape[1], -1)
    offsets = torch.arange(z.shape[1], device=z.device, dtype=torch.int32) * table.cdf.shape[1]
    return _lookup(z3, table.inv_step, table.zero, table.cdf, offsets, keep_index=True)[0].view(z.shape)


def _staircase(y: Tensor, levels: int) -> Tensor:
    """In place: the official output tau_{k+1}, k = #{quantiles <= x}, tau_i = i/(n+1) (qact-method.md §1)."""
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


# ---------------------------------------------------------------------------------------------
# Module
# ---------------------------------------------------------------------------------------------


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
        flat = (torch.arange(sample.shape[0], device=dev) * k)[:, None] + cols[None, :]
        fresh = sample.contiguous().view(-1).index_select(0, flat.view(-1)).view(-1, n)
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
        z3 = self._bn(self.bn_in, x3)
        sample = sample_context(z3, self.context_size)
        sample = sync_context(self, sample)  # with self.sync_context under torchrun: every rank's sample
        grad = torch.is_grad_enabled() and z3.requires_grad
        table = self._table(sample, grad, x3.shape[0] * x3.shape[2])  # raises on NaN (a NaN input spreads via BN)
        self._remember(sample)
        y = self._apply_table(z3, table, grad, overwrite=self.wrap_bn)
        return self._bn(self.bn_out, y if y.dtype == x3.dtype else y.to(x3.dtype))

    def _forward_eval(self, x3: Tensor) -> Tensor:
        grad = torch.is_grad_enabled() and (x3.requires_grad or any(p.requires_grad for p in self.parameters()))
        m = x3.shape[0] * x3.shape[2]
        if grad:  # keep the BNs as modules so that autograd sees them
            z3 = self._bn(self.bn_in, x3)
            if self.context == "stored":
                table = self._stored_table(True)
            else:
                table = self._table(sample_context(z3, self.context_size, _eval_generator(x3.device)), True, m)
            y = self._apply_table(z3, table, True, overwrite=self.wrap_bn)
            return self._bn(self.bn_out, y if y.dtype == x3.dtype else y.to(x3.dtype))
        # BN_in and BN_out are affine in eval: fold them into the lookup, so BN -> QAct -> BN is one lookup.
        c = self.num_features
        a1, b1 = _bn_affine(self.bn_in, c, x3)
        a2, b2 = _bn_affine(self.bn_out, c, x3)
        if self.context == "stored":
            table = self._stored_table(False)
        else:
            raw = sample_context(x3, self.context_size, _eval_generator(x3.device))
            table = self._table(torch.addcmul(b1[:, None], raw, a1[:, None]), False, m)
        scale = a1 * table.inv_step
        bias = torch.addcmul(table.zero, b1, table.inv_step)
        offsets = self._offsets_for(table)
        out = x3 if (self.inplace and x3.dtype == torch.float32 and x3.is_contiguous()) else None
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
