"""Corruption speed: qact's batched torch engine against the fastest of three peer packages, one thread each.

All 19 corruptions at severity 3 on the same natural images (crops of scikit-image's photographs): 224 px
with the imagenet profile and 32 px with the cifar profile. qact runs batches of `--batch` images (16 by
default), as `qact corrupt` and the `gen:` datasets feed it; each peer runs one image per call, as its API
works. Per corruption the table gives qact's time, the fastest peer's time (and which peer), and the
speed-up fastest peer / qact; the summary is the geometric mean of the 19 speed-ups (a sum would be
dominated by the slowest corruption, imagecorruptions' pure-Python glass blur).

The peers, each in its own virtual environment under `--peers-root` (default /work/peers), never in
qact's dependencies:

    python3 -m venv /work/peers/imagecorruptions       && /work/peers/imagecorruptions/bin/pip install imagecorruptions==1.1.2
    python3 -m venv /work/peers/imagecorruptions-imaug && /work/peers/imagecorruptions-imaug/bin/pip install imagecorruptions-imaug==1.1.5
    python3 -m venv /work/peers/corrupt-tta            && /work/peers/corrupt-tta/bin/pip install corrupt-tta==0.1.7

(`--peer NAME=PYTHON` points one elsewhere; a missing venv is reported and skipped.) Each peer runs as a
worker process; imagecorruptions 1.1.2 gets three run-time shims (nothing in site-packages is edited):
numpy 2 removed `np.float_` (fog), scikit-image >= 0.21 dropped `multichannel=` (glass_blur, gaussian_blur),
Python >= 3.12 venvs lack `pkg_resources` (frost). corrupt-tta's spatter is another algorithm (not the
reference's liquid layer), so it is not a peer for spatter.

Timing: CPU time (`time.process_time`) on the CPU, wall time between `torch.cuda.synchronize()` calls with
`--device cuda` (the images then live on the GPU as (N, 3, H, W) tensors; the peers stay on the CPU). The
sides are timed alternately, corruption by corruption, in `--rounds` whole passes, each keeping its best
time per corruption, so a slow spell of a shared machine hits all sides alike. Every side is warmed up on
each corruption first (numba compiles imaug's glass blur on its first call). All run with the glibc malloc
settings of the `qact` CLI (`--allocator default` for glibc's own).

`--kernels torch,native` times qact once per kernel set (`QACT_KERNEL`: the default torch path, the opt-in
compiled kernels of qact_cli/native.py), alternating within each round; each gets its own speed-ups and
geometric mean against the same peer times.

    python benchmarks/bench_corrupt.py [--quick] [--rounds 3] [--batch 16] [--sizes 224,32] [--only a,b]
        [--device cpu|cuda] [--json PATH] [--qact-root CHECKOUT] [--allocator tuned|default]
        [--kernels torch,native]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

SEVERITY = 3
PROFILES = {224: "imagenet", 32: "cifar"}
# peer name -> (venv folder under --peers-root, module to import)
PEERS = {
    "imagecorruptions": ("imagecorruptions", "imagecorruptions"),
    "imaug": ("imagecorruptions-imaug", "imagecorruptions"),
    "corrupt-tta": ("corrupt-tta", "corrupt_tta"),
}
NOT_A_PEER = {("corrupt-tta", "spatter")}  # another algorithm than the reference's
PEER_BUDGET_S = 1.0  # a peer's pass over the images stops after this much CPU time (glass blur: ~2 s per image)


def natural_images(size: int, n: int, seed: int = 0):
    """Crops of scikit-image's bundled colour photographs, resized with PIL's BOX filter."""
    import numpy as np
    from PIL import Image
    from skimage import data

    photos = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
    rs = np.random.RandomState(seed)
    out = []
    for i in range(n):
        a = photos[i % len(photos)]
        side = rs.randint(min(a.shape[:2]) // 2, min(a.shape[:2]) + 1)
        y, x = rs.randint(0, a.shape[0] - side + 1), rs.randint(0, a.shape[1] - side + 1)
        out.append(np.asarray(Image.fromarray(a[y:y + side, x:x + side]).resize((size, size), Image.BOX)))
    return np.stack(out)


# ------------------------------------------------------------------------------ peer worker


def _import_peer(module: str):
    """Import a peer package inside its venv, with the run-time shims imagecorruptions 1.1.2 needs."""
    import importlib
    import importlib.resources
    import types

    import numpy as np

    if not hasattr(np, "float_"):  # shim 1: numpy 2 removed the alias (plasma_fractal)
        np.float_ = np.float64
    try:  # shim 3: no pkg_resources (Python >= 3.12 venvs without setuptools)
        import pkg_resources  # noqa: F401
    except ImportError:
        stub = types.ModuleType("pkg_resources")
        stub.resource_filename = lambda pkg, name: str(importlib.resources.files(pkg) / name)
        sys.modules["pkg_resources"] = stub
    import cv2

    cv2.setNumThreads(1)
    pkg = importlib.import_module(module)
    impl = importlib.import_module(module + ".corruptions")
    if getattr(impl, "gaussian", None) is not None and not hasattr(impl, "SK_VERSION"):
        gaussian = impl.gaussian  # shim 2 (imagecorruptions 1.1.2 only): multichannel= -> channel_axis=

        def gaussian_compat(*args, multichannel=None, **kwargs):
            if multichannel:
                kwargs["channel_axis"] = -1
            return gaussian(*args, **kwargs)

        impl.gaussian = gaussian_compat
    return pkg


def _peer_worker(module: str) -> None:
    """Runs inside a peer's venv: reads JSON requests on stdin, answers CPU seconds per image on stdout."""
    from importlib.metadata import PackageNotFoundError, version

    import numpy as np

    pkg = _import_peer(module)
    versions = {}
    for dist in ("imagecorruptions", "imagecorruptions-imaug", "corrupt-tta", "numpy", "opencv-python", "scikit-image"):
        try:
            versions[dist] = version(dist)
        except PackageNotFoundError:
            pass
    print(json.dumps({"ready": True, "versions": versions}), flush=True)
    cache: dict[str, np.ndarray] = {}
    warm: set[tuple[str, str]] = set()
    for line in sys.stdin:
        req = json.loads(line)
        images = cache.setdefault(req["images"], np.load(req["images"]))
        if (req["images"], req["name"]) not in warm:  # numba compiles on the first call; caches fill
            pkg.corrupt(images[0], corruption_name=req["name"], severity=req["severity"])
            warm.add((req["images"], req["name"]))
        best = None
        for _ in range(req["reps"]):
            t0, done = time.process_time(), 0
            for i, img in enumerate(images):
                np.random.seed(i)
                pkg.corrupt(img, corruption_name=req["name"], severity=req["severity"])
                done += 1
                if time.process_time() - t0 > PEER_BUDGET_S:
                    break
            dt = (time.process_time() - t0) / done
            best = dt if best is None else min(best, dt)
            if done < len(images):  # one partial pass is all a slow corruption gets
                break
        print(json.dumps({"seconds_per_image": best}), flush=True)


# glibc's environment spelling of what qact_cli.startup.tune_allocator() sets with mallopt (as the `qact` CLI does)
TUNED_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(1 << 30)}


class PeerWorker:
    def __init__(self, name: str, python: str, tuned: bool):
        self.name = name
        env = {**os.environ, "PYTHONWARNINGS": "ignore", **(TUNED_MALLOC_ENV if tuned else {})}
        env.pop("PYTHONPATH", None)  # the peer's own venv only
        self.proc = subprocess.Popen([python, __file__, "--peer-worker", PEERS[name][1]], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env)
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the {name} worker ({python}) did not start")
        self.info = json.loads(line)["versions"]

    def time(self, images_path: str, name: str, reps: int) -> float:
        req = {"images": images_path, "name": name, "severity": SEVERITY, "reps": reps}
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.name} failed on {name}")
        return json.loads(line)["seconds_per_image"]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def start_peers(args, tuned: bool) -> tuple[dict, dict]:
    """The peer workers that start, and a reason for each that does not."""
    paths = {name: str(Path(args.peers_root) / folder / "bin" / "python") for name, (folder, _) in PEERS.items()}
    for spec in args.peer:
        name, _, python = spec.partition("=")
        if name not in PEERS or not python:
            raise SystemExit(f"--peer wants NAME=PYTHON with NAME one of {', '.join(PEERS)}, got {spec!r}")
        paths[name] = python
    workers, missing = {}, {}
    for name, python in paths.items():
        try:
            workers[name] = PeerWorker(name, python, tuned)
        except (OSError, RuntimeError, ValueError) as e:
            missing[name] = str(e)
            print(f"{name} not run: {e}", file=sys.stderr)
    return workers, missing


# ------------------------------------------------------------------------------ qact side


class QactTimer:
    """Times `corrupt` on one batch, on the CPU (numpy (N, H, W, 3) in, as the writer feeds it) or on CUDA."""

    def __init__(self, device: str):
        import torch

        from qact_cli import native
        from qact_cli.corruptions import corrupt

        self.corrupt, self.torch, self.cuda, self.native = corrupt, torch, device.startswith("cuda"), native
        self.device = device

    def inputs(self, images):
        if not self.cuda:
            return images
        return self.torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().to(self.device)

    def clock(self) -> float:
        if self.cuda:
            self.torch.cuda.synchronize()
            return time.perf_counter()
        return time.process_time()

    def time(self, images, name: str, profile: str, reps: int, kernel: str = "torch") -> float:
        self.native.set_kernel(kernel)
        self.corrupt(images, name, SEVERITY, profile=profile)  # warm caches (kernels, tables, frost bank)
        best = None
        for _ in range(reps):
            t0 = self.clock()
            self.corrupt(images, name, SEVERITY, profile=profile, seed=0)
            dt = (self.clock() - t0) / len(images)
            best = dt if best is None else min(best, dt)
        return best


# ------------------------------------------------------------------------------ driver


def geomean(values) -> float | None:
    values = [v for v in values if v is not None]
    return math.exp(sum(math.log(v) for v in values) / len(values)) if values else None


def _side(kernel: str) -> str:
    return "qact" if kernel == "torch" else f"qact[{kernel}]"


def summarise(best: dict, size: int, batch: int, rounds: int, kernels) -> dict:
    """best: corruption -> {side: seconds per image} -> the JSON rows of one size. The default path's figures
    keep the plain keys (qact_ms, speedup, geomean_speedup, slowest); another kernel set's go under "kernels"."""
    ours = {_side(k) for k in kernels}
    rows = {}
    for name, times in best.items():
        peers = {p: t for p, t in times.items() if p not in ours and t is not None and (p, name) not in NOT_A_PEER}
        fastest = min(peers, key=peers.get) if peers else None
        by_kernel = {k: {"qact_ms": times[_side(k)] * 1e3,
                         "speedup": peers[fastest] / times[_side(k)] if fastest else None} for k in kernels}
        rows[name] = {**by_kernel[kernels[0]],
                      "peers_ms": {p: None if t is None else t * 1e3 for p, t in times.items() if p not in ours},
                      "fastest_peer": fastest, "fastest_peer_ms": peers[fastest] * 1e3 if fastest else None}
        if len(kernels) > 1:
            rows[name]["kernels"] = by_kernel

    def summary(k):
        speedups = {n: r.get("kernels", {k: r})[k]["speedup"] for n, r in rows.items()}
        known = [n for n, v in speedups.items() if v is not None]
        return {"geomean_speedup": geomean(speedups.values()),
                "slowest": min(known, key=speedups.get, default=None)}
    out = {"size": size, "profile": PROFILES[size], "qact_batch": batch, "rounds": rounds, "corruptions": rows,
           **summary(kernels[0])}
    if len(kernels) > 1:
        out["kernels"] = {k: summary(k) for k in kernels}
    return out


def run_size(size: int, names, qact: QactTimer, workers: dict, args, tmp: str) -> dict:
    import numpy as np

    images = natural_images(size, args.batch)
    ours = qact.inputs(images)
    path = os.path.join(tmp, f"peer_{size}.npy")
    np.save(path, images)
    reps_ours, reps_peer = (1, 1) if args.quick else (3, 2)
    best: dict[str, dict[str, float | None]] = {}
    for r in range(args.rounds):  # whole rounds, so slow spells of a shared machine hit every side
        for name in names:
            # the kernel sets alternate their order round by round, so neither always runs on a warmer cache
            order = args.kernels if r % 2 == 0 else args.kernels[::-1]
            times = {_side(k): qact.time(ours, name, PROFILES[size], reps_ours, k) for k in order}
            for peer, worker in workers.items():
                try:
                    times[peer] = worker.time(path, name, reps_peer)
                except RuntimeError as e:
                    print(f"  {e}", file=sys.stderr)
                    times[peer] = None
            old = best.setdefault(name, {})
            for side, t in times.items():
                old[side] = t if old.get(side) is None else (old[side] if t is None else min(old[side], t))
            cells = "  ".join(f"{p} {'-' if t is None else f'{t * 1e3:.3f}'}" for p, t in times.items())
            print(f"round {r + 1} {size:4d} px {name:18s} ms/image: {cells}", file=sys.stderr, flush=True)
    return summarise(best, size, args.batch, args.rounds, args.kernels)


def print_table(results: dict, names, kernels) -> None:
    sizes = list(results)

    def pick(r, k):
        return r.get("kernels", {k: r})[k]
    ours = [(s, k) for s in sizes for k in kernels]
    head = " | ".join(f"{'qact ' + s + ('' if k == 'torch' else ' ' + k):>17s} | {'x':>6s}" for s, k in ours)
    peers = " | ".join(f"{'fastest peer ' + s:>26s}" for s in sizes)
    print(f"{'corruption':18s} | {peers} | {head}")
    print("-" * (21 + 29 * len(sizes) + 27 * len(ours)))
    for name in names:
        rs = {s: results[s]["corruptions"][name] for s in sizes}
        peer = " | ".join("-".rjust(26) if rs[s]["fastest_peer"] is None else
                          f"{rs[s]['fastest_peer_ms']:.3f} {rs[s]['fastest_peer']}".rjust(26) for s in sizes)
        cells = []
        for s, k in ours:
            r = pick(rs[s], k)
            x = "-" if r["speedup"] is None else f"{r['speedup']:.2f}"
            cells.append(f"{r['qact_ms']:17.3f} | {x:>6s}")
        print(f"{name:18s} | {peer} | {' | '.join(cells)}")
    print("-" * (21 + 29 * len(sizes) + 27 * len(ours)))
    gm = " | ".join(f"{'':17s} | {pick(results[s], k)['geomean_speedup'] or float('nan'):6.2f}" for s, k in ours)
    print(f"{'geometric mean':18s} | {' | '.join(' ' * 26 for _ in sizes)} | {gm}")
    for s, k in ours:
        slow = pick(results[s], k)["slowest"]
        if slow is not None:
            print(f"{s} {k}: lowest speed-up {pick(results[s]['corruptions'][slow], k)['speedup']:.2f}x ({slow})")


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--peers-root", default=os.environ.get("QACT_BENCH_PEERS", "/work/peers"))
    ap.add_argument("--peer", action="append", default=[], metavar="NAME=PYTHON", help="a peer's Python elsewhere")
    ap.add_argument("--no-peers", action="store_true", help="time qact only (e.g. on a GPU machine without the venvs)")
    ap.add_argument("--device", default="cpu", help="qact's device: cpu (default) or cuda[:N]")
    ap.add_argument("--batch", type=int, default=16, help="images per qact call, and images each peer corrupts")
    ap.add_argument("--sizes", default="224,32", help="comma list of 224 and/or 32")
    ap.add_argument("--only", default="", help="comma list of corruptions (default: all 19)")
    ap.add_argument("--quick", action="store_true", help="one repetition per call (a smoke run)")
    ap.add_argument("--rounds", type=int, default=3, help="whole passes over the corruptions; each side keeps its best")
    ap.add_argument("--json", default=str(Path(__file__).parent / "results" / "bench_corrupt.json"), metavar="PATH")
    ap.add_argument("--qact-root", default=str(Path(__file__).resolve().parents[1]),
                    help="the qact checkout to time (e.g. an older commit's worktree, for a before/after)")
    ap.add_argument("--allocator", choices=("tuned", "default"), default="tuned",
                    help="glibc malloc settings for every side: 'tuned' = what the qact CLI runs with "
                         "(qact_cli.startup.tune_allocator; freed memory kept for reuse), 'default' = glibc's own")
    ap.add_argument("--kernels", default="torch", type=lambda v: [k for k in v.split(",") if k],
                    help="comma list of qact kernel sets to time: torch (the default path), native (QACT_KERNEL=native)")
    ap.add_argument("--peer-worker", help=argparse.SUPPRESS)
    return ap.parse_args()


def main() -> None:
    args = parse_args()
    if args.peer_worker:
        _peer_worker(args.peer_worker)
        return
    sys.path.insert(0, str(Path(args.qact_root).resolve()))
    import torch

    from qact_cli.corruptions import CORRUPTIONS
    from qact_cli.startup import tune_allocator
    from qact_cli.utils import environment

    torch.set_num_threads(1)
    tuned = args.allocator == "tuned" and tune_allocator()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    if any(s not in PROFILES for s in sizes):
        raise SystemExit(f"--sizes takes {', '.join(map(str, PROFILES))}, got {args.sizes!r}")
    names = [n for n in args.only.split(",") if n] or list(CORRUPTIONS)
    unknown = [n for n in names if n not in CORRUPTIONS]
    if unknown:
        raise SystemExit(f"unknown corruption(s): {', '.join(unknown)}")
    if not args.kernels or any(k not in ("torch", "native") for k in args.kernels):
        raise SystemExit(f"--kernels takes torch and/or native, got {','.join(args.kernels)!r}")
    qact = QactTimer(args.device)
    workers, missing = ({}, {"all": "--no-peers"}) if args.no_peers else start_peers(args, tuned)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        results = {f"{s}px": run_size(s, names, qact, workers, args, tmp) for s in sizes}
    for w in workers.values():
        w.close()
    doc = {"benchmark": "corruptions, severity 3, one thread, ms per image", "severity": SEVERITY,
           "command": " ".join(sys.argv), "qact_root": str(Path(args.qact_root).resolve()),
           "environment": environment(args.device), "load_average_before": load_before,
           "load_average_after": os.getloadavg(), "allocator": "tuned (every side)" if tuned else "glibc default",
           "peers": {name: w.info for name, w in workers.items()}, "peers_not_run": missing, "qact_kernels": args.kernels,
           "results": results}
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print_table(results, names, args.kernels)
    print(f"load average before/after: {load_before[0]:.1f} / {os.getloadavg()[0]:.1f}; allocator: {doc['allocator']}; "
          f"device: {args.device}; JSON: {out}")


if __name__ == "__main__":
    main()
