"""The watershed loss (used with QAct in arXiv 2405.11573; defined in Challa, Danda & Najman, arXiv 2402.08405, eq. 10).

In a batch of embeddings f(x_i) with labels y_i:
  1. a few random seeds per class present keep their labels, which are propagated to every other
     sample by the watershed (the minimum spanning forest rooted at the seeds), giving yhat_i;
  2. S_l = {j : yhat_j = y_j = l} are the correctly propagated samples of class l; for every
     sample i and class l, d_il is the distance to its nearest neighbour in S_l (itself excluded);
  3. loss = -(1/n) sum_i log softmax_l(-d_il / T)[y_i].
Classes absent from the batch (or with an empty S_l) take no part in the softmax; a sample whose
own class has no usable neighbour adds no term. The propagation is not differentiated.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def _seeds(labels: Tensor, num_seeds: int, generator: torch.Generator | None) -> Tensor:
    """Indices of `num_seeds` random samples of every class present (all of a smaller class)."""
    keys = torch.rand(labels.shape[0], generator=generator, device=labels.device)
    order = torch.argsort(keys)
    order = order[torch.argsort(labels[order], stable=True)]  # grouped by class, random within
    counts = torch.bincount(labels)
    starts = counts.cumsum(0) - counts
    rank = torch.arange(labels.shape[0], device=labels.device) - starts[labels[order]]
    return order[rank < num_seeds]


def watershed_propagation(dist: np.ndarray, seeds: np.ndarray, seed_labels: np.ndarray) -> np.ndarray:
    """Labels of all samples by the watershed from `seeds`: Prim's algorithm on the complete graph
    with `dist` as edge weights, grown from all seeds at once (each absorbed sample takes the label
    of the labelled sample it is closest to). Inherently sequential: one step per absorbed sample,
    each O(n) and vectorised, in numpy since the propagation carries no gradient."""
    n = dist.shape[0]
    labels = np.full(n, -1, dtype=np.int64)
    labels[seeds] = seed_labels
    done = np.zeros(n, dtype=bool)
    done[seeds] = True
    sub = dist[:, seeds]
    best = sub.min(1)
    src = seeds[sub.argmin(1)]
    best[done] = np.inf
    for _ in range(n - done.sum()):
        u = int(best.argmin())
        labels[u] = labels[src[u]]
        done[u] = True
        best[u] = np.inf
        closer = (dist[u] < best) & ~done
        best[closer] = dist[u][closer]
        src[closer] = u
    return labels


def _pairwise(features: Tensor) -> Tensor:
    """Euclidean distances, with a floor under the square root so that duplicates have a gradient."""
    sq = (features * features).sum(1)
    d2 = (sq[:, None] + sq[None, :] - 2.0 * features @ features.t()).clamp_min(0.0)
    return torch.sqrt(d2 + 1e-12)


def watershed_loss(features: Tensor, labels: Tensor, num_seeds: int = 1, temperature: float = 1.0,
                   generator: torch.Generator | None = None) -> Tensor:
    """The watershed loss of a batch: `features` (N, D), integer `labels` (N,); a scalar.

    Seeds are drawn from `generator` (the global torch RNG when None), so the loss is reproducible
    under a fixed seed.
    """
    if features.dim() != 2 or labels.shape != features.shape[:1]:
        raise ValueError(f"watershed_loss expects features (N, D) and labels (N,), got {tuple(features.shape)} "
                         f"and {tuple(labels.shape)}")
    n = features.shape[0]
    zero = features.sum() * 0.0
    if n < 2:
        return zero
    labels = labels.long()
    dist = _pairwise(features.float())
    seeds = _seeds(labels, num_seeds, generator)
    yhat = watershed_propagation(dist.detach().cpu().double().numpy(), seeds.cpu().numpy(), labels[seeds].cpu().numpy())
    correct = torch.as_tensor(yhat, device=labels.device) == labels
    # Nearest correctly propagated neighbour of each class: mask the others, min per class column.
    usable = correct[None, :] & ~torch.eye(n, dtype=torch.bool, device=dist.device)
    masked = dist.masked_fill(~usable, float("inf"))
    k = int(labels.max()) + 1
    d = masked.new_full((n, k), float("inf")).scatter_reduce(1, labels[None, :].expand(n, n), masked, "amin",
                                                             include_self=True)
    own = d.gather(1, labels[:, None]).squeeze(1)
    valid = torch.isfinite(own)
    if not bool(valid.any()):
        return zero
    logp = torch.log_softmax(-d[valid] / temperature, dim=1)
    return -logp.gather(1, labels[valid][:, None]).mean()
