"""QAct's opt-in fused CPU kernels (native.c), through qact's shared kernel switch and build cache
(qact_cli/native.py: `QACT_KERNEL=native` or `set_kernel("native")`, compiled on first use, loaded with
ctypes, the default torch path kept where no compiler is found).

native.c does in one pass over an activation what the torch ops do in several (docs/qact-layer.md, "The
native kernels"): BatchNorm -> QAct -> BatchNorm at eval, and training's three passes forward and back.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from ... import native as _native
from ...native import D as _D, F as _F, N as _N, by_items as _by_images, kernel, ptr as _p, set_kernel

__all__ = ["SOURCE", "active", "available", "f32", "gz_moments", "grad_input", "histograms", "kernel", "lookup",
           "moments", "set_kernel", "table_moments"]

SOURCE = Path(__file__).with_name("native.c")
_SIGNATURES = {
    "qact_row_moments": (_F, _N, _N, _D, _D),
    "qact_lookup": (_F, _F, _N, _N, _N, _F, _F, _F, _N),
    "qact_table_moments": (_F, _F, _N, _N, _N, _F, _F, _F, _N, _D, _D),
    "qact_gz_moments": (_F, _F, _N, _N, _N, _F, _F, _F, _F, _N, _D, _D),
    "qact_grad_input": (_F, _F, _F, _N, _N, _N, _F, _F, _F, _F, _N, _F, _F, _F),
    "qact_histograms": (_F, _N, _N, _F, _F, _N, _N, _F, _F, _F),
}


def _lib():
    return _native.library(SOURCE, _SIGNATURES)


def active(*tensors: Tensor) -> bool:
    """Whether the native kernels are selected, compiled, and apply to these tensors (CPU float32)."""
    if kernel() != "native" or any(t.device.type != "cpu" or t.dtype != torch.float32 for t in tensors):
        return False
    return _lib() is not None


def available() -> bool:
    """Whether the kernels compile and load here (compiling them if need be), whatever is selected."""
    return _lib() is not None


def f32(t: Tensor) -> Tensor:
    """A detached contiguous float32 tensor, as the kernels read it."""
    return t.detach().float().contiguous()


def _row_sums(n: int, c: int, like: Tensor) -> tuple[Tensor, Tensor]:
    return like.new_empty(n * c, dtype=torch.float64), like.new_empty(n * c, dtype=torch.float64)


def _per_channel(*rows: Tensor, n: int, c: int) -> tuple[Tensor, ...]:
    return tuple(r.view(n, c).sum(0) for r in rows)


def moments(x3: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel sum and sum of squares of contiguous (N, C, L) float32, in float64."""
    n, c, length = x3.shape
    s, q = _row_sums(n, c, x3)

    def work(i0, i1):
        r0 = i0 * c
        _lib().qact_row_moments(_p(x3, _F, r0 * length), (i1 - i0) * c, length, _p(s, _D, r0), _p(q, _D, r0))
    _by_images(n, c * length, work)
    return _per_channel(s, q, n=n, c=c)


def lookup(x3: Tensor, out: Tensor, scale: Tensor, bias: Tensor, table: Tensor) -> Tensor:
    """out = table[c, cell(x * scale + bias)], everything contiguous float32; out may be x3."""
    n, c, length = x3.shape

    def work(i0, i1):
        at = i0 * c * length
        _lib().qact_lookup(_p(x3, _F, at), _p(out, _F, at), (i1 - i0) * c, length, c, _p(scale, _F), _p(bias, _F),
                           _p(table, _F), table.shape[1])
    _by_images(n, c * length, work)
    return out


def table_moments(x3: Tensor, scale: Tensor, bias: Tensor, table: Tensor, g: Tensor | None = None
                  ) -> tuple[Tensor, Tensor]:
    """Per-channel sum(w) and sum(w * y), y = table[c, cell(x * scale + bias)], w = g (same shape as x3)
    or y itself when g is None (then: sum and sum of squares of y); float64."""
    n, c, length = x3.shape
    s, q = _row_sums(n, c, x3)

    def work(i0, i1):
        r0, at = i0 * c, i0 * c * length
        _lib().qact_table_moments(_p(g, _F, at) if g is not None else None, _p(x3, _F, at), (i1 - i0) * c, length,
                                  c, _p(scale, _F), _p(bias, _F), _p(table, _F), table.shape[1], _p(s, _D, r0),
                                  _p(q, _D, r0))
    _by_images(n, c * length, work)
    return _per_channel(s, q, n=n, c=c)


def gz_moments(g: Tensor, x3: Tensor, scale: Tensor, bias: Tensor, u: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel sum(gz) and sum(gz * x) for gz = u[c, cell(x)] * g + v[c, cell(x)], float64."""
    n, c, length = g.shape
    s, q = _row_sums(n, c, g)

    def work(i0, i1):
        r0, at = i0 * c, i0 * c * length
        _lib().qact_gz_moments(_p(g, _F, at), _p(x3, _F, at), (i1 - i0) * c, length, c, _p(scale, _F),
                               _p(bias, _F), _p(u, _F), _p(v, _F), u.shape[1], _p(s, _D, r0), _p(q, _D, r0))
    _by_images(n, c * length, work)
    return _per_channel(s, q, n=n, c=c)


def grad_input(g: Tensor, x3: Tensor, scale: Tensor, bias: Tensor, u: Tensor, v: Tensor, a: Tensor, p: Tensor,
               q: Tensor) -> Tensor:
    """dx = a * gz + p * x + q per channel, gz = u[c, cell(x)] * g + v[c, cell(x)]."""
    n, c, length = g.shape
    dx = torch.empty_like(x3)

    def work(i0, i1):
        at = i0 * c * length
        _lib().qact_grad_input(_p(g, _F, at), _p(x3, _F, at), _p(dx, _F, at), (i1 - i0) * c, length, c,
                               _p(scale, _F), _p(bias, _F), _p(u, _F), _p(v, _F), u.shape[1], _p(a, _F), _p(p, _F),
                               _p(q, _F))
    _by_images(n, c * length, work)
    return dx


def histograms(ctx: Tensor, inv_step: Tensor, zero_node: Tensor, nodes: int, kde_stride: int | None
               ) -> tuple[Tensor, Tensor | None, Tensor]:
    """For a context sample (C, k): per-channel cell counts on the table's grid (C, nodes), the same
    over every kde_stride-th value (None: not wanted), and the count of exact zeros (C, 1); float32."""
    c, k = ctx.shape
    ctx = ctx.contiguous()
    inv_step, zero_node = f32(inv_step), f32(zero_node)
    counts = ctx.new_empty(c, nodes)
    kde = ctx.new_empty(c, nodes) if kde_stride else None
    zeros = ctx.new_empty(c, 1)

    def work(c0, c1):
        _lib().qact_histograms(_p(ctx, _F, c0 * k), c1 - c0, k, _p(inv_step, _F, c0), _p(zero_node, _F, c0), nodes,
                               kde_stride or 1, _p(counts, _F, c0 * nodes),
                               _p(kde, _F, c0 * nodes) if kde is not None else None, _p(zeros, _F, c0))
    _by_images(c, k, work)
    return counts, kde, zeros
