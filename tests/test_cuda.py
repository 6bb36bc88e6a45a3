"""Checks on a CUDA device (marker `cuda`; benchmarks/gpu_check.sh runs them, docs/gpu.md): corruptions on
the device against the CPU, QAct against the float64 reference, `qact train`/`qact eval --device cuda`, the
GPU JPEG decoder, and a two-process NCCL evaluation when two GPUs are present. Skipped without a GPU.

QACT_TEST_DEVICE (default cuda) names the device under test; QACT_TEST_DEVICE=cpu runs the same bodies on
the CPU against the CPU, a run that shows the tests themselves work where there is no GPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from qact_cli.corruptions import CORRUPTIONS, DETERMINISTIC, corrupt
from qact_cli.corruptions.rng import ImageStreams
from qact_cli.nn.qact import QAct
from qact_cli.nn.qact.reference import exact_cdf
from fixtures_images import natural

DEVICE = torch.device(os.environ.get("QACT_TEST_DEVICE", "cuda"))
ON_GPU = DEVICE.type == "cuda"

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(ON_GPU and not torch.cuda.is_available(), reason="no CUDA device")]

REPO = Path(__file__).resolve().parents[1]


def grey_levels(a: torch.Tensor, b: torch.Tensor) -> int:
    """Largest difference between two uint8 tensors, on any devices."""
    return int((a.cpu().int() - b.cpu().int()).abs().max())


def field_drawing(name: str, x: torch.Tensor) -> bool:
    """Whether `name` draws random fields (noise, offsets). Those come from the images' device's generator
    (corruptions/rng.py), so on CUDA they are other draws than on the CPU; scalar draws are CPU-side everywhere."""
    used = []
    real = ImageStreams.field

    def spy(self):
        used.append(True)
        return real(self)

    ImageStreams.field = spy
    try:
        corrupt(x[:1], name, 3, seed=0)
    finally:
        ImageStreams.field = real
    return bool(used)


def change_stats(out: torch.Tensor, x: torch.Tensor) -> tuple[float, float]:
    """Mean output level and mean |output - input|, in grey levels."""
    out, x = out.cpu().double(), x.cpu().double()
    return float(out.mean()), float((out - x).abs().mean())


# ------------------------------------------------------------------------------------------ corruptions
@pytest.mark.parametrize("size,n", [(32, 16), (224, 3)])
def test_corruptions_on_device_match_the_cpu(size, n):
    """All 19 at severity 3. Without random fields: every pixel within ±1 grey level of the CPU's. With random
    fields (other draws on CUDA): the same amount of change (mean level, mean |change|) as on the CPU, and the
    same bytes twice on the device."""
    x = torch.from_numpy(natural((size, size), n, seed=3)).permute(0, 3, 1, 2).contiguous()
    xd = x.to(DEVICE)
    bad = []
    for name in CORRUPTIONS:
        cpu = corrupt(x, name, 3, seed=0)
        dev = corrupt(xd, name, 3, seed=0)
        if dev.device.type != DEVICE.type or dev.dtype != torch.uint8 or dev.shape != x.shape:
            bad.append(f"{name}: {dev.dtype} {tuple(dev.shape)} on {dev.device}")
            continue
        if name in DETERMINISTIC or not field_drawing(name, x):
            if (d := grey_levels(dev, cpu)) > 1:
                bad.append(f"{name}: {d} grey levels from the CPU's")
            continue
        if not torch.equal(dev, corrupt(xd, name, 3, seed=0)):
            bad.append(f"{name}: two runs on {DEVICE} differ")
        (lc, cc), (ld, cd) = change_stats(cpu, x), change_stats(dev, x)
        if abs(ld - lc) > max(2.0, 0.2 * cc) or abs(cd - cc) > max(1.0, 0.2 * cc):
            bad.append(f"{name}: mean level {ld:.1f} vs {lc:.1f}, mean change {cd:.1f} vs {cc:.1f} on the CPU")
    assert not bad, "; ".join(bad)


# ------------------------------------------------------------------------------------------ QAct
@pytest.mark.parametrize("layout", ["dense", "conv"])
def test_qact_on_device_matches_the_float64_reference(layout):
    """The tolerance of tests/nn/test_qact.py (0.01 from the exact grounded CDF over the whole context), and the
    device's output and input gradient equal to the CPU's."""
    torch.manual_seed(0)
    z = torch.randn(4000, 3) * torch.tensor([1.0, 3.0, 0.5]) + torch.tensor([0.0, 1.0, -0.2])
    x = z if layout == "dense" else z.reshape(250, 16, 3).permute(0, 2, 1).reshape(250, 3, 4, 4).contiguous()
    layer = QAct(3, wrap_bn=False, context_size=None)
    y_cpu, g_cpu = _forward_backward(layer, x)
    y_dev, g_dev = _forward_backward(layer.to(DEVICE), x.to(DEVICE))
    assert y_dev.device.type == DEVICE.type
    flat = y_dev.cpu() if layout == "dense" else y_dev.cpu().reshape(250, 3, 16).permute(0, 2, 1).reshape(4000, 3)
    for ch in range(3):
        ref = exact_cdf(z[:, ch].double().numpy(), z[:, ch].double().numpy())
        assert np.abs(flat[:, ch].double().numpy() - ref).max() < 0.01
    torch.testing.assert_close(y_dev.cpu(), y_cpu, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(g_dev.cpu(), g_cpu, atol=1e-4, rtol=1e-4)


def _forward_backward(layer, x):
    x = x.clone().requires_grad_()
    y = layer.train()(x)
    (y * torch.linspace(-1, 1, y.numel(), device=y.device).reshape(y.shape)).sum().backward()
    return y.detach(), x.grad


def test_qact_default_layer_trains_on_device():
    """The default layer (sampled context, BatchNorm wrap) in a train step and in eval: finite, in [0, 1]."""
    torch.manual_seed(0)
    layer = QAct(8).to(DEVICE)
    x = (torch.randn(64, 8, 6, 6) * 2 + 1).to(DEVICE).requires_grad_()
    y = layer.train()(x)
    y.square().sum().backward()
    assert torch.isfinite(x.grad).all() and y.device.type == DEVICE.type
    with torch.no_grad():
        e = layer.eval()(x.detach())
    assert torch.isfinite(e).all()


# ------------------------------------------------------------------------------------------ the CLI
def _qact(*args, env=None, check=True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1", **(env or {})}
    r = subprocess.run([sys.executable, "-m", "qact_cli", *map(str, args)], capture_output=True, text=True, env=env,
                       timeout=600)
    if check:
        assert r.returncode == 0, f"qact {' '.join(map(str, args))}: exit {r.returncode}\n{r.stderr[-3000:]}"
    return r


EVAL = ["--dataset", "gen:digits", "--corruptions", "contrast,defocus_blur", "--severities", "0,2,5", "--batch-size", "64"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """`qact train --device DEVICE` on digits: a small QAct LeNet, 2 epochs."""
    d = tmp_path_factory.mktemp("cuda_train")
    _qact("train", "--dataset", "digits", "--arch", "lenet", "--act", "qact", "--epochs", "2", "--batch-size", "64",
          "--device", DEVICE, "--out", d / "m.pt")
    return d / "m.pt"


def test_train_on_device(trained):
    from qact_cli.checkpoint import load_model, read_checkpoint

    ck = read_checkpoint(trained)
    assert len(ck["train"]["history"]) == 2
    env = ck["train"]["environment"]
    assert env["device"].startswith(DEVICE.type) and (not ON_GPU or env["gpu"])
    model, _ = load_model(trained)  # loads on the CPU
    assert all(p.device.type == "cpu" for p in model.parameters())


def test_eval_on_device_equals_the_cpu(trained, tmp_path):
    """Deterministic corruptions, stored context: the same images on either device, so the same predictions up to
    a few images where float rounding flips the top class."""
    _qact("eval", trained, *EVAL, "--device", DEVICE, "--json", tmp_path / "dev.json")
    _qact("eval", trained, *EVAL, "--device", "cpu", "--json", tmp_path / "cpu.json")
    dev, cpu = (json.loads((tmp_path / f"{k}.json").read_text()) for k in ("dev", "cpu"))
    assert dev["environment"]["device"].startswith(DEVICE.type)
    if ON_GPU:
        assert dev["environment"]["gpu"] and dev["environment"]["cuda"]
    assert [(c["corruption"], c["severity"]) for c in dev["cells"]] == [(c["corruption"], c["severity"]) for c in cpu["cells"]]
    for a, b in zip(dev["cells"], cpu["cells"]):
        assert a["n"] == b["n"] and abs(a["acc"] - b["acc"]) * a["n"] <= 2, (a, b)


def test_torchrun_two_processes_equal_one(trained, tmp_path):
    """NCCL on two GPUs (gloo on the CPU): sharded evaluation gives the single-process cells (docs/distributed.md)."""
    if ON_GPU and torch.cuda.device_count() < 2:
        pytest.skip("needs two CUDA devices")
    _qact("eval", trained, *EVAL, "--device", DEVICE.type, "--json", tmp_path / "one.json")
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1", "QACT_DIST_TIMEOUT": "120"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                        "-m", "qact_cli", "eval", str(trained), *EVAL, "--device", DEVICE.type,
                        "--json", str(tmp_path / "two.json")], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    one, two = (json.loads((tmp_path / f"{k}.json").read_text()) for k in ("one", "two"))
    assert two["environment"]["distributed"] == {"world_size": 2, "backend": "nccl" if ON_GPU else "gloo"}
    assert json.dumps(two["cells"]) == json.dumps(one["cells"])


# ------------------------------------------------------------------------------------------ JPEG decoding
def _jpeg_folder(root: Path, size: int, subsampling: int) -> Path:
    from PIL import Image

    images = natural((size, size), 12, seed=5)
    for i, img in enumerate(images):
        d = root / str(i % 10)
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(d / f"{i:03d}.JPEG", "JPEG", quality=85, subsampling=subsampling)
    return root


@pytest.mark.parametrize("size", [32, 224])
@pytest.mark.parametrize("subsampling,max_levels", [(0, 2), (2, None)])  # 4:4:4 and 4:2:0 (PIL's default)
def test_gpu_jpeg_decoder_matches_pil(tmp_path, monkeypatch, size, subsampling, max_levels):
    """Image-folder cells decoded by nvJPEG on the device (no silent CPU fallback) agree with PIL's decode:
    at most `max_levels` grey levels apart with full chroma, under one level on average with 4:2:0."""
    import qact_cli.data.decode as decode
    from qact_cli.data.base import FolderSource, scan_folder
    from qact_cli.eval.protocol import cell_batches

    root = _jpeg_folder(tmp_path, size, subsampling)
    source = FolderSource(*scan_folder(root), "jpeg", root)
    assert (decode.batch_decoder(source, DEVICE) is not None) == ON_GPU

    def no_fallback(*a):
        raise AssertionError("the GPU decoder fell back to the CPU path")

    monkeypatch.setattr(decode, "_cpu_batch", no_fallback)
    cpu = list(cell_batches(source, 5, workers=0))
    dev = list(cell_batches(source, 5, workers=0, device=DEVICE))
    assert [len(y) for _, y in dev] == [5, 5, 2]
    for (xc, yc), (xd, yd) in zip(cpu, dev):
        assert xd.device.type == DEVICE.type and xd.dtype == torch.uint8 and xd.shape == xc.shape
        assert torch.equal(yc, yd.cpu())
        diff = (xd.cpu().int() - xc.int()).abs()
        assert float(diff.float().mean()) < 1.0
        if max_levels is not None:
            assert int(diff.max()) <= max_levels


def test_eval_of_a_jpeg_folder_on_device(trained, tmp_path):
    """`qact eval --dataset folder:DIR --device cuda` decodes on the GPU and scores like the CPU run."""
    from PIL import Image

    from qact_cli.data import get_dataset

    test = get_dataset("digits").split("test")
    for i in range(200):
        d = tmp_path / "tree" / str(int(test.labels[i]))
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.asarray(test.images[i])).save(d / f"{i:04d}.JPEG", "JPEG", quality=90)
    args = ["--dataset", f"gen:folder:{tmp_path / 'tree'}", "--corruptions", "contrast", "--severities", "0,3",
            "--batch-size", "64"]
    _qact("eval", trained, *args, "--device", DEVICE, "--json", tmp_path / "dev.json")
    _qact("eval", trained, *args, "--device", "cpu", "--json", tmp_path / "cpu.json")
    dev, cpu = (json.loads((tmp_path / f"{k}.json").read_text()) for k in ("dev", "cpu"))
    for a, b in zip(dev["cells"], cpu["cells"], strict=True):
        assert a["n"] == b["n"] and abs(a["acc"] - b["acc"]) * a["n"] <= 4, (a, b)  # JPEG decodes differ slightly
