"""Time `cell_metrics` on cells of the published sizes (single thread, CPU).

    PYTHONPATH=. python benchmarks/bench_metrics.py

Targets: a CIFAR cell (10,000 x 10) well under 0.1 s; an ImageNet-C cell (50,000 x 1000) a few
seconds, small next to the model's forward pass on 50,000 images.
"""

import time

import torch

from qact_cli.eval.metrics import cell_metrics


def main() -> None:
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    for n, k in [(10_000, 10), (10_000, 100), (10_000, 200), (50_000, 1000)]:
        probs = (torch.randn(n, k, generator=g) * 3).softmax(1)
        labels = torch.randint(0, k, (n,), generator=g)
        cell_metrics(probs[:100], labels[:100])  # warm-up
        t = time.perf_counter()
        m = cell_metrics(probs, labels)
        print(f"N={n:>6} K={k:>5}: {time.perf_counter() - t:7.3f} s  "
              f"(ece {m['ece']:.4f}, ce_marginal_l2 {m['ce_marginal_l2']:.4f})")


if __name__ == "__main__":
    main()
