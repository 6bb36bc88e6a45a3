"""Test-time adaptation (`--adapt bn`; docs/qact-layer.md, "Context at evaluation time"): re-estimate
the normalisation statistics and QAct stored contexts on unlabeled batches of a test cell, evaluate,
then put back.

The official code adapts by running the corrupted split through the model in train mode before
scoring it (adityac20/quantile_activation, src/compute_corrupted_accuracy.py, `compute_accuracy`);
this is the same idea made explicit and undoable: BatchNorm running statistics are re-estimated as a
cumulative average over the given batches (momentum=None), QAct reservoirs as an equal-weight sample
of them, nothing else changes (no gradient is taken), and the exact previous state (every buffer, the
modules' train/eval flags and momenta) is restored on exit. It applies to any model with BatchNorm,
ReLU baselines included, so comparisons stay fair.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..errors import InputError
from .qact import QAct


def _at_least_two(batches: Iterable[Tensor]) -> Iterator[Tensor]:
    """The batches, with any 1-image batch (a cell's last, e.g. --limit 257 at batch size 256) joined to its
    neighbour: BatchNorm in train mode needs more than one value per channel. Only this statistics pass
    is affected; the scoring pass keeps the protocol's batches."""
    held = None
    for x in batches:
        if held is not None and (len(x) == 1 or len(held) == 1):
            held = torch.cat([held, x])
            continue
        if held is not None:
            yield held
        held = x
    if held is not None:
        if len(held) == 1:
            raise InputError("--adapt bn needs at least 2 images in a cell to re-estimate its statistics, this cell "
                             "has 1; raise --limit or use --adapt none")
        yield held


@contextmanager
def adapted(model: nn.Module, batches: Iterable[Tensor]) -> Iterator[nn.Module]:
    """Yield `model` in eval mode with BatchNorm statistics and QAct stored contexts re-estimated on
    `batches` (model-ready float inputs, no labels); restore the model exactly on exit."""
    saved_buffers = {name: b.clone() for name, b in model.named_buffers()}  # nothing else changes (no_grad)
    saved_flags = {m: m.training for m in model.modules()}
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    qacts = [m for m in model.modules() if isinstance(m, QAct)]
    saved_momenta = {m: m.momentum for m in norms} | {m: m.context_momentum for m in qacts}
    try:
        model.eval()
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average: every batch weighs the same
            m.train()
        for m in qacts:
            m.stored_batches.zero_()
            m.context_momentum = None
            m.train()
        seen = 0
        with torch.no_grad():
            for x in _at_least_two(batches):
                model(x)
                seen += 1
        if seen == 0:
            raise ValueError("adapted() got no batches to re-estimate the statistics on")
        model.eval()
        yield model
    finally:
        for m, mom in saved_momenta.items():
            if isinstance(m, QAct):
                m.context_momentum = mom
            else:
                m.momentum = mom
        with torch.no_grad():
            for name, b in model.named_buffers():
                if name in saved_buffers:
                    b.copy_(saved_buffers[name])
        for m, flag in saved_flags.items():
            m.train(flag)
