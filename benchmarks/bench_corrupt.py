"""Corruption speed: qact's batched torch engine against imagecorruptions 1.1.2, one thread each.

All 19 corruptions at severity 3 on the same natural images (crops of scikit-image's photographs):
224 px with the imagenet profile and 32 px with the cifar profile (imagecorruptions always uses its
ImageNet constants). Reported per image: qact runs batches (its normal use), imagecorruptions one image
per call (its API). Prints a table and writes benchmarks/results/bench_corrupt.json.

imagecorruptions lives in its own virtual environment (it pulls OpenCV and needs old APIs), by default
/work/venv-bench (`python -m venv /work/venv-bench && /work/venv-bench/bin/pip install imagecorruptions==1.1.2`),
or --ic-python PATH / $QACT_BENCH_IC_PYTHON. This script starts it as a worker and applies three shims there
at run time (nothing in site-packages is edited): numpy 2 removed `np.float_` (fog), scikit-image >= 0.21
dropped `multichannel=` (glass_blur, gaussian_blur), and Python >= 3.12 venvs lack `pkg_resources` (frost).
The two sides are timed alternately, corruption by corruption, in `--rounds` whole passes, each side keeping its
best time per corruption, so a busy machine (or a slow spell of a shared VM) slows both alike. Both run
with the glibc malloc settings the `qact` CLI uses (`--allocator default` for glibc's own on both sides).

    python benchmarks/bench_corrupt.py [--quick] [--rounds 3] [--allocator tuned|default] [--ic-python PATH] [--out ...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

SEVERITY = 3
DEFAULT_IC_PYTHON = os.environ.get("QACT_BENCH_IC_PYTHON", "/work/venv-bench/bin/python")


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


# ------------------------------------------------------------------------------ imagecorruptions worker


def _ic_worker() -> None:
    """Runs inside the imagecorruptions venv: reads JSON requests on stdin, answers timings on stdout."""
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
    import skimage.filters

    cv2.setNumThreads(1)
    import imagecorruptions
    import imagecorruptions.corruptions as icc

    gaussian = skimage.filters.gaussian

    def gaussian_compat(*args, multichannel=None, **kwargs):  # shim 2: multichannel= -> channel_axis=
        if multichannel:
            kwargs["channel_axis"] = -1
        return gaussian(*args, **kwargs)

    icc.gaussian = gaussian_compat
    print(json.dumps({"ready": True, "version": getattr(imagecorruptions, "__version__", "1.1.2"),
                      "numpy": np.__version__, "opencv": cv2.__version__, "skimage": skimage.__version__}), flush=True)
    cache: dict[str, np.ndarray] = {}
    for line in sys.stdin:
        req = json.loads(line)
        images = cache.setdefault(req["images"], np.load(req["images"]))
        best = None
        for _ in range(req["reps"]):
            t0 = time.process_time()
            for i, img in enumerate(images):
                np.random.seed(i)
                imagecorruptions.corrupt(img, corruption_name=req["name"], severity=req["severity"])
            dt = (time.process_time() - t0) / len(images)
            best = dt if best is None else min(best, dt)
        print(json.dumps({"seconds_per_image": best}), flush=True)


# glibc's environment spelling of what qact_cli.startup.tune_allocator() sets with mallopt (as the `qact` CLI does)
TUNED_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(1 << 30)}


class ICWorker:
    def __init__(self, python: str, tuned: bool):
        env = {**os.environ, "PYTHONWARNINGS": "ignore", **(TUNED_MALLOC_ENV if tuned else {})}
        self.proc = subprocess.Popen([python, __file__, "--ic-worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=env)
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the imagecorruptions worker ({python}) did not start")
        self.info = json.loads(line)

    def time(self, images_path: str, name: str, reps: int) -> float:
        self.proc.stdin.write(json.dumps({"images": images_path, "name": name, "severity": SEVERITY, "reps": reps}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"imagecorruptions failed on {name}")
        return json.loads(line)["seconds_per_image"]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


# ------------------------------------------------------------------------------ driver


def time_ours(images, name: str, profile: str, reps: int) -> float:
    from qact_cli.corruptions import corrupt

    corrupt(images[:2], name, SEVERITY, profile=profile)  # warm caches (kernels, tables, frost bank)
    best = None
    for _ in range(reps):
        t0 = time.process_time()
        corrupt(images, name, SEVERITY, profile=profile, seed=0)
        dt = (time.process_time() - t0) / len(images)
        best = dt if best is None else min(best, dt)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ic-python", default=DEFAULT_IC_PYTHON)
    ap.add_argument("--quick", action="store_true", help="fewer images and repetitions (a smoke run)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_corrupt.json"))
    ap.add_argument("--allocator", choices=("tuned", "default"), default="tuned",
                    help="glibc malloc settings for both sides: 'tuned' = what the qact CLI runs with "
                         "(qact_cli.startup.tune_allocator; freed memory kept for reuse), 'default' = glibc's own")
    ap.add_argument("--rounds", type=int, default=3, help="whole passes over the corruptions; each side keeps its best")
    ap.add_argument("--ic-worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.ic_worker:
        _ic_worker()
        return

    import numpy as np
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from qact_cli.corruptions import CORRUPTIONS
    from qact_cli.startup import tune_allocator
    from qact_cli.utils import environment

    torch.set_num_threads(1)
    tuned = args.allocator == "tuned" and tune_allocator()
    settings = [  # size, qact profile, qact batch, imagecorruptions images, reps (qact, ic)
        (224, "imagenet", 8 if args.quick else 32, 2 if args.quick else 4, (1, 1) if args.quick else (2, 1)),
        (32, "cifar", 128 if args.quick else 512, 16 if args.quick else 64, (1, 1) if args.quick else (3, 2)),
    ]
    ic, ic_error = None, None
    try:
        ic = ICWorker(args.ic_python, tuned)
    except (OSError, RuntimeError, ValueError) as e:
        ic_error = f"imagecorruptions not run: {e}"
        print(ic_error, file=sys.stderr)

    load_before = os.getloadavg()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for size, profile, n_ours, n_ic, (reps_ours, reps_ic) in settings:
            ours_imgs = natural_images(size, n_ours)
            ic_path = os.path.join(tmp, f"ic_{size}.npy")
            np.save(ic_path, ours_imgs[:n_ic])
            best = {}  # name -> (qact s, imagecorruptions s): the best of every round for each side
            for r in range(args.rounds):  # whole rounds, so slow spells of a shared machine hit both sides
                for name in CORRUPTIONS:
                    t_ours = time_ours(ours_imgs, name, profile, reps_ours)
                    t_ic = None
                    if ic is not None:
                        try:
                            t_ic = ic.time(ic_path, name, reps_ic)  # best of reps, as for qact
                        except RuntimeError as e:
                            print(f"  {e}", file=sys.stderr)
                    old_ours, old_ic = best.get(name, (None, None))
                    best[name] = (t_ours if old_ours is None else min(old_ours, t_ours),
                                  t_ic if old_ic is None or t_ic is None else min(old_ic, t_ic))
                    print(f"round {r + 1} {size:4d} px {name:18s} qact {t_ours * 1e3:9.3f} ms   imagecorruptions "
                          f"{'-' if t_ic is None else f'{t_ic * 1e3:9.2f} ms'}", file=sys.stderr, flush=True)
            rows = {name: {"qact_ms": t_ours * 1e3, "imagecorruptions_ms": None if t_ic is None else t_ic * 1e3,
                           "speedup": None if t_ic is None else t_ic / t_ours}
                    for name, (t_ours, t_ic) in best.items()}
            both = [r for r in rows.values() if r["imagecorruptions_ms"] is not None]
            total_ours = sum(r["qact_ms"] for r in rows.values())
            total_ic = sum(r["imagecorruptions_ms"] for r in both) if len(both) == len(rows) else None
            results[f"{size}px"] = {"profile": profile, "qact_batch": n_ours, "imagecorruptions_images": n_ic,
                                    "rounds": args.rounds, "corruptions": rows, "total_qact_ms": total_ours,
                                    "total_imagecorruptions_ms": total_ic,
                                    "total_speedup": None if total_ic is None else total_ic / total_ours}
    if ic is not None:
        ic.close()

    doc = {"benchmark": "corruptions, severity 3, one thread, ms per image", "severity": SEVERITY,
           "environment": environment("cpu"), "load_average_before": load_before, "load_average_after": os.getloadavg(),
           "allocator": "tuned (both sides)" if tuned else "glibc default",
           "imagecorruptions": ic.info if ic is not None else ic_error, "results": results}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")

    print(f"{'corruption':18s} | {'qact 224':>9s} | {'IC 224':>9s} | {'x':>6s} | {'qact 32':>8s} | {'IC 32':>8s} | {'x':>6s}")
    print("-" * 84)

    def cell(v, fmt):
        return f"{v:{fmt}}" if v is not None else "-"

    big, small = results["224px"]["corruptions"], results["32px"]["corruptions"]
    for name in CORRUPTIONS:
        b, s = big[name], small[name]
        print(f"{name:18s} | {cell(b['qact_ms'], '9.2f')} | {cell(b['imagecorruptions_ms'], '9.2f')} | "
              f"{cell(b['speedup'], '6.1f')} | {cell(s['qact_ms'], '8.3f')} | {cell(s['imagecorruptions_ms'], '8.2f')} | "
              f"{cell(s['speedup'], '6.1f')}")
    tb, ts = results["224px"], results["32px"]
    print("-" * 84)
    print(f"{'total (ms/image)':18s} | {cell(tb['total_qact_ms'], '9.2f')} | {cell(tb['total_imagecorruptions_ms'], '9.1f')} | "
          f"{cell(tb['total_speedup'], '6.1f')} | {cell(ts['total_qact_ms'], '8.3f')} | "
          f"{cell(ts['total_imagecorruptions_ms'], '8.2f')} | {cell(ts['total_speedup'], '6.1f')}")
    if ic_error:
        print(ic_error)
    print(f"load average before/after: {load_before[0]:.1f} / {os.getloadavg()[0]:.1f} (2 = both cores busy); "
          f"allocator: {doc['allocator']}; JSON: {out}")


if __name__ == "__main__":
    main()
