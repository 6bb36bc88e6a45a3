"""QAct speed, memory and shortcut accuracy: the evidence behind the layer's design and defaults.

    PYTHONPATH=. python benchmarks/bench_qact.py [--repeats 5] [--only speed,memory,shortcuts,training]
        [--official PATH] [--device cpu|cuda] [--kernels torch,native] [--allocator tuned|default]
        [--json benchmarks/results/bench_qact.json]

speed      ResNet18 (CIFAR style, 17 activations, `qact_cli.models.build_model`) with QAct vs ReLU:
           train step (batch 64, forward + backward + SGD step) and eval forward (batch 256, no_grad),
           one thread, ReLU and QAct alternated, `--repeats` timings each after a warm-up; reports
           best and median of thread CPU time (robust to other processes on a shared machine) and
           of wall time, and the QAct/ReLU ratios. `--device cuda` runs the models on the GPU and
           times wall clock between torch.cuda.synchronize() calls (the "cpu" figures are then the
           host thread's time, not the GPU's). `--official PATH` adds the official code's
           ResNet18 (a checkout of adityac20/quantile_activation, imported from PATH, not copied).
           `--kernels torch,native` times the QAct network once per kernel in the same alternation:
           "qact" is the default path (plain torch ops), "qact-native" the opt-in compiled kernels
           (QACT_KERNEL=native, docs/qact-layer.md). `--allocator tuned` (the default) applies the
           glibc settings the `qact` command applies at start, to every model alike.
memory     peak resident memory of one train step / eval forward above the memory before it, each
           in a fresh subprocess (Linux: VmHWM reset through clear_refs).
shortcuts  the layer's approximations against the exact grounded CDF of every value of a channel
           (float64, sort based): max and mean |error| over all values for context_size in
           256..4096 and all (default table_size), and for table_size 128..1024 (every value as
           context), on 64-channel activations of 65,536 values per channel (ResNet18 layer-1
           size at batch 64) drawn from five distributions; and the time to build the tables.
training   a small QAct CNN on scikit-learn digits (upsampled to 16x16) for a few epochs with each
           context_size: test accuracy (mean over seeds) and time, so the default is chosen on what
           it changes in a real fit.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from qact_cli.models import build_model
from qact_cli.nn.qact import (DEFAULT_CONTEXT_SIZE, DEFAULT_TABLE_SIZE, QAct, grounded_table, sample_context,
                              set_context)
from qact_cli.nn.qact import native
from qact_cli.nn.qact.reference import exact_cdf
from qact_cli.startup import tune_allocator

CONTEXT_SIZES = (256, 512, 1024, 2048, 4096, None)
_KERNEL_ROWS = {"torch": "qact", "native": "qact-native"}  # QAct kernel -> row name
_ROW_KERNEL = {row: kernel for kernel, row in _KERNEL_ROWS.items()}
TABLE_SIZES = (128, 256, 512, 1024)


# ------------------------------------------------------------------------------------------ speed
def _official_resnet18(path: str) -> nn.Module:
    sys.path.insert(0, str(Path(path).resolve()))
    from src.models.resnet import ResNet18 as OfficialResNet18  # noqa: PLC0415 (the user's checkout)

    return OfficialResNet18(activation_type="quant", num_classes=10)


def _models(official: str | None, qact_kwargs: dict, device: torch.device,
            kernels: tuple[str, ...] = ("torch",)) -> dict[str, nn.Module]:
    """ReLU, then one QAct ResNet18 per QAct kernel (the same weights): "qact" runs the default torch
    kernels, "qact-native" the opt-in native ones (QACT_KERNEL=native)."""
    torch.manual_seed(0)
    out = {"relu": build_model("resnet18", act="relu", num_classes=10)}
    for kernel in kernels:
        torch.manual_seed(0)
        out[_KERNEL_ROWS[kernel]] = build_model("resnet18", act="qact", num_classes=10, qact_kwargs=qact_kwargs or None)
    if official:
        torch.manual_seed(0)
        out["official"] = _official_resnet18(official)
    return {k: m.to(device) for k, m in out.items()}


def _train_step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> None:
    opt.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    opt.step()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device: torch.device) -> tuple[float, float]:
    _sync(device)  # GPU kernels are asynchronous: time from an idle device to an idle device
    w0, c0 = time.perf_counter(), time.thread_time()
    fn()
    _sync(device)
    return time.thread_time() - c0, time.perf_counter() - w0


def bench_speed(repeats: int, official: str | None, qact_kwargs: dict, phases=("train", "eval"),
                device: torch.device = torch.device("cpu"), kernels: tuple[str, ...] = ("torch",)) -> dict:
    models = _models(official, qact_kwargs, device, kernels)
    g = torch.Generator().manual_seed(0)
    x_train, y_train = torch.randn(64, 3, 32, 32, generator=g), torch.randint(0, 10, (64,), generator=g)
    x_eval = torch.randn(256, 3, 32, 32, generator=g)
    x_train, y_train, x_eval = x_train.to(device), y_train.to(device), x_eval.to(device)
    opts = {k: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9) for k, m in models.items()}
    res: dict = {}
    for phase in phases:
        times = {k: {"cpu": [], "wall": []} for k in models}
        for k, m in models.items():  # warm-up (tables, allocator, mkldnn primitives, the native build)
            native.set_kernel(_ROW_KERNEL.get(k, "torch"))
            m.train(phase == "train")
            with torch.set_grad_enabled(phase == "train"):
                _train_step(m, opts[k], x_train, y_train) if phase == "train" else m(x_eval)
            _sync(device)
        for _ in range(repeats):
            for k, m in models.items():  # alternated, so that load changes hit every model alike
                native.set_kernel(_ROW_KERNEL.get(k, "torch"))
                m.train(phase == "train")
                if phase == "train":
                    cpu, wall = _timed(lambda: _train_step(m, opts[k], x_train, y_train), device)
                else:
                    with torch.no_grad():
                        cpu, wall = _timed(lambda: m(x_eval), device)
                times[k]["cpu"].append(cpu)
                times[k]["wall"].append(wall)
        summary = {}
        for k, t in times.items():
            summary[k] = {f"{kind}_{stat}_s": round(f(v), 4) for kind, v in t.items()
                          for stat, f in (("best", min), ("median", statistics.median))}
            summary[k]["cpu_all_s"] = [round(v, 4) for v in t["cpu"]]
            summary[k]["wall_all_s"] = [round(v, 4) for v in t["wall"]]
        for k in models:
            if k == "relu":
                continue
            summary[k]["ratio_cpu_best"] = round(summary[k]["cpu_best_s"] / summary["relu"]["cpu_best_s"], 3)
            summary[k]["ratio_cpu_median"] = round(summary[k]["cpu_median_s"] / summary["relu"]["cpu_median_s"], 3)
            summary[k]["ratio_wall_best"] = round(summary[k]["wall_best_s"] / summary["relu"]["wall_best_s"], 3)
            pair = [q / r for q, r in zip(times[k]["cpu"], times["relu"]["cpu"])]
            summary[k]["ratio_cpu_pairwise_median"] = round(statistics.median(pair), 3)
            pair_wall = [q / r for q, r in zip(times[k]["wall"], times["relu"]["wall"])]
            summary[k]["ratio_wall_pairwise_median"] = round(statistics.median(pair_wall), 3)
        res[phase] = summary
    native.set_kernel(None)
    return res


# ----------------------------------------------------------------------------------------- memory
def _proc_status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _memory_child(act: str, phase: str, qact_kwargs: dict) -> None:
    """Peak resident memory of the first step (optimizer state and saved activations included) above
    the resident memory before it. Linux: the high-water mark VmHWM, reset through
    /proc/self/clear_refs (ru_maxrss would carry the parent's size across fork+exec); elsewhere,
    ru_maxrss. (A second step would reuse the heap the first one left, and show less.)"""
    import resource

    torch.set_num_threads(1)
    torch.manual_seed(0)
    m = build_model("resnet18", act=act, num_classes=10, qact_kwargs=(qact_kwargs or None) if act == "qact" else None)
    opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(64 if phase == "train" else 256, 3, 32, 32), torch.randint(0, 10, (64,))

    def step():
        if phase == "train":
            m.train()
            _train_step(m, opt, x, y)
        else:
            m.eval()
            with torch.no_grad():
                m(x)

    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak to the current size
        before, method = _proc_status_kib("VmRSS"), "VmHWM"
    except OSError:
        before, method = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "ru_maxrss"
    step()
    after = _proc_status_kib("VmHWM") if method == "VmHWM" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"peak_mib": round((after - before) / 1024, 1), "method": method}))


def bench_memory(qact_kwargs: dict) -> dict:
    out: dict = {}
    for phase in ("train", "eval"):
        out[phase] = {}
        for act in ("relu", "qact"):
            cmd = [sys.executable, __file__, "--memory-child", f"{act}:{phase}",
                   "--qact-kwargs", json.dumps(qact_kwargs)]
            line = subprocess.run(cmd, check=True, capture_output=True, text=True, env=os.environ).stdout.strip()
            rec = json.loads(line.splitlines()[-1])
            out[phase][act] = rec["peak_mib"]
            out["method"] = rec["method"]
        out[phase]["ratio"] = round(out[phase]["qact"] / max(out[phase]["relu"], 1e-9), 3)
    return out


# -------------------------------------------------------------------------------------- shortcuts
def _activations(kind: str, c: int, m: int, g: torch.Generator) -> torch.Tensor:
    """(1, C, M) values of one distribution family, standardised per channel (as after a BatchNorm),
    then channel c gets its own scale and shift (a BatchNorm's affine)."""
    shift = torch.linspace(-1.0, 1.0, c)[:, None]
    scale = torch.linspace(0.5, 2.0, c)[:, None]
    z = torch.randn(c, m, generator=g)
    if kind == "skewed":
        z = torch.exp(z) - 1.0
    elif kind == "bimodal":
        z = z * 0.4 + torch.where(torch.rand(c, m, generator=g) < 0.3, -1.5, 1.0)
    elif kind == "heavy":  # Student t, 3 degrees of freedom
        z = z / torch.sqrt(torch.distributions.Chi2(torch.tensor(3.0)).sample((c, m)) / 3.0)
    elif kind == "sparse":  # ReLU-like: a third of the mass exactly at 0, no negatives
        z = torch.where(torch.rand(c, m, generator=g) < 0.33, torch.zeros_like(z), z.abs())
        return (z * scale)[None]
    z = (z - z.mean(1, keepdim=True)) / z.std(1, keepdim=True)
    return (z * scale + shift)[None]


def _layer_output(z: torch.Tensor, context_size: int | None, table_size: int) -> torch.Tensor:
    q = QAct(z.shape[1], wrap_bn=False, context_size=context_size, table_size=table_size)
    with torch.no_grad():
        return q(z)  # train mode: the batch is the context


def bench_shortcuts(seed: int = 0) -> dict:
    kinds = ("gaussian", "skewed", "bimodal", "heavy", "sparse")
    c, m = 64, 65536
    out: dict = {"channels": c, "values_per_channel": m, "context_size": {}, "table_size": {}}
    g = torch.Generator().manual_seed(seed)
    data = {k: _activations(k, c, m, g) for k in kinds}
    exact = {k: np.stack([exact_cdf(v[0, i].double().numpy(), v[0, i].double().numpy()) for i in range(c)])
             for k, v in data.items()}

    def err(k: str, y: torch.Tensor) -> dict:
        e = np.abs(y[0].double().numpy() - exact[k])
        return {"max": float(e.max()), "mean": float(e.mean()), "p99": float(np.quantile(e, 0.99))}

    torch.manual_seed(seed)
    for cs in CONTEXT_SIZES:
        errs = {k: err(k, _layer_output(z, cs, DEFAULT_TABLE_SIZE)) for k, z in data.items()}
        t = _table_time(data["gaussian"], cs)
        out["context_size"][str(cs or "all")] = {"per_distribution": errs, "max": max(e["max"] for e in errs.values()),
                                                 "mean": float(np.mean([e["mean"] for e in errs.values()])),
                                                 "table_build_ms_64ch": t}
    for ts in TABLE_SIZES:
        errs = {k: err(k, _layer_output(z, None, ts)) for k, z in data.items()}
        out["table_size"][str(ts)] = {"per_distribution": errs, "max": max(e["max"] for e in errs.values()),
                                      "mean": float(np.mean([e["mean"] for e in errs.values()]))}
    return out


def _table_time(z: torch.Tensor, context_size: int | None, reps: int = 5) -> float:
    best = float("inf")
    for _ in range(reps):
        t0 = time.thread_time()
        grounded_table(sample_context(z, context_size), DEFAULT_TABLE_SIZE, density=True)
        best = min(best, time.thread_time() - t0)
    return round(best * 1e3, 2)


# --------------------------------------------------------------------------------------- training
class _DigitsCNN(nn.Module):
    def __init__(self, context_size: int | None):
        super().__init__()
        kw = {"context_size": context_size}
        self.body = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), QAct(16, **kw),
            nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(32), QAct(32, **kw),
            nn.Conv2d(32, 64, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(64), QAct(64, **kw),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))

    def forward(self, x):
        return self.body(x)


def _digits() -> tuple[torch.Tensor, ...]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0
    x = F.interpolate(x, size=16, mode="bilinear", align_corners=False)
    x = (x - x.mean()) / x.std()
    y = torch.tensor(d.target)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(42))
    n_test = len(y) // 5
    te, tr = perm[:n_test], perm[n_test:]
    return x[tr], y[tr], x[te], y[te]


def bench_training(seeds: int, epochs: int) -> dict:
    xtr, ytr, xte, yte = _digits()
    out: dict = {"data": "sklearn digits 16x16, 80/20 split (seed 42)", "epochs": epochs, "batch": 64, "seeds": seeds}
    for cs in CONTEXT_SIZES:
        accs, secs, batch_accs = [], [], []
        for seed in range(seeds):
            torch.manual_seed(seed)
            net = _DigitsCNN(cs)
            opt = torch.optim.Adam(net.parameters(), lr=3e-3)
            t0 = time.thread_time()
            for _ in range(epochs):
                net.train()
                perm = torch.randperm(len(ytr))
                for i in range(0, len(ytr), 64):
                    b = perm[i:i + 64]
                    if len(b) < 2:
                        continue
                    opt.zero_grad()
                    F.cross_entropy(net(xtr[b]), ytr[b]).backward()
                    opt.step()
            secs.append(time.thread_time() - t0)
            net.eval()
            with torch.no_grad():  # stored context (what a deployed model would use) and batch context
                set_context(net, "stored")
                accs.append(float((net(xte).argmax(1) == yte).float().mean()))
                set_context(net, "batch")
                pred = torch.cat([net(xte[i:i + 128]).argmax(1) for i in range(0, len(yte), 128)])
                batch_accs.append(float((pred == yte).float().mean()))
        out[str(cs or "all")] = {"test_acc_stored_mean": round(float(np.mean(accs)), 4),
                                 "test_acc_stored_std": round(float(np.std(accs)), 4),
                                 "test_acc_batch128_mean": round(float(np.mean(batch_accs)), 4),
                                 "train_cpu_s_mean": round(float(np.mean(secs)), 2)}
    return out


# ------------------------------------------------------------------------------------------- main
def _cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo, as lscpu shows it), else platform.processor()."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _write_json(path: Path, doc: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as f:
        json.dump(doc, f, indent=1)
    os.replace(f.name, path)


def _print_tables(doc: dict) -> None:
    if "speed" in doc:
        kind = "cpu" if doc["machine"]["device"] == "cpu" else "wall"  # on a GPU the host thread's time says nothing
        print(f"\nspeed (ResNet18 on {doc['machine']['device']}, 1 thread; {'thread CPU' if kind == 'cpu' else 'wall'}"
              " seconds, best / median; ratio vs ReLU)")
        for phase, s in doc["speed"].items():
            for k, v in s.items():
                ratio = "" if k == "relu" else (
                    f"  ratio best {v[f'ratio_{kind}_best']:.3f}"
                    + (f"  median {v['ratio_cpu_median']:.3f}" if kind == "cpu" else "")
                    + f"  pairwise {v[f'ratio_{kind}_pairwise_median']:.3f}"
                    + (f"  wall-best {v['ratio_wall_best']:.3f}" if kind == "cpu" else ""))
                print(f"  {phase:5s} {k:11s} {v[f'{kind}_best_s']:8.3f} / {v[f'{kind}_median_s']:8.3f} s{ratio}")
    if "memory" in doc:
        print("\npeak memory of one step (MiB above the built model)")
        for phase, s in doc["memory"].items():
            if phase == "method":
                continue
            print(f"  {phase:5s} relu {s['relu']:8.1f}  qact {s['qact']:8.1f}  ratio {s['ratio']:.2f}")
    if "shortcuts" in doc:
        print("\nmax |QAct - exact grounded CDF| over 64 ch x 65,536 values, five distributions")
        for cs, v in doc["shortcuts"]["context_size"].items():
            print(f"  context_size {cs:>5s}: max {v['max']:.4f}  mean {v['mean']:.5f}"
                  f"  table build {v['table_build_ms_64ch']} ms")
        for ts, v in doc["shortcuts"]["table_size"].items():
            print(f"  table_size   {ts:>5s} (all values): max {v['max']:.4f}  mean {v['mean']:.5f}")
    if "training" in doc:
        t = doc["training"]
        print(f"\nQAct CNN on digits, {t['epochs']} epochs, {t['seeds']} seeds: "
              "test accuracy (stored / batch-128 context)")
        for cs in CONTEXT_SIZES:
            v = t[str(cs or "all")]
            print(f"  context_size {str(cs or 'all'):>5s}: "
                  f"{v['test_acc_stored_mean']:.4f} ± {v['test_acc_stored_std']:.4f}"
                  f" / {v['test_acc_batch128_mean']:.4f}   train {v['train_cpu_s_mean']} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--only", default="speed,memory,shortcuts,training")
    ap.add_argument("--official", default=None, help="path to a checkout of adityac20/quantile_activation")
    ap.add_argument("--qact-kwargs", default='{}', help='JSON options for every QAct of the ResNet18 (default: the layer defaults, in place)')
    ap.add_argument("--phases", default="train,eval", help="speed: train, eval or both")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--device", default="cpu", help="speed: cpu (default) or cuda / cuda:N (wall-clock ratios "
                    "between torch.cuda.synchronize calls)")
    ap.add_argument("--kernels", default="torch", help="speed: QAct kernels to time, comma-separated: torch (the "
                    "default path), native (the opt-in compiled kernels, QACT_KERNEL=native; CPU only)")
    ap.add_argument("--allocator", choices=("tuned", "default"), default="tuned",
                    help="glibc malloc settings: tuned = what the qact command sets at start (freed memory is "
                         "kept, not page-faulted in again), default = glibc's own")
    ap.add_argument("--json", default="benchmarks/results/bench_qact.json", help="where the rows are written")
    ap.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    qact_kwargs = json.loads(args.qact_kwargs)
    if args.memory_child:
        act, phase = args.memory_child.split(":")
        _memory_child(act, phase, qact_kwargs)
        return
    torch.set_num_threads(1)
    tuned = args.allocator == "tuned" and tune_allocator()
    kernels = tuple(k.strip() for k in args.kernels.split(",") if k.strip())
    if any(k not in _KERNEL_ROWS for k in kernels) or ("native" in kernels and not native.available()):
        sys.exit(f"bench_qact: --kernels {args.kernels}: choose from {', '.join(_KERNEL_ROWS)} (native needs a C compiler)")
    parts = set(args.only.split(","))
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit(f"bench_qact: --device {args.device} asked for, but CUDA is not available here; use --device cpu")
    doc: dict = {"machine": {"platform": platform.platform(), "processor": platform.machine(), "cpus": os.cpu_count(),
                             "cpu_model": _cpu_model(), "torch": torch.__version__, "threads": 1,
                             "device": str(device),
                             "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
                             "allocator": "tuned" if tuned else "default", "qact_kernels": list(kernels)},
                 "qact_defaults": {"context_size": DEFAULT_CONTEXT_SIZE, "table_size": DEFAULT_TABLE_SIZE},
                 "resnet_qact_kwargs": qact_kwargs}
    if "speed" in parts:
        doc["speed"] = bench_speed(args.repeats, args.official, qact_kwargs, tuple(args.phases.split(",")), device,
                                   kernels)
        _write_json(Path(args.json), doc)
    if "memory" in parts:
        doc["memory"] = bench_memory(qact_kwargs)
        _write_json(Path(args.json), doc)
    if "shortcuts" in parts:
        doc["shortcuts"] = bench_shortcuts()
        _write_json(Path(args.json), doc)
    if "training" in parts:
        doc["training"] = bench_training(args.seeds, args.epochs)
        _write_json(Path(args.json), doc)
    _print_tables(doc)
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
