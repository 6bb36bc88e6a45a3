"""The OpenCV steps of the reference `spatter` (water mode), re-implemented batched in torch.

`cv2.Canny(img, 50, 150)` (3x3 Sobel, L1 magnitude, non-maximum suppression, hysteresis),
`cv2.distanceTransform(DIST_L2, 5)` (5x5 chamfer distances 1, 1.4, 2.1969 in 16.16 fixed point),
`cv2.blur((3, 3))`, `cv2.equalizeHist` and the emboss `cv2.filter2D`, each emulated to the integer/rounding
behaviour of OpenCV so the water mask follows the reference step by step. `water_mask` chains them for spatter.

Speed notes (CPU, one thread), which shape the code:
- The working layout is (H, W, N), images innermost: a shifted window of a padded buffer is then H runs of
  W * N contiguous values, long even for 32 px images (in (N, H, W) it would be N * H runs of W).
- Integer add/min/max/bitwise ops cost ~0.07 ns a value in int16 and ~0.18 ns in int32, while comparisons that
  produce bool tensors, `torch.where` and `masked_fill` cost 1-4 ns. Conditions are therefore integer masks
  (-1 where true, 0 where false) taken from the sign bit of a difference, combined with `&`, `|`, min and max.
The public functions take and return (N, H, W) tensors of 8-bit values.

`water_mask` is what spatter uses: it runs the steps fused on one padded buffer in the working layout. The
steps also stand alone (`canny`, `chamfer_distance`, `box3_sum`, `equalize_hist`, `emboss`), each the batched
equivalent of one OpenCV call. They are public on purpose: the spatter fidelity checks compare each step with
OpenCV's or scipy's own result (a fused mask could only be compared whole), and they are useful on their own
to anyone emulating an OpenCV pipeline in torch. `water_mask` uses the same private kernels, so the checks of
the steps are checks of spatter.
"""

from __future__ import annotations

import threading
from functools import lru_cache

import numpy as np
import torch

from .native import warp as native_warp

__all__ = ["water_mask", "canny", "chamfer_distance", "box3_sum", "equalize_hist", "emboss"]

# OpenCV's Canny sectors: |gy| << 15 < tg22 |gx| (horizontal), |gy| << 15 > tg22 |gx| + (|gx| << 16) (vertical),
# in 15-bit fixed point; computed here as P |gy| < Q |gx| and P |gx| < Q |gy| (see _canny_masks; the tests check
# the equivalence against these constants)
_TG22 = int(0.4142135623730950488016887242097 * (1 << 15) + 0.5)
_TG67 = _TG22 + (1 << 16)
_SECTOR_P, _SECTOR_Q = 408, 169

_HV, _DIAG, _LONG = 65536, 91750, 143976  # round(65536 * (1, 1.4f, 2.1969f))
_INF = (2**31 - 1) >> 2  # OpenCV's "no zero pixel" distance (8192 after the float conversion)
# The chamfer moves by weight: every 5x5 path is a sum of them and of their opposites
_KNIGHT_MOVES = ((1, 2), (1, -2), (2, 1), (2, -1))
_DIAG_MOVES = ((1, 1), (1, -1))
_HV_MOVES = ((0, 1), (1, 0))


def _hwn(x: torch.Tensor) -> torch.Tensor:
    return x.permute(1, 2, 0).contiguous()


def _nhw(x: torch.Tensor) -> torch.Tensor:
    return x.permute(2, 0, 1).contiguous()


def _neg(v: torch.Tensor) -> torch.Tensor:
    """-1 where the integer v < 0, else 0, in place (v is a temporary): clamp to [-1, 0]."""
    return v.clamp_(-1, 0)


def _padded(x: torch.Tensor) -> torch.Tensor:
    """An uninitialised (H + 2, W + 2, N) buffer for (H, W, N) x: a 3x3 filter's input, written in place."""
    return x.new_empty((x.shape[0] + 2, x.shape[1] + 2) + tuple(x.shape[2:]))


def _pad(x: torch.Tensor, src: int) -> torch.Tensor:
    p = _padded(x)
    p[1:-1, 1:-1] = x
    return _fill_border_(p, src)


def _fill_border_(p: torch.Tensor, src: int) -> torch.Tensor:
    """Fill the one-pixel frame of `p` (H + 2, W + 2, ...) from `src` steps inside: 1 replicates, 2 reflects-101
    (OpenCV's default border). Whole rows first, then whole columns, which also gets the corners right."""
    p[0].copy_(p[src])
    p[-1].copy_(p[-1 - src])
    p[:, 0].copy_(p[:, src])
    p[:, -1].copy_(p[:, -1 - src])
    return p


def _box3(p: torch.Tensor) -> torch.Tensor:
    """3x3 sums of a padded (H + 2, W + 2, ...) buffer."""
    rows = p[:-2] + p[2:]
    rows += p[1:-1]
    out = rows[:, :-2] + rows[:, 2:]
    out += rows[:, 1:-1]
    return out


# ---------------------------------------------------------------------------------------------------- Canny


def _canny_masks(p: torch.Tensor, low: int, high: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-maximum suppression of `cv2.Canny`: int16 masks (-1/0, (H, W, N)) of the local maxima above `low` and
    of those above `high`, for 8-bit values in the core of `p` (H + 2, W + 2, N) int16. Sobel runs with
    BORDER_REPLICATE (this fills the frame of `p`); magnitudes outside the image count as 0."""
    h, w = p.shape[0] - 2, p.shape[1] - 2
    _fill_border_(p, 1)
    sv = p[:-2] + p[2:]
    sv.add_(p[1:-1], alpha=2)
    gx = sv[:, 2:] - sv[:, :-2]
    sh = p[:, :-2] + p[:, 2:]
    sh.add_(p[:, 1:-1], alpha=2)
    gy = sh[2:] - sh[:-2]  # |gx|, |gy| <= 1020: int16 is exact
    ax, ay = gx.abs(), gy.abs()
    mp = torch.empty_like(p)
    mag = torch.add(ax, ay, out=mp[1:-1, 1:-1])
    for edge in (mp[0], mp[-1], mp[:, 0], mp[:, -1]):
        edge.zero_()

    # OpenCV's sectors, (ay << 15) < tg22 * ax and (ay << 15) > tg67 * ax, are for |gx|, |gy| <= 1020 exactly
    # 408 ay < 169 ax and 408 ax < 169 ay (int32 products): 408/985 and 169/408 are neighbours in the Farey
    # sequence of order 1020 around tg22 / 2^15, so no ratio of such integers falls between them
    ax32, ay32 = ax.to(torch.int32), ay.to(torch.int32)
    horizontal = _neg((ay32 * _SECTOR_P).add_(ax32, alpha=-_SECTOR_Q)).to(torch.int16)
    vertical = _neg(ax32.mul_(_SECTOR_P).add_(ay32, alpha=-_SECTOR_Q)).to(torch.int16)
    opposite = _neg(gx ^ gy)  # signs differ: the diagonal runs up-right / down-left

    def m(dy, dx, src=mp):
        return src[1 + dy:1 + dy + h, 1 + dx:1 + dx + w]

    # "mag > a and mag >= b" is "mag > max(a, b - 1)": one threshold per pixel, that of its sector; b ^ ((b ^ a)
    # & mask) picks a where the mask is -1 (the sectors: diagonal, unless vertical, unless horizontal)
    mp1 = mp - 1
    nb = torch.maximum(m(-1, -1), m(1, 1))
    for a, b, mask in ((m(-1, 1), m(1, -1), opposite), (m(-1, 0), m(1, 0, mp1), vertical),
                       (m(0, -1), m(0, 1, mp1), horizontal)):
        pick = torch.maximum(a, b)
        pick ^= nb
        pick &= mask
        nb ^= pick
    local_max = _neg(nb.clamp_(min=int(low)) - mag)
    strong = local_max & _neg(int(high) - mag)
    return local_max, strong


def _mask_indices(mask: torch.Tensor, block: int = 64) -> torch.Tensor:
    """Flat indices (ascending) of the -1 entries of a sparse 1-D -1/0 mask. `nonzero` over a whole image batch
    costs ~1.2 ns a value; here it runs on the minimum of each block of 64 values and then only inside the blocks
    holding a -1."""
    body = mask.numel() // block * block
    blocks = mask[:body].view(-1, block)
    ids = (blocks.amin(1) < 0).nonzero().view(-1)
    hits = blocks.index_select(0, ids).view(-1).nonzero().view(-1)
    found = ids.index_select(0, hits // block) * block + hits % block
    tail = mask[body:].nonzero().view(-1) + body
    return torch.cat([found, tail])


def _hysteresis(local_max: torch.Tensor, strong: torch.Tensor) -> torch.Tensor:
    """Weak maxima (local maxima not above `high`) join the edges when 8-connected to one, repeatedly. They are
    rare (~0.3% of pixels), so the growth runs on their list: each round reads their 8 neighbours in a zero-framed
    edge map and switches on those next to an edge, until a round adds none (a full-image 3x3 dilation per round
    would cost ~8x more). (H, W, N) int16 masks in, (H, W, N) uint8 edge map out (255 on edges)."""
    h, w, n = strong.shape
    framed = torch.zeros((h + 2, w + 2, n), dtype=torch.uint8, device=strong.device)
    core = framed[1:-1, 1:-1]
    core.copy_(strong)  # -1 -> 255
    weak = _mask_indices((local_max ^ strong).view(-1))  # flat (H, W, N) indices
    if weak.numel():
        at = weak + weak // (w * n) * (2 * n) + (w + 3) * n  # the same pixels in the framed map
        steps = torch.tensor([dy * (w + 2) * n + dx * n for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx],
                             device=weak.device)
        around = (at[:, None] + steps).view(-1)
        flat = framed.view(-1)
        on = flat.index_select(0, at)
        while True:
            reach = flat.index_select(0, around).view(-1, 8).amax(1)
            if int((reach & ~on).amax()) == 0:
                break
            on |= reach
            flat.index_copy_(0, at, on)
    return core


def canny(img: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Edges (bool, N x H x W) of `cv2.Canny(img, low, high)` with aperture 3 and the L1 gradient norm."""
    edges = _hysteresis(*_canny_masks(_pad(_hwn(img.to(torch.int16)), 1), int(low), int(high)))
    return _nhw(edges) != 0


# ------------------------------------------------------------------------------------- distance transform
#
# OpenCV's two raster passes compute exactly the cheapest path to a zero pixel over the 5x5 chamfer moves
# (1 for a step, 1.4 diagonally, 2.1969 for a knight's move, in 16.16 fixed point, so sums are exact): that is
# min over zero pixels s of N(p - s), N the chamfer norm, since the best path to s stays in the box between p
# and s. The order of the moves does not matter, so the transform is a sequence of 1-D passes, one per move u
# and its opposite: h(p) <- min_k h(p - k u) + k w. A pass needs only as many repetitions k as cost less than
# the cap (spatter truncates at 20), done by doubling: in the domain val = h - w tau(p), tau the coordinate
# along u, the pass is val(p) <- min(val(p), val(p - s u)) for s = 1, 2, 4, ... (no additions); the opposite
# direction uses val = h + w tau.


def _tau(dy: int, dx: int) -> tuple[int, int]:
    """(a, b) with tau = a * row + b * col growing by 1 along the move (dy, dx)."""
    if dy == 1:
        return 1, 0
    if dy == 2:
        return 0, dx
    return 0, 1


def _steps(k: int) -> list[int]:
    """Shifts whose doubling minima cover every repetition count 0..k."""
    out, covered, s = [], 0, 1
    while covered < k:
        out.append(min(s, k - covered))
        covered += out[-1]
        s *= 2
    return out


def _repeats(dy: int, dx: int, h: int, w: int, kmax: int) -> int:
    """Repetitions of the move (dy, dx) worth doing: at most kmax, and they must fit in the image."""
    fit = [kmax] + ([(h - 1) // abs(dy)] if dy else []) + ([(w - 1) // abs(dx)] if dx else [])
    return max(0, min(fit))


@lru_cache(maxsize=64)
def _ramp(a: int, b: int, h: int, w: int, n: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """a * row + b * col, to add to (H, W, N) tensors: (H, 1, 1) if constant along rows, else (1 or H, W, N)
    written out (broadcasting over a short innermost N would run a loop of N values per pixel)."""
    rows = torch.arange(h, dtype=torch.int64).view(h, 1, 1) * a
    if b == 0:
        return rows.to(dtype=dtype, device=device)
    cols = torch.arange(w, dtype=torch.int64).view(1, w, 1) * b
    r = cols if a == 0 else rows + cols
    return r.expand(-1, -1, n).to(dtype=dtype, device=device).contiguous()


@lru_cache(maxsize=16)
def _image_offsets(w: int, n: int, step: int, device: torch.device) -> torch.Tensor:
    """step * image index as (1, W, N) int32: offsets to per-image bins in one flat table."""
    return torch.arange(0, n * step, step, dtype=torch.int32).expand(1, w, n).to(device).contiguous()


class _Relaxer:
    """Two ping-pong buffers (H + 2M, W + 2M, N) whose M-pixel margin holds the dtype's maximum: shifted windows
    read "outside the image" there, which never wins a minimum. The core of the current buffer holds
    h + a * row + b * col for the current domain `dom` = (a, b). Relaxers are pooled per thread and shape
    (`_relaxer`), margins and windows included: fresh buffers of a few MB cost page faults, and slicing a window
    costs as much as a small minimum."""

    def __init__(self, h: int, w: int, n: int, margin: int, dtype: torch.dtype, device: torch.device):
        big = torch.iinfo(dtype).max
        shape = (h + 2 * margin, w + 2 * margin, n)
        self.bufs = [torch.full(shape, big, dtype=dtype, device=device) for _ in range(2)]
        self.cur = 0
        self._windows: dict[tuple[int, int, int], torch.Tensor] = {}
        self.h, self.w, self.n, self.m, self.dtype, self.device = h, w, n, margin, dtype, device
        self.dom = (0, 0)

    def window(self, buf: int, oy: int = 0, ox: int = 0) -> torch.Tensor:
        key = (buf, oy, ox)
        win = self._windows.get(key)
        if win is None:
            m = self.m
            win = self._windows[key] = self.bufs[buf][m + oy:m + oy + self.h, m + ox:m + ox + self.w]
        return win

    def view(self) -> torch.Tensor:
        return self.window(self.cur)

    def ramp(self, a: int, b: int) -> torch.Tensor:
        return _ramp(a, b, self.h, self.w, self.n, self.dtype, self.device)

    def start(self, dom: tuple[int, int]) -> torch.Tensor:
        """The core to initialise with h + ramp(dom)."""
        self.dom = dom
        return self.view()

    def to_domain(self, dom: tuple[int, int]) -> None:
        if dom != self.dom:
            self.view().add_(self.ramp(dom[0] - self.dom[0], dom[1] - self.dom[1]))
            self.dom = dom

    def run(self, moves, weight: int, kmax: int) -> None:
        """The passes along each move and its opposite. A pass needs the domain +-weight * tau; passes sharing
        one (say (1, 2) and (1, -2), or (2, 1) and the opposite of (2, -1)) run together."""
        by_domain: dict[tuple[int, int], list] = {}
        for dy, dx in moves:
            a, b = _tau(dy, dx)
            steps = _steps(_repeats(dy, dx, self.h, self.w, kmax))
            for sign in (-1, 1) if steps else ():  # -1: val = h - w tau, compared with p - s u
                by_domain.setdefault((sign * weight * a, sign * weight * b), []).append((dy, dx, sign, steps))
        # start in the current domain if a pass can
        for dom in sorted(by_domain, key=lambda d: d != self.dom):
            self.to_domain(dom)
            for dy, dx, sign, steps in by_domain[dom]:
                for s in steps:
                    src, dst = self.cur, 1 - self.cur
                    torch.minimum(self.window(src), self.window(src, sign * s * dy, sign * s * dx),
                                  out=self.window(dst))
                    self.cur = dst


_POOL = threading.local()


def _relaxer(h: int, w: int, n: int, margin: int, dtype: torch.dtype, device: torch.device) -> _Relaxer:
    pool = _POOL.__dict__.setdefault("relaxers", {})
    key = (h, w, n, margin, dtype, device)
    r = pool.pop(key, None)
    if r is None:
        r = _Relaxer(h, w, n, margin, dtype, device)
        while len(pool) >= 4:  # a few shapes: the last chunk of a batch is often smaller
            pool.pop(next(iter(pool)))
    pool[key] = r
    return r


def _margin(h: int, w: int, plan) -> int:
    """Widest shift of a pass plan [(moves, kmax), ...]."""
    return max([1] + [s * max(abs(dy), abs(dx)) for moves, k in plan for dy, dx in moves
                      for s in _steps(_repeats(dy, dx, h, w, k))])


# Path costs can be minimised in int16 with small integer weights that order every path cost below the cap
# exactly as the 16.16 weights do (no ties), the cap included; a table maps the result back. For spatter's cap of
# 20: weights (183, 256, 399) for all three moves; (11, -, 24) for straight and knight moves alone. In the domain
# val = h +- w tau (|tau| < the image's longer side) the first fit int16 up to 73 px, the second up to 1356 px,
# followed by the diagonal moves in int32.
_SMALL_CAP = 20
_SMALL_ALL = (183, 256, 399)  # straight, diagonal, knight
_SMALL_HV_KNIGHT = (11, None, 24)


def _fits_int16(weights: tuple, size: int) -> bool:
    return max(wt or 0 for wt in weights) * (size - 1) + _SMALL_CAP * weights[0] < 2**15 - 1


@lru_cache(maxsize=8)
def _small_weights_table(weights: tuple, device: torch.device) -> torch.Tensor:
    """int32 table: small-weight path cost -> 16.16 path cost (the small cap -> the cap); asserts the order claim
    for every combination of the moves with a weight."""
    counts = [torch.arange(21 if wt else 1) for wt in weights]  # below the cap: < 21 of any move
    grids = [g.reshape(-1) for g in torch.meshgrid(*counts, indexing="ij")]
    exact = sum(g * wt for g, wt in zip(grids, (_HV, _DIAG, _LONG)))
    small = sum(g * (wt or 0) for g, wt in zip(grids, weights))
    cap_fx, cap_small = _SMALL_CAP * _HV, _SMALL_CAP * weights[0]
    order = torch.argsort(exact)
    exact, small = exact[order], small[order]
    below = exact < cap_fx
    assert bool((exact[below].diff() > 0).all() and (small[below].diff() > 0).all()), "ties among path costs"
    assert int(small[below].max()) < cap_small <= int(small[~below].min()), "the cap is not preserved"
    table = torch.zeros(cap_small + 1, dtype=torch.int32)
    table[small[below]] = exact[below].to(torch.int32)
    table[cap_small] = cap_fx
    return table.to(device)


def _chamfer_capped(seed: torch.Tensor, cap: int) -> torch.Tensor:
    """min(distance, cap) in 16.16 fixed point, int32 (H + 2, W + 2, N) with the core filled (the frame is for
    the caller's 3x3 filter). `seed` (H, W, N) int16 is -1 at the zero pixels, else 0."""
    h, w, n = seed.shape
    out = torch.empty((h + 2, w + 2, n), dtype=torch.int32, device=seed.device)
    core = out[1:-1, 1:-1]
    small = next((wts for wts in (_SMALL_ALL, _SMALL_HV_KNIGHT) if _fits_int16(wts, max(h, w))), None)
    if cap == _SMALL_CAP and small:
        val = _relax_capped(seed, cap * small[0], small, torch.int16)
        val = _small_weights_table(small, seed.device).index_select(0, val.to(torch.int32).view(-1)).view(h, w, n)
        if small[1] is None:
            val = _relax_capped(val, cap * _HV, (None, _DIAG, None), torch.int32, scale=1)
        core.copy_(val)
        return out
    # otherwise: knight moves counted in int16 (k_cap of them already cost more than the cap), then the counts
    # scaled to 16.16 for the diagonal and straight moves in int32
    k_cap = -(-cap * _HV // _LONG)
    counts = _relax_capped(seed, k_cap, (None, None, 1), torch.int16)
    dtype = torch.int32 if (h + w + k_cap) * _LONG * 2 < 2**31 - 1 else torch.int64
    val = _relax_capped(counts, cap * _HV, (_HV, _DIAG, None), dtype, scale=_LONG)
    torch.clamp(val, max=cap * _HV, out=core)
    return out


def _relax_capped(start: torch.Tensor, limit: int, weights, dtype: torch.dtype, scale: int = 0) -> torch.Tensor:
    """The 1-D passes of the moves whose weight is given in `weights` = (straight, diagonal, knight), with the
    repetitions that cost less than `limit`. `start`: a seed mask (-1/0; scale 0: distance 0 there, `limit`
    elsewhere) or distances to multiply by `scale`. Returns min(distance, limit) when started from seeds, as an
    (H, W, N) view into a pooled buffer (valid until the next call with the same shape)."""
    h, w, n = start.shape
    ws, wd, wk = weights
    plan = [(moves, -(-limit // wt) - 1, wt) for moves, wt in ((_KNIGHT_MOVES, wk), (_DIAG_MOVES, wd), (_HV_MOVES, ws))
            if wt]
    r = _relaxer(h, w, n, _margin(h, w, [(mv, k) for mv, k, _ in plan]), dtype, start.device)
    moves, _, wt = plan[0]
    a, b = _tau(*moves[0])
    dom = (-wt * a, -wt * b)  # the first pass's domain
    core = r.start(dom)
    if scale:
        torch.add(r.ramp(*dom), start, alpha=scale, out=core)
    else:
        torch.add(r.ramp(*dom) + limit, start, alpha=limit, out=core)  # 0 at seeds, else the cap
    for moves, k, wt in plan:
        r.run(moves, wt, k)
    return r.view().sub_(r.ramp(*r.dom))


def _chamfer_full(zero: torch.Tensor) -> torch.Tensor:
    """Uncapped distances in 16.16 fixed point, int64 (H, W, N). OpenCV surrounds the image with a two-pixel
    frame at _INF, so an image without any zero pixel reads _INF plus each pixel's distance to that frame; the
    frame never shortens a real distance (the best path stays in the box between its ends)."""
    h, w, n = zero.shape
    k = max(h, w) + 4
    plan = [(_KNIGHT_MOVES, k), (_DIAG_MOVES, k), (_HV_MOVES, k)]
    r = _Relaxer(h + 4, w + 4, n, _margin(h + 4, w + 4, plan), torch.int64, zero.device)
    core = r.start((0, 0))
    core.fill_(_INF)
    core[2:-2, 2:-2] = torch.where(zero, 0, 2 * _INF)
    for (moves, k), weight in zip(plan, (_LONG, _DIAG, _HV)):
        r.run(moves, weight, k)
    return (r.view() - r.ramp(*r.dom))[2:-2, 2:-2]


def chamfer_distance(zero: torch.Tensor, cap: int | None = None) -> torch.Tensor:
    """`cv2.distanceTransform(src, DIST_L2, 5)` where `zero` (bool, N x H x W) marks the pixels with src == 0,
    as float32 (8192 and more where an image has no zero pixel); with `cap`, min(distance, cap)."""
    if cap is None:
        fixed = _chamfer_full(_hwn(zero.bool()))
    else:
        fixed = _chamfer_capped(_hwn(-zero.to(torch.int16)), int(cap))[1:-1, 1:-1]
    return _nhw((fixed.to(torch.float32) * (1.0 / 65536)).to(torch.float32))


# ----------------------------------------------------------------------------------------- 8-bit filters


def box3_sum(x: torch.Tensor) -> torch.Tensor:
    """The 3x3 sums of `cv2.blur(x, (3, 3))` (border reflect-101), (N, H, W) in x's dtype."""
    return _nhw(_box3(_pad(_hwn(x), 2)))


def _equalize_index(img: torch.Tensor, levels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cv2.equalizeHist's table for each image of (H, W, N) values in [0, levels), returned with the flat
    indices (value + levels * image) that look it up: (table (N * levels,) int16, index (H * W * N,) int32).
    The N small tables are built in numpy: a dozen torch calls on (N, levels) tensors cost more than the
    histogram itself."""
    n = img.shape[-1]
    total = img[..., 0].numel()
    index = (img.to(torch.int32) + _image_offsets(img.shape[1], n, levels, img.device)).reshape(-1)
    hist = torch.bincount(index, minlength=n * levels).view(n, levels).cpu().numpy()
    rows = np.arange(n)
    first = (hist > 0).argmax(1)
    at_first = hist[rows, first]
    cum = np.cumsum(hist, 1)
    cum -= cum[rows, first][:, None]  # sum over first < k' <= k
    # OpenCV: float scale = (hist_sz - 1.f) / (total - count of the first level), one rounded float32 quotient
    scale = np.float32(255.0) / np.maximum(total - at_first, 1).astype(np.float32)
    lut = np.clip(np.round(cum.astype(np.float32) * scale[:, None]), 0, 255).astype(np.int16)
    lut[np.arange(levels)[None] <= first[:, None]] = 0
    flat = at_first == total  # a flat image stays as it is
    lut[flat] = first[flat, None]
    return torch.from_numpy(lut.reshape(-1)).to(img.device), index


def equalize_hist(img: torch.Tensor, levels: int = 256) -> torch.Tensor:
    """`cv2.equalizeHist` per image of (N, H, W) integer values in [0, levels) (levels <= 256), as int16."""
    x = _hwn(img)
    lut, index = _equalize_index(x, levels)
    return _nhw(lut.index_select(0, index).view(x.shape))


def _emboss(p: torch.Tensor) -> torch.Tensor:
    """The emboss correlation [[-2,-1,0],[-1,1,1],[0,1,2]] of a padded (H + 2, W + 2, ...) int16 buffer,
    unsaturated."""
    h, w = p.shape[0] - 2, p.shape[1] - 2

    def s(dy, dx):
        return p[1 + dy:1 + dy + h, 1 + dx:1 + dx + w]

    out = s(1, 0) - s(-1, 0)
    out.add_(s(1, 1) - s(-1, -1), alpha=2)
    out += s(0, 1) - s(0, -1)
    out += s(0, 0)
    return out


def emboss(img: torch.Tensor) -> torch.Tensor:
    """`cv2.filter2D(img, CV_8U, [[-2,-1,0],[-1,1,1],[0,1,2]])`: integer correlation, reflect-101, saturated.
    (N, H, W) int16 out."""
    return _nhw(_emboss(_pad(_hwn(img.to(torch.int16)), 2)).clamp_(0, 255))


# ------------------------------------------------------------------------------------------ spatter's mask


def water_mask(l8: torch.Tensor) -> torch.Tensor:
    """The reference's water-drop mask from its 8-bit liquid layer `l8` (N, H, W): Canny(50, 150) edges, their
    chamfer distance truncated at 20, a float 3x3 blur cast to uint8, equalizeHist, emboss, and a rounding 8-bit
    3x3 blur. Returns (N, H, W) float32 values 0..255."""
    n, h, w = l8.shape
    p = torch.empty((h + 2, w + 2, n), dtype=torch.int16, device=l8.device)
    p[1:-1, 1:-1].permute(2, 0, 1).copy_(l8)  # the one transposition into the working layout
    edges = _hysteresis(*_canny_masks(p, 50, 150))
    dist = native_warp.chamfer_capped(edges, 20)  # None unless QACT_KERNEL=native (the same integers)
    if dist is None:
        dist = _chamfer_capped(edges.view(torch.int8).to(torch.int16), 20)
    dist = _fill_border_(dist, 2)
    # float blur of the distances: sum / 9 (exact in float32 and double here) cast to uint8 truncates, which for
    # 16.16 sums S is floor(S / (9 * 65536)) = floor((S >> 16) / 9) = ((S >> 16) * 57) >> 9 (S >> 16 <= 180)
    level = (_box3(dist) >> 16).mul_(57) >> 9
    lut, index = _equalize_index(level, 21)
    eq = torch.empty_like(p)
    eq[1:-1, 1:-1] = lut.index_select(0, index).view(h, w, n)
    drops = torch.empty_like(p)
    torch.clamp(_emboss(_fill_border_(eq, 2)), 0, 255, out=drops[1:-1, 1:-1])
    sums = _nhw(_box3(_fill_border_(drops, 2)))  # int16: back to (N, H, W) at half the bytes of float32
    # cv2.blur on uint8 rounds: round(sum / 9), as the float32 product
    return torch.round(sums.to(torch.float32) * (1.0 / 9.0))
