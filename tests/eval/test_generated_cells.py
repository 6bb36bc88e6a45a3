"""The in-memory store of generated cells: every image read once from its source, the same images and labels
back in any access order, in a buffer that is allocated once for the images a run uses and grows only past that."""

from __future__ import annotations

import numpy as np
import torch

from qact_cli.data.base import ArraySource
from qact_cli.eval.generated_cells import _KeptSource


class _Counting(ArraySource):
    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.reads = np.zeros(len(self), np.int64)

    def __getitems__(self, indices):
        np.add.at(self.reads, np.asarray(indices), 1)
        return super().__getitems__(indices)


def _source(n=50):
    rng = np.random.default_rng(0)
    return _Counting(rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8), rng.integers(0, 10, n), 10, name="t")


def test_kept_source_returns_the_source_and_reads_each_image_once():
    src = _source()
    kept = _KeptSource(src, capacity=20)
    rng = np.random.default_rng(1)
    for _ in range(12):  # random batches with repeats reach past the capacity: the store grows
        idx = rng.integers(0, len(src), 9)
        x, y = kept.__getitems__(idx)
        ex, ey = ArraySource.__getitems__(src, idx)
        assert torch.equal(x, ex) and torch.equal(y, ey)
    assert src.reads.max() == 1
    assert len(kept._x) <= len(src) and kept._x.dtype == torch.uint8


def test_kept_source_allocates_once_when_the_run_stays_within_its_capacity():
    src = _source()
    kept = _KeptSource(src, capacity=20)
    idx = (np.arange(20) * len(src)) // 20  # what --limit 20 reads
    kept.__getitems__(idx[:8])
    store = kept._x
    for _ in range(2):  # a second model (or --adapt bn's extra pass) reads the same images again
        x, _ = kept.__getitems__(idx)
    assert kept._x is store and len(store) == 20
    assert torch.equal(x, ArraySource.__getitems__(src, idx)[0])


def test_kept_source_is_read_inside_and_outside_inference_mode():
    for first_inference in (True, False):
        src = _source()
        kept = _KeptSource(src, capacity=10)
        with torch.inference_mode(first_inference):
            kept.__getitems__(np.arange(5))
        with torch.inference_mode(not first_inference):
            x, y = kept.__getitems__(np.arange(3, 12))  # past the capacity: the store grows, then is written
        with torch.inference_mode(first_inference):
            x2, _ = kept.__getitems__(np.arange(40, 45))
        assert torch.equal(x, ArraySource.__getitems__(src, np.arange(3, 12))[0])
        assert torch.equal(x2, ArraySource.__getitems__(src, np.arange(40, 45))[0])
