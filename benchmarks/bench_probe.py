"""Wall time of a DINOv2 probe on digits: train (features cold, then from the cache) and eval on
gen:digits with --limit (eval features cold, then from the content-addressed cache).

    PYTHONPATH=. python benchmarks/bench_probe.py [--res 224] [--limit 8] [--corruptions common]
        [--severities 0-5] [--head linear] [--threads 1] [--device cpu]

Uses a random-init ViT-S/14 (`--weights random`: the same cost as the pretrained one) and a fresh
temporary QACT_CACHE. Prints one JSON line per phase. The logistic-regression time on random
features is not representative of pretrained ones (conditioning differs); the feature times are.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="dinov2_vits14")
    ap.add_argument("--res", type=int, default=224)
    ap.add_argument("--head", default="linear")
    ap.add_argument("--limit", type=int, default=8)
    ap.add_argument("--corruptions", default="common")
    ap.add_argument("--severities", default="0-5")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="bench_probe_"))
    os.environ["QACT_CACHE"] = str(tmp / "cache")

    from qact_cli.eval.run import run_eval
    from qact_cli.training import TrainConfig, train

    common = {"arch": args.arch, "res": args.res, "head": args.head, "threads": args.threads, "device": args.device}
    ckpt = tmp / "probe.pt"
    for phase in ("train (features computed)", "train (features cached)"):
        cfg = TrainConfig(dataset="digits", arch=args.arch, out=str(ckpt), head=args.head, weights="random",
                          device=args.device, batch_size=args.batch_size)
        cfg.probe_res = args.res
        t0 = time.perf_counter()
        info = train(cfg)
        print(json.dumps({**common, "phase": phase, "wall_s": round(time.perf_counter() - t0, 2),
                          "feature_s": info["probe"]["feature_seconds"], "n_train": info["split"]["n_train"],
                          "val_acc": round(info["best_val_acc"], 4), "C": info["probe"].get("C")}), flush=True)
    for phase in ("eval (features computed)", "eval (features cached)"):
        t0 = time.perf_counter()
        (res,) = run_eval([str(ckpt)], "gen:digits", corruptions=args.corruptions, severities=args.severities,
                          batch_size=args.batch_size, limit=args.limit, device=args.device)
        n = sum(c["n"] for c in res["cells"])
        print(json.dumps({**common, "phase": phase, "wall_s": round(time.perf_counter() - t0, 2), "cells": len(res["cells"]),
                          "images": n, "limit": args.limit, "mean_corruption_acc": res["summary"]["mean_corruption_acc"]}),
              flush=True)
    size = ckpt.stat().st_size
    print(json.dumps({**common, "phase": "checkpoint", "bytes": size}))


if __name__ == "__main__":
    main()
