"""DINOv2 feature-extraction throughput (images/s) at a given resolution, per thread count.

    PYTHONPATH=. python benchmarks/bench_dinov2.py [--arch dinov2_vits14] [--res 224] [--n 16]
        [--batch-size 8] [--threads 1,2] [--device cpu]

Uses a random-init backbone (same cost as the pretrained one) on 32×32 uint8 inputs (CIFAR-like,
upsampled inside extract_features). Prints one JSON line per thread count.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from qact_cli.models.dinov2 import FeatureSpec, extract_features, load_backbone


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="dinov2_vits14")
    ap.add_argument("--res", type=int, default=224)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    bb = load_backbone(args.arch, weights="random")
    spec = FeatureSpec(res=args.res)
    x = torch.randint(0, 256, (args.n, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        extract_features(bb, x[: args.batch_size], batch_size=args.batch_size, device=args.device, spec=spec)  # warm-up
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        t0, c0 = time.perf_counter(), time.process_time()
        extract_features(bb, x, batch_size=args.batch_size, device=args.device, spec=spec)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        print(json.dumps({
            "arch": args.arch, "res": args.res, "device": args.device, "threads": threads,
            "batch_size": args.batch_size, "n": args.n, "wall_s": round(wall, 3),
            "images_per_s": round(args.n / wall, 2), "cpu_s_per_image": round(cpu / args.n, 4),
        }))  # fmt: skip


if __name__ == "__main__":
    main()
