"""Accuracy and calibration metrics of one evaluation cell, and their summary (docs/reference.md, "Result JSON").

Every function takes PROBABILITIES `probs` (N, K) (the caller computes `softmax(logits)`; never
logits) and integer `labels` (N,), and computes in float64. Two calibration errors are reported
because "calibration error" is not one number (docs/protocol.md, "Metrics and their estimators"):

- `ece`: Guo et al. 2017, top-label, L1, 15 equal-width bins ((m-1)/15, m/15] -- what
  torchmetrics, `calibration.get_ece` and most robustness papers report;
- `ce_marginal_l2`: Kumar et al. 2019, marginal (per class, averaged), debiased L2, 15 equal-mass
  bins -- `calibration.lower_bound_scaling_ce(probs, labels, p=2, debias=True, num_bins=15,
  binning_scheme=get_equal_bins, mode="marginal")`, the estimator the QAct paper cites.
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping

import numpy as np
import torch

METRIC_NAMES = {
    "ece": "top-label L1, 15 equal-width bins",
    "ce_marginal_l2": "marginal debiased L2, 15 equal-mass bins (Kumar et al. 2019)",
}

# Top-1 error of AlexNet on ImageNet-C, averaged over severities 1..5 (Hendrycks & Dietterich 2019, ImageNet-C; the
# table used by AugMix's `compute_mce`, FAN and easyrobust). Only the 15 benchmark corruptions.
ALEXNET_ERR = {
    "gaussian_noise": 0.886428, "shot_noise": 0.894468, "impulse_noise": 0.922640,
    "defocus_blur": 0.819880, "glass_blur": 0.826268, "motion_blur": 0.785948,
    "zoom_blur": 0.798360, "snow": 0.866816, "frost": 0.826572, "fog": 0.819324,
    "brightness": 0.564592, "contrast": 0.853204, "elastic_transform": 0.646056,
    "pixelate": 0.717840, "jpeg_compression": 0.606500,
}

# A zero probability of the true class costs -log(float32 tiny) ~ 87.3 nats instead of +inf:
# probabilities come from a float32 softmax, which cannot resolve anything smaller anyway.
_NLL_FLOOR = float(torch.finfo(torch.float32).tiny)

# Float64 work is done on blocks of about this many (sample, class) entries, so that an
# ImageNet-C cell (50,000 x 1000) never needs an extra GiB at once.
_CHUNK = 4_000_000


def _check(probs: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Validated (probs, int64 labels). probs keeps its dtype: each metric widens to float64 only
    what it needs (all of it is exact), so an ImageNet-C cell is never copied whole in float64."""
    probs = torch.as_tensor(probs)
    labels = torch.as_tensor(labels)
    if probs.ndim != 2 or labels.ndim != 1 or probs.shape[0] != labels.shape[0]:
        raise ValueError(f"expected probs (N, K) and labels (N,), got {tuple(probs.shape)} and {tuple(labels.shape)}")
    if probs.shape[0] == 0:
        raise ValueError("metrics of an empty cell are undefined (N = 0)")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(f"labels must be integers, got {labels.dtype}")
    labels = labels.long()
    if int(labels.min()) < 0 or int(labels.max()) >= probs.shape[1]:
        raise ValueError(f"labels must lie in [0, {probs.shape[1] - 1}]")
    if not probs.dtype.is_floating_point:
        raise ValueError(f"probs must be floating point probabilities, got {probs.dtype}")
    lo, hi = torch.aminmax(probs)
    if not (lo >= 0 and hi <= 1 + 1e-6):  # also catches NaN
        raise ValueError(f"probs must lie in [0, 1] (got [{lo.item():.4g}, {hi.item():.4g}]); pass softmax(logits), not logits")
    return probs.detach().cpu(), labels.cpu()


def accuracy(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy (ties go to the lowest class index, as argmax does)."""
    probs, labels = _check(probs, labels)
    return (probs.argmax(1) == labels).double().mean().item()


def nll(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean negative log-likelihood -log p_y, with p_y floored at float32's smallest normal."""
    probs, labels = _check(probs, labels)
    p_true = probs.gather(1, labels[:, None]).squeeze(1).to(torch.float64)
    return (-p_true.clamp_min(_NLL_FLOOR).log()).mean().item()


def brier(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """Brier score as Ovadia et al. 2019: sum over classes of (p_k - 1[y=k])^2, mean over samples."""
    probs, labels = _check(probs, labels)
    # sum_k (p_k - 1[y=k])^2 = sum_k p_k^2 - 2 p_y + 1, without an (N, K) one-hot.
    p_true = probs.gather(1, labels[:, None]).squeeze(1).to(torch.float64)
    step = max(1, _CHUNK // probs.shape[1])
    sq = torch.cat([probs[i:i + step].to(torch.float64).square().sum(1) for i in range(0, probs.shape[0], step)])
    return (sq - 2 * p_true + 1).mean().item()


def ece_bin_sums(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> torch.Tensor:
    """Per equal-width bin of the top-label confidence: (count, sum of confidences, number correct),
    a float64 (3, n_bins) tensor. Sums of disjoint batches add up to the sums of their union, so a
    cell can be scored batch by batch; `ece_top_label` and `reliability_bins` read these sums.

    Bin m (0-based) is (m/B, (m+1)/B]: the upper edge belongs to the bin, as in Guo's
    I_m = ((m-1)/M, m/M] and `calibration.get_ece` (searchsorted, side='left', against the
    float64 edges k/B). A confidence of exactly 0 (impossible for a top label) joins the first bin;
    anything a rounding error above 1 joins the last. torchmetrics uses [lo, hi) instead, which
    differs only for confidences lying exactly on an edge.
    """
    probs, labels = _check(probs, labels)
    _check_bins(n_bins)
    conf, pred = probs.max(1)
    conf = conf.to(torch.float64)
    correct = (pred == labels).to(torch.float64)
    edges = torch.arange(1, n_bins + 1, dtype=torch.float64) / n_bins
    bins = torch.bucketize(conf, edges, right=False).clamp_(max=n_bins - 1)
    per_sample = torch.stack([torch.ones_like(conf), conf, correct])
    return torch.zeros(3, n_bins, dtype=torch.float64).index_add_(1, bins, per_sample)


def ece_top_label(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> float:
    """Guo et al. top-label L1 ECE with `n_bins` equal-width bins (see `ece_bin_sums` for the bins).
    ECE = sum_m |B_m|/N * |acc(B_m) - conf(B_m)| = (1/N) sum_m |sum_{i in B_m} (correct_i - conf_i)|.
    """
    return _ece(ece_bin_sums(probs, labels, n_bins))


def _ece(sums: torch.Tensor) -> float:
    count, conf, correct = sums
    return ((correct - conf).abs().sum() / count.sum()).item()


def reliability_bins(sums: torch.Tensor) -> dict:
    """The result JSON's `ece_bins` from `ece_bin_sums`: per bin, in order from the lowest confidence,
    the count, the mean confidence and the accuracy (both null for an empty bin)."""
    count, conf, correct = sums.tolist()
    return {"count": [int(n) for n in count],
            "conf": [c / n if n else None for n, c in zip(count, conf)],
            "acc": [a / n if n else None for n, a in zip(count, correct)]}


def ece_from_bins(bins: Mapping) -> float:
    """The top-label ECE recomputed from `ece_bins`: sum over bins of count/N * |accuracy - confidence|."""
    n = sum(bins["count"])
    return math.fsum(k / n * abs(a - c) for k, c, a in zip(bins["count"], bins["conf"], bins["acc"]) if k)


def pool_bins(many: Iterable[Mapping]) -> dict:
    """Several cells' `ece_bins` as one (e.g. all corruptions of a severity): counts add, confidence and
    accuracy are count-weighted means. The ECE of the pool is that of all their samples scored together."""
    many = list(many)
    if not many:
        raise ValueError("pool_bins needs at least one cell's bins")
    n_bins = len(many[0]["count"])
    count = [sum(b["count"][m] for b in many) for m in range(n_bins)]

    def mean(key: str, m: int):
        return math.fsum(b["count"][m] * b[key][m] for b in many if b["count"][m]) / count[m] if count[m] else None

    return {"count": count, "conf": [mean("conf", m) for m in range(n_bins)],
            "acc": [mean("acc", m) for m in range(n_bins)]}


def _sorted_rows(x: torch.Tensor) -> torch.Tensor:
    # numpy's vectorised sort is several times faster than torch.sort on CPU (where _check puts
    # everything); only the values are needed.
    return torch.from_numpy(np.sort(x.numpy(), axis=1))


def _check_bins(n_bins: int) -> None:
    if int(n_bins) != n_bins or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")


def _marginal_sq_errors(pt: torch.Tensor, true_row: torch.Tensor, n_bins: int) -> torch.Tensor:
    """Debiased squared calibration error of each row of pt (C, N) float64: row c holds one
    class's probabilities over the N samples; `true_row[i]` is the row of sample i's label, or -1
    when its label is not among these C classes.

    Equal-mass bins exactly as `calibration.get_equal_bins` in uncertainty-calibration 0.1.4 (PyPI):
    sort the row and cut it into P = min(B, N) consecutive parts as `np.array_split` does (the
    first N mod P parts hold one value more than the others); put a boundary at the midpoint
    between the last value of one part and the first of the next, and a final boundary at 1.0.
    A value goes to the first bin whose boundary is >= it (searchsorted, side='left'): a value
    equal to a boundary falls in the lower bin, so ties at a cut move into the lower bin. Repeated
    boundaries (which the library removes with a set) only create empty bins here, which
    contribute nothing. A value a rounding error above 1.0 joins the last bin, as the library's
    split does. (Older GitHub revisions cut parts of ceil(N/B) values instead; the released
    package is the reference.)

    Per bin with n_b >= 2 values (bins with fewer contribute 0, as in the library):
        (mean p - mean y)^2 - mean y (1 - mean y) / (n_b - 1)
    weighted by n_b / N and summed: Kumar et al.'s unbiased estimate of the squared error.
    """
    c, n = pt.shape
    parts = min(n_bins, n)
    q, r = divmod(n, parts)
    i = torch.arange(1, parts)
    cuts = i * q + i.clamp(max=r)  # first index of parts 2..P, as np.array_split
    vals = _sorted_rows(pt)
    bounds = torch.cat([(vals[:, cuts - 1] + vals[:, cuts]) / 2, torch.ones(c, 1, dtype=pt.dtype)], 1)
    # Bins are runs of the sorted row: bin j ends after the values <= bounds[j] (the last after all).
    ends = torch.searchsorted(vals, bounds, side="right")
    ends[:, -1] = n
    ends = torch.cat([torch.zeros(c, 1, dtype=ends.dtype), ends], 1)
    count = ends.diff(dim=1).to(pt.dtype)
    csum = torch.cat([torch.zeros(c, 1, dtype=pt.dtype), vals.cumsum(1)], 1)
    sum_p = csum.gather(1, ends).diff(dim=1)
    # Each sample has label 1 in its own class's row only: find the bin of its true-class probability.
    hit = (true_row >= 0).nonzero().squeeze(1)
    rows = true_row[hit]
    p_true = pt[rows, hit]
    j = torch.searchsorted(bounds[rows], p_true[:, None], side="left").squeeze(1).clamp_(max=bounds.shape[1] - 1)
    sum_y = torch.zeros_like(count).index_put_((rows, j), torch.ones_like(p_true), accumulate=True)
    safe = count.clamp_min(1)
    mean_p, mean_y = sum_p / safe, sum_y / safe
    err = (mean_p - mean_y).square() - mean_y * (1 - mean_y) / (count - 1).clamp_min(1)
    err = torch.where(count >= 2, err, torch.zeros_like(err))
    return (count / n * err).sum(1)


def calibration_error_marginal_l2(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> float:
    """Kumar et al. 2019 marginal debiased L2 calibration error, `n_bins` equal-mass bins per class.

    Same estimator as `calibration.lower_bound_scaling_ce(probs, labels, p=2, debias=True,
    num_bins=n_bins, binning_scheme=get_equal_bins, mode='marginal')` (never the library's
    "discrete" switch to `get_binning_ce`). As the library does, each class's debiased squared
    error is clamped at 0 BEFORE averaging over classes (`unbiased_l2_ce` returns
    sqrt(max(sq, 0)) per class, then `mean(ce_k ** 2) ** 0.5`), so the result is
    sqrt(mean_k max(sq_k, 0)). With N < n_bins there are N parts of one value each (as in the
    library), so every bin has fewer than 2 values unless values tie, and the estimate is 0.
    """
    probs, labels = _check(probs, labels)
    _check_bins(n_bins)
    n, k = probs.shape
    step = max(1, _CHUNK // n)
    total = 0.0
    for start in range(0, k, step):
        stop = min(k, start + step)
        # Transpose before widening to float64 (exact): half the bytes to move.
        pt = probs[:, start:stop].T.contiguous().to(torch.float64)
        true_row = torch.where((labels >= start) & (labels < stop), labels - start, -1)
        total += _marginal_sq_errors(pt, true_row, n_bins).clamp_min(0).sum().item()
    return math.sqrt(total / k)


def tempered(probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """softmax(log p / T): the probabilities of the logits divided by T (log p differs from the
    logits by a per-row constant, which the softmax removes), so a model scored once can be scored
    again at its fitted temperature without running it twice (Guo et al. 2017)."""
    log_p = torch.log(probs.double().clamp_min(_NLL_FLOOR))
    return torch.softmax(log_p / float(temperature), dim=1)


def calibrated_metrics(probs: torch.Tensor, labels: torch.Tensor, temperature: float) -> dict:
    """A cell's calibration numbers at temperature T (accuracy is unchanged by T)."""
    p = tempered(probs, temperature)
    return {"temperature": float(temperature), "ece": ece_top_label(p, labels),
            "ce_marginal_l2": calibration_error_marginal_l2(p, labels), "nll": nll(p, labels),
            "brier": brier(p, labels)}


def cell_metrics(probs: torch.Tensor, labels: torch.Tensor, temperature: float | None = None) -> dict:
    """All per-cell numbers of the result JSON: n, acc, ece and its 15 bins (`ece_bins`, see
    `reliability_bins`), ce_marginal_l2, nll, brier, and with a fitted `temperature` the same calibration numbers at it under "calibrated" (beside the raw ones)."""
    probs, labels = _check(probs, labels)
    extra = {} if temperature is None else {"calibrated": calibrated_metrics(probs, labels, temperature)}
    sums = ece_bin_sums(probs, labels)
    return {
        "n": int(probs.shape[0]),
        "acc": accuracy(probs, labels),
        "ece": _ece(sums),
        "ece_bins": reliability_bins(sums),
        "ce_marginal_l2": calibration_error_marginal_l2(probs, labels),
        "nll": nll(probs, labels),
        "brier": brier(probs, labels),
        **extra,
    }


def _mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and population standard deviation (ddof = 0)."""
    mean = math.fsum(values) / len(values)
    return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in values) / len(values))


def mce_imagenet_c(cells: Iterable[Mapping]) -> float | None:
    """ImageNet-C mCE as a fraction: mean over the 15 benchmark corruptions of
    (mean top-1 error over severities 1..5) / AlexNet's (Hendrycks & Dietterich 2019; AugMix's
    `compute_mce` without its factor 100). None unless every one of the 15 has all 5 severities,
    since AlexNet's errors are averages over all five."""
    err: dict[str, dict[int, float]] = {}
    for cell in cells:
        if cell["corruption"] in ALEXNET_ERR and 1 <= int(cell["severity"]) <= 5:
            err.setdefault(cell["corruption"], {})[int(cell["severity"])] = 1.0 - float(cell["acc"])
    if any(len(err.get(c, {})) != 5 for c in ALEXNET_ERR):
        return None
    ces = [math.fsum(err[c].values()) / 5 / ALEXNET_ERR[c] for c in ALEXNET_ERR]
    return math.fsum(ces) / len(ces)


def summarize(cells: Iterable[Mapping], dataset: str | None = None) -> dict:
    """The `summary` of the result JSON (docs/reference.md, "Result JSON") from its `cells`.

    by_severity: for each severity present (as a string key, ascending), the mean and the
    population std over corruptions of acc and ece. mean_corruption_acc: mean acc over all cells
    with severity >= 1 (RobustBench's convention), None when there are none. mce: see
    `mce_imagenet_c`, only for dataset "imagenetc", else None.
    """
    cells = list(cells)
    by_sev: dict[int, list[Mapping]] = {}
    for cell in cells:
        by_sev.setdefault(int(cell["severity"]), []).append(cell)
    by_severity = {}
    for sev in sorted(by_sev):
        acc_mean, acc_std = _mean_std([float(c["acc"]) for c in by_sev[sev]])
        ece_mean, ece_std = _mean_std([float(c["ece"]) for c in by_sev[sev]])
        by_severity[str(sev)] = {"acc_mean": acc_mean, "acc_std": acc_std, "ece_mean": ece_mean, "ece_std": ece_std}
    corrupted = [float(c["acc"]) for c in cells if int(c["severity"]) >= 1]
    return {
        "by_severity": by_severity,
        "mean_corruption_acc": math.fsum(corrupted) / len(corrupted) if corrupted else None,
        "mce": mce_imagenet_c(cells) if dataset == "imagenetc" else None,
    }
