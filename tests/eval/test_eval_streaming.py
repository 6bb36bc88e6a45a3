"""Streaming: evaluating a large `.npy` corruption file does not raise peak memory with its size."""

import json
import subprocess
import sys

import numpy as np

from fixtures_corrupted import random_checkpoint

ROWS = 20_000  # 4,000 per severity: a 61 MB file
BOUND_MB = 20

# VmHWM (this process's peak RSS, Linux), not ru_maxrss: the latter starts at the parent's peak at exec
SCRIPT = r"""
import json, re, sys
import torch
from qact_cli.checkpoint import load_model
from qact_cli.data import get_dataset
from qact_cli.eval.protocol import Protocol, evaluate

torch.set_num_threads(1)
ckpt, small, big = sys.argv[1:4]
model, meta = load_model(ckpt)
protocol = Protocol("cifar10c", ["fog"], [1, 2, 3, 4, 5], batch_size=64)
peak = lambda: int(re.search(r"VmHWM:\s+(\d+) kB", open("/proc/self/status").read()).group(1)) / 1024
evaluate(model, meta, get_dataset("cifar10c", small), protocol, torch.device("cpu"))  # warm-up: same code, 1/10 of the rows
before = peak()
doc = evaluate(model, meta, get_dataset("cifar10c", big), protocol, torch.device("cpu"))
print(json.dumps({"before_mb": before, "after_mb": peak(), "n": sum(c["n"] for c in doc["cells"])}))
"""


def _write(d, rows):
    d.mkdir()
    rng = np.random.default_rng(0)
    np.save(d / "fog.npy", rng.integers(0, 256, (rows, 32, 32, 3), dtype=np.uint8))
    np.save(d / "labels.npy", rng.integers(0, 10, rows).astype(np.uint8))


def test_peak_memory_does_not_grow_with_the_file(tmp_path):
    _write(tmp_path / "small", ROWS // 10)  # several batches per cell, as in the big one
    _write(tmp_path / "big", ROWS)
    ckpt = random_checkpoint(tmp_path / "tiny.pt", 10, 32, widths=(1, 1), hidden=(4, 4))
    r = subprocess.run([sys.executable, "-c", SCRIPT, str(ckpt), str(tmp_path / "small"), str(tmp_path / "big")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout.strip().splitlines()[-1])
    assert m["n"] == ROWS
    file_mb = (tmp_path / "big" / "fog.npy").stat().st_size / 2**20
    assert m["after_mb"] - m["before_mb"] < BOUND_MB < file_mb / 2, m
