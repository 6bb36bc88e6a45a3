"""`qact eval` throughput against the bare model forward, and peak memory against dataset size.

    PYTHONPATH=. python benchmarks/bench_eval.py [--lenet-rows 10240] [--resnet-rows 640] [--repeats 3]
        [--device cpu|cuda] [--json benchmarks/results/bench_eval.json]

Throughput: a CIFAR-10-C-style folder (one corruption, 5 severity blocks) of random uint8 images
on disk; `run_eval()` (what `qact eval` runs: read from disk, uint8 -> float, forward, softmax,
every metric, one (corruption, severity) cell per batch) against the bare forward of the same model
over the same images already normalised in memory, batch 256, one thread, CPU. The ratio
eval/forward is on process CPU time (less sensitive than wall time to other processes on a shared
machine); target <= 1.10. The data path alone (disk -> normalised batch, no model) is timed too.
The external-model row evaluates `torchvision:resnet18` with `--weights FILE.safetensors
--num-classes 10 --mean --std` (the spec path: build, weights read without pickles, preprocessing
from the options) against the bare forward of the same torchvision model.
Memory: peak RSS during the evaluation of 2,000, 20,000 and 40,000 rows (6, 61 and 123 MB of
images), each in a fresh process, the import peak excluded (Linux only: /proc/self/status and
clear_refs). What remains is allocator noise of a few tens of MB, flat in the number of rows.
`--device cuda` (the GPU rows, benchmarks/gpu_check.sh): the same comparison with the model, the
normalised images of the bare forward and the evaluation on the GPU, on wall time with the device
synchronised (process CPU time says nothing of GPU work), torch's default CPU threads; no memory rows.
Prints a table and writes benchmarks/results/bench_eval.json (`--json PATH`).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from qact_cli.checkpoint import make_checkpoint, save_checkpoint
from qact_cli.data import get_dataset
from qact_cli.data.transforms import to_model_input
from qact_cli.eval import run
from qact_cli.options.model import model_options
from qact_cli.eval.protocol import cell_batches
from qact_cli.models import build_model
from qact_cli.utils import environment

BATCH = 256
MEAN, STD = [0.49, 0.48, 0.45], [0.25, 0.24, 0.26]


def write_folder(d: Path, rows: int) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    np.save(d / "fog.npy", rng.integers(0, 256, (rows, 32, 32, 3), dtype=np.uint8))
    np.save(d / "labels.npy", rng.integers(0, 10, rows).astype(np.uint8))
    return d


def model_and_meta(arch: str, path: Path) -> tuple[torch.nn.Module, dict]:
    torch.manual_seed(0)
    if arch.startswith("torchvision:"):  # a model from elsewhere: a spec and a weights file
        import torchvision
        from safetensors.torch import save_file

        model = torchvision.models.get_model(arch.split(":", 1)[1], num_classes=10).eval()
        weights = path.with_suffix(".safetensors")
        save_file(model.state_dict(), str(weights))
        return model, {"path": arch, "options": dict(weights=str(weights), num_classes=10, mean=MEAN, std=STD)}
    model = build_model(arch, act="relu", num_classes=10, input_size=(32, 32)).eval()
    info = {"arch": arch, "act": "relu", "head": "linear", "num_classes": 10, "arch_kwargs": {"input_size": [32, 32]},
            "input_size": [32, 32], "mean": MEAN, "std": STD, "classes": None, "backbone": None}
    save_checkpoint(make_checkpoint(model, info, {"dataset": "bench"}), path)
    return model, {"model": info, "path": str(path)}


def timed(fn, device: torch.device) -> tuple[float, float]:
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    w, c = time.perf_counter(), time.process_time()
    fn()
    sync()
    return time.perf_counter() - w, time.process_time() - c


def bench_throughput(arch: str, rows: int, repeats: int, tmp: Path, device: str = "cpu") -> dict:
    dev = torch.device(device)
    folder = write_folder(tmp / f"{arch.replace(':', '_')}-{rows}", rows)
    model, meta = model_and_meta(arch, tmp / f"{arch.replace(':', '_')}.pt")
    model = model.to(dev)
    cells = get_dataset("cifar10c", folder).cells(["fog"], [1, 2, 3, 4, 5])
    # the same images, batched as eval batches them (per cell), normalised once, in memory (on the device)
    inputs = [to_model_input(xb.to(dev), MEAN, STD) for c in cells for xb, _ in cell_batches(c.source, BATCH)]

    @torch.inference_mode()
    def bare():
        for x in inputs:
            model(x)

    def data_path():
        for c in cells:
            for xb, _ in cell_batches(c.source, BATCH):
                to_model_input(xb.to(dev, non_blocking=True), MEAN, STD)

    def full():
        options = model_options(**meta["options"]) if "options" in meta else None
        run.run_eval([meta["path"]], "cifar10c", folder, corruptions="fog", severities="1-5", batch_size=BATCH,
                     device=device, model_options=options)

    full(), bare()  # warm-up
    runs = {"bare": [], "eval": [], "data": []}
    for _ in range(repeats):  # interleaved, best of `repeats`
        runs["bare"].append(timed(bare, dev))
        runs["eval"].append(timed(full, dev))
        runs["data"].append(timed(data_path, dev))
    best = {k: (min(w for w, _ in v), min(c for _, c in v)) for k, v in runs.items()}
    clock = 0 if dev.type == "cuda" else 1  # the rates: wall time on a GPU, process CPU time on the CPU
    return {
        "arch": arch, "device": str(dev), "images": rows, "batch_size": BATCH,
        "clock": "wall" if clock == 0 else "process cpu",
        "bare_img_s": rows / best["bare"][clock], "eval_img_s": rows / best["eval"][clock],
        "data_img_s": rows / best["data"][clock],
        "ratio_cpu": best["eval"][1] / best["bare"][1], "ratio_wall": best["eval"][0] / best["bare"][0],
        "data_share_cpu": best["data"][1] / best["eval"][1], "data_share_wall": best["data"][0] / best["eval"][0],
    }


# VmHWM is this process's own peak RSS (ru_maxrss would start at the parent's peak); writing 5 to
# clear_refs resets it, so the import peak does not hide the evaluation's
PEAK_SCRIPT = r"""
import json, re, sys, torch
from qact_cli.eval.run import run_eval
torch.set_num_threads(1)
hwm = lambda: int(re.search(r"VmHWM:\s+(\d+) kB", open("/proc/self/status").read()).group(1)) / 1024
imports = hwm()
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
start = hwm()
run_eval([sys.argv[1]], "cifar10c", sys.argv[2], corruptions="fog", severities="1-5", batch_size=256, device="cpu")
print(json.dumps({"import_peak_mb": imports, "start_mb": start, "peak_mb": hwm()}))
"""


def bench_memory(tmp: Path) -> list[dict]:
    _, meta = model_and_meta("lenet", tmp / "mem.pt")
    out = []
    for rows in (2_000, 20_000, 40_000):
        folder = write_folder(tmp / f"mem-{rows}", rows)
        r = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, meta["path"], str(folder)], capture_output=True, text=True,
                           check=True)
        m = json.loads(r.stdout.strip().splitlines()[-1])
        out.append({"rows": rows, "file_mb": (folder / "fog.npy").stat().st_size / 2**20, **m})
    return out


def throughput_in_subprocess(arch: str, rows: int, repeats: int, device: str) -> dict:
    """One model in a fresh process, so that neither model's allocations shape the other's timing."""
    cmd = [sys.executable, __file__, "--one", arch, "--rows", str(rows), "--repeats", str(repeats), "--device", device]
    r = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lenet-rows", type=int, default=10_240)
    ap.add_argument("--resnet-rows", type=int, default=640)
    ap.add_argument("--tv-rows", type=int, default=10_240, help="images for the torchvision:resnet18 row")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu", help="cpu, or cuda for the GPU rows (wall time, no memory rows)")
    ap.add_argument("--json", "--out", dest="out", default=str(Path(__file__).parent / "results" / "bench_eval.json"))
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: one model's throughput in this process
    ap.add_argument("--rows", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    gpu = torch.device(args.device).type == "cuda"
    if gpu and not torch.cuda.is_available():
        sys.exit(f"bench_eval: --device {args.device} but torch sees no CUDA device")
    if not gpu:
        torch.set_num_threads(1)
    if args.one:
        with tempfile.TemporaryDirectory() as t:
            print(json.dumps(bench_throughput(args.one, args.rows, args.repeats, Path(t), args.device)))
        return
    speed = [throughput_in_subprocess("lenet", args.lenet_rows, args.repeats, args.device),
             throughput_in_subprocess("resnet18", args.resnet_rows, max(1, args.repeats - 1), args.device),
             throughput_in_subprocess("torchvision:resnet18", args.tv_rows, max(1, args.repeats - 1), args.device)]
    memory = []
    if not gpu:
        with tempfile.TemporaryDirectory() as t:
            memory = bench_memory(Path(t))
    print(f"{'model':<22}{'images':>7}{'bare img/s':>11}{'eval img/s':>11}{'data img/s':>11}"
          f"{'eval/bare cpu':>14}{'eval/bare wall':>15}{'data share':>11}")
    for r in speed:
        print(f"{r['arch']:<22}{r['images']:>7}{r['bare_img_s']:>11.0f}{r['eval_img_s']:>11.0f}"
              f"{r['data_img_s']:>11.0f}{r['ratio_cpu']:>14.3f}{r['ratio_wall']:>15.3f}"
              f"{r['data_share_wall' if gpu else 'data_share_cpu']:>11.1%}")
    if memory:
        print(f"\n{'rows':>8}{'file MB':>10}{'RSS at start MB':>17}{'peak RSS MB':>13}{'eval MB':>9}")
    for m in memory:
        m["eval_mb"] = m["peak_mb"] - m["start_mb"]
        print(f"{m['rows']:>8}{m['file_mb']:>10.1f}{m['start_mb']:>17.1f}{m['peak_mb']:>13.1f}{m['eval_mb']:>9.1f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"throughput": speed, "memory": memory, "threads": torch.get_num_threads(),
                               "environment": environment(args.device),
                               "command": " ".join(sys.argv)}, indent=2) + "\n")
    print(f"\n-> {out}")


if __name__ == "__main__":
    main()
