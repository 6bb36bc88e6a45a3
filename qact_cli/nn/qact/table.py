"""The grounded CDF of a context, tabulated per channel for lookup, and the context sample it is built from.

The grounded distribution (paper, eq. 3): a channel's context values, negatives and non-negatives
each carrying half of the mass, with sentinels -c and +c; its CDF is QAct's output (Algorithm 1,
eq. 5) and its Gaussian KDE density QAct's gradient (Algorithm 2, eq. 4). The official code
(adityac20/quantile_activation, src/quantile_activation_base.py: `weighted_quantile_vectorized`,
`weighted_vectorized_kde`) sorts the context and evaluates the KDE at every quantile; here both are
tabulated from one count histogram, without a sort (docs/qact-layer.md explains the design).
"""

from __future__ import annotations

import math
import threading
from typing import NamedTuple

import torch
from torch import Tensor

from . import native

BANDWIDTH_RULES = ("silverman", "scott")
# Evidence in benchmarks/bench_qact.py: with 2048 context values the CDF error is sampling-bound
# (mean 0.0045 vs 0.0062 at 1024 and 0.0032 at 4096) and fits are the same from 256 up; a grid of
# 512 nodes adds less than a fifth of that (mean 0.0008; 256 nodes: 0.0018, and too coarse for
# the "step" output's 100 levels when the activation is small and the grid is not refined).
DEFAULT_CONTEXT_SIZE = 2048
DEFAULT_TABLE_SIZE = 512
_MIN_BANDWIDTH = 1e-3
REFINE = 8  # most lookup cells per table cell: a lookup cell's centre is within 1/16 cell of its values


class Table(NamedTuple):
    """Per-channel lookup tables: z falls in cell floor(z * inv_step + zero), 0 starts cell `zero`."""

    zero: Tensor  # (C,) index of the cell that starts at z = 0 (an integer, stored as float)
    inv_step: Tensor  # (C,) 1 / lookup cell width (z units)
    cdf: Tensor  # (C, R(T-1)) grounded CDF at the cell centres (see grounded_table)
    density: Tensor | None  # (C, R(T-1)) KDE density at the cell centres


_WORK = threading.local()


def workspace(name: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
    """A per-thread CPU buffer called `name`, reused from call to call (elsewhere a fresh tensor).

    Large fresh CPU allocations are returned to the OS on free and page-fault on every use (about
    5 us per 4 KiB page on a VM: more than the arithmetic on them); the table's temporaries are a
    few MiB per layer and batch. Whatever a buffer holds is overwritten by the next user of `name`.
    Always a normal tensor: one made under torch.inference_mode() could not be written outside it."""
    if device.type != "cpu":
        return torch.empty(shape, dtype=dtype, device=device)
    numel = math.prod(shape)
    bufs = _WORK.__dict__.setdefault("bufs", {})
    buf = bufs.get((name, dtype))
    if buf is None or buf.numel() < numel:
        with torch.inference_mode(False):
            buf = bufs[(name, dtype)] = torch.empty(numel, dtype=dtype)
    return buf[:numel].view(shape)


def sample_context(z3: Tensor, size: int | None, generator: torch.Generator | None = None,
                   reuse: bool = False) -> Tensor:
    """(N, C, L) -> (C, k) float32: every value if N*L <= size, else a stratified random sample.

    Positions (n, l) are drawn once for all channels, one per stratum of the flattened (n, l)
    index (so the sample covers the batch evenly; the random offset in each stratum avoids
    aliasing with the image width), and read with one flat gather: no transpose of the activation.
    `reuse`: the sample is written into a per-thread buffer (see `workspace`) that the next call
    with `reuse` overwrites; the caller may modify it in place.
    """
    z3 = z3.detach()
    n, c, length = z3.shape
    m = n * length
    dev = z3.device
    k = m if size is None or m <= size else size
    out = workspace("sample", (c, k), torch.float32, dev) if reuse else None
    if k == m:
        every = z3.transpose(0, 1).reshape(c, m)
        if out is None:
            return every.float()
        out.view(c, n, length).copy_(z3.transpose(0, 1))
        return out
    jitter = torch.rand(size, device=dev, generator=generator)
    pos = ((torch.arange(size, device=dev) + jitter) * (m / size)).long().clamp_(max=m - 1)
    base = (pos // length) * (c * length) + pos % length
    # int32 positions when they fit: half the index memory of int64 for the one gather. The gather
    # runs position by position, all channels of a position together: its reads then go forward
    # through each image, where channel by channel they would stride C*L values through the whole
    # activation (on ResNet18's 512-channel layers, 1.8x slower with the transpose below included).
    itype = torch.int32 if z3.numel() < 2**31 else torch.int64
    flat = torch.add(base.to(itype)[:, None], (torch.arange(c, device=dev, dtype=itype) * length)[None, :],
                     out=workspace("sample_index", (size, c), itype, dev))
    src = z3.contiguous().view(-1)
    by_position = torch.index_select(src, 0, flat.view(-1), out=workspace("sample_rows", (size * c,), src.dtype, dev))
    by_position = by_position.view(size, c)
    if out is None:
        return by_position.t().float().contiguous()
    return out.copy_(by_position.t())


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
    n_channels, n_values = ctx.shape
    n_nodes = table_size
    dev = ctx.device
    # The KDE sample: every kde_stride-th value of the (already random) context sample, i.e. between
    # kde_samples and 2*kde_samples of them (a strided view costs nothing, a gather would).
    kde_stride = 1 if kde_samples is None else max(1, n_values // kde_samples)
    if isinstance(bandwidth, str):
        kde_sample = ctx[:, ::kde_stride]
        bw = _bandwidth(kde_sample, _grounding_weights(kde_sample < 0), bandwidth)
    else:
        bw = torch.full((n_channels,), float(bandwidth), device=dev)
    lowest_knot = vmin.clamp_max(0.0)  # the lowest knot above -c: a_1, or 0 without negatives
    highest_knot = vmax.clamp_min(0.0)  # the highest knot below c: b_p, or 0 without positives
    span_lo, span_hi = lowest_knot - 3.0 * bw, highest_knot + 3.0 * bw
    node_step = (span_hi - span_lo) / (n_nodes - 2)
    zero_node = torch.ceil(-span_lo / node_step).clamp_(1, n_nodes - 2)  # grid_start = -zero_node*step: 0 is a node
    grid_start = -zero_node * node_step
    inv_step = 1.0 / node_step
    # Cell of each value, counted from 0's node; floor(v/step) keeps the sign exact, so the
    # negatives are exactly the values in the cells left of 0.
    kde_stride = kde_stride if density and kde_stride > 1 else 0  # 0: no separate KDE histogram
    if native.active(ctx):  # the histograms below in one pass over the sample
        cell_count, kde_count, n_zeros = native.histograms(ctx, inv_step, zero_node, n_nodes, kde_stride)
    else:
        cell_count, kde_count, n_zeros = _histograms(ctx, inv_step, zero_node, n_nodes, kde_stride)
    n_below = cell_count.cumsum(1).sub_(cell_count)  # number of values < node j
    zero_col = zero_node.long()[:, None]
    n_neg = n_below.gather(1, zero_col)  # the values below 0's node: the negatives
    w_neg, w_pos = 0.5 / (n_neg + 1), 0.5 / (n_values - n_neg + 1)  # knot weights (+1: a sentinel per side)
    node = torch.arange(n_nodes, device=dev, dtype=ctx.dtype)[None]
    # Negative side: w- (below + 1/2); positive side: 1/2 + w+ (positives below + 1/2); 0 -> 1/2.
    node_cdf = torch.where(node < zero_col, (n_below + 0.5) * w_neg, (n_below - n_neg + 0.5) * w_pos + 0.5)
    node_z = torch.addcmul(grid_start[:, None], node, node_step[:, None])
    # Beyond the extreme knots the CDF is the exact segment to the sentinel: (-c, 0)..(a_1, w-) on
    # the left, (b_p, 1 - w+)..(c, 1) on the right.
    left_tail = ((node_z + sentinel) * (1.0 / (lowest_knot + sentinel).clamp_min(1e-12))[:, None]).clamp_(0, 1).mul_(w_neg)
    right_tail = ((sentinel - node_z) * (1.0 / (sentinel - highest_knot).clamp_min(1e-12))[:, None]).clamp_(0, 1) \
        .mul_(-w_pos).add_(1)
    node_cdf = torch.where(node_z < lowest_knot[:, None], left_tail,
                           torch.where(node_z > highest_knot[:, None], right_tail, node_cdf)).clamp_(0.0, 1.0)
    cell_ends = node_cdf.scatter(1, zero_col, 0.5)  # F(0-) closes the cell left of 0
    cell_starts = node_cdf.scatter_(1, zero_col, (0.5 + n_zeros * w_pos).clamp_(max=1.0))  # F(0) opens the cell right of 0
    lookup_cdf = _centres(cell_starts, cell_ends, refine)
    lookup_density = None
    if density:
        n_kde = n_values
        if kde_stride:
            n_kde = -(-n_values // kde_stride)
            cell_count = kde_count
            n_neg = (cell_count * (node < zero_col)).sum(1, keepdim=True)
        cell_mass = cell_count * torch.where(node < zero_col, 0.5 / (n_neg + 1), 0.5 / (n_kde - n_neg + 1))
        lookup_density = _kde(cell_mass, bw * inv_step, inv_step, refine)
    return Table(zero_node * refine, inv_step * refine, lookup_cdf, lookup_density)


def _histograms(ctx: Tensor, inv_step: Tensor, zero_node: Tensor, n_nodes: int, kde_stride: int
                ) -> tuple[Tensor, Tensor | None, Tensor]:
    """Per channel of ctx (C, k): the count of values in each grid cell (C, n_nodes), the same over
    every kde_stride-th value (when kde_stride > 1), and the count of exact zeros (C, 1)."""
    n_channels, n_values = ctx.shape
    dev = ctx.device
    scaled = torch.mul(ctx, inv_step[:, None], out=workspace("cells", ctx.shape, ctx.dtype, dev))
    value_cell = workspace("cell_index", ctx.shape, torch.int64, dev)
    value_cell.copy_(scaled.floor_().add_(zero_node[:, None]).clamp_(0, n_nodes - 1))
    ones = ctx.new_ones(1).expand(n_channels, n_values)
    cell_count = torch.zeros(n_channels, n_nodes, device=dev).scatter_add_(1, value_cell, ones)
    kde_count = None
    if kde_stride > 1:
        kde_cell = value_cell[:, ::kde_stride]
        kde_count = torch.zeros(n_channels, n_nodes, device=dev).scatter_add_(1, kde_cell, ones[:, :kde_cell.shape[1]])
    n_zeros = torch.eq(ctx, 0, out=scaled).sum(1, keepdim=True)  # (the cells are counted: reuse their buffer)
    return cell_count, kde_count, n_zeros


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
