"""Metrics: hand-computed examples, independent reference implementations, library reference
values, and statistical properties."""

import math

import numpy as np
import pytest
import torch

import qact_cli.eval.metrics as M
from qact_cli.eval.metrics import (
    ALEXNET_ERR, METRIC_NAMES, accuracy, brier, calibration_error_marginal_l2, cell_metrics,
    ece_top_label, nll, summarize,
)

# Four samples, two classes. Top-label confidences 0.9 (right), 0.8 (wrong), 0.7 (right), 0.6 (right).
P4 = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7], [0.6, 0.4]], dtype=torch.float64)
Y4 = torch.tensor([0, 0, 1, 0])


def test_accuracy_nll_brier_by_hand():
    assert accuracy(P4, Y4) == 0.75
    # p_y = 0.9, 0.2, 0.7, 0.6
    assert nll(P4, Y4) == pytest.approx(-(math.log(0.9) + math.log(0.2) + math.log(0.7) + math.log(0.6)) / 4)
    # (0.1^2 + 0.1^2), (0.8^2 + 0.8^2), (0.3^2 + 0.3^2), (0.4^2 + 0.4^2) -> 0.02, 1.28, 0.18, 0.32
    assert brier(P4, Y4) == pytest.approx((0.02 + 1.28 + 0.18 + 0.32) / 4)


def test_nll_floor_and_float32_input():
    p = torch.tensor([[0.5, 0.5, 0.0], [0.25, 0.75, 0.0], [1.0, 0.0, 0.0]], dtype=torch.float32)
    y = torch.tensor([0, 0, 2])
    # ln 2, ln 4, and -ln(float32 tiny) = 126 ln 2 for the impossible label
    assert nll(p, y) == pytest.approx((math.log(2) + math.log(4) + 126 * math.log(2)) / 3, rel=1e-12)


def test_ece_bin_edges_by_hand():
    # 5 bins (0,.2], (.2,.4], (.4,.6], (.6,.8], (.8,1]: upper edges belong to the bin (Guo).
    # {0.6 right}: |1 - 0.6| * 1/4; {0.7 right, 0.8 wrong}: |0.5 - 0.75| * 2/4; {0.9 right}: 0.1 * 1/4
    assert ece_top_label(P4, Y4, n_bins=5) == pytest.approx(0.1 + 0.125 + 0.025)
    # With [lo, hi) bins 0.6 would join 0.7 and 0.8 would join 0.9, giving 0.35 instead.
    # One bin: |acc - mean conf| = |0.75 - 0.75| = 0
    assert ece_top_label(P4, Y4, n_bins=1) == pytest.approx(0.0, abs=1e-15)
    # 15 bins: every confidence alone in its bin -> mean |correct - conf| = (0.1 + 0.8 + 0.3 + 0.4) / 4
    assert ece_top_label(P4, Y4) == pytest.approx(0.4)


def test_constant_overconfidence_known_values():
    # Every sample says [0.9, 0.1]; 60% are class 0. Top-label: one bin, |0.6 - 0.9| = 0.3.
    n = 1000
    p = torch.tensor([[0.9, 0.1]], dtype=torch.float64).repeat(n, 1)
    y = torch.cat([torch.zeros(600), torch.ones(400)]).long()
    assert ece_top_label(p, y) == pytest.approx(0.3)
    # Marginal: each column is constant, so every cut lands on a tie and all N values fall in the
    # first bin; both classes give (0.3)^2 - 0.6 * 0.4 / (N - 1).
    assert calibration_error_marginal_l2(p, y) == pytest.approx(math.sqrt(0.09 - 0.24 / (n - 1)), rel=1e-12)


def test_marginal_by_hand_with_per_class_clamp():
    # N = 4, K = 3, 2 equal-mass bins of 2 values per class column.
    p = torch.tensor([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.1, 0.1, 0.8]], dtype=torch.float64)
    y = torch.tensor([0, 0, 2, 1])
    # class 0: sorted .1(0) .2(0) | .6(1) .7(1): (.15-0)^2 - 0 and (.65-1)^2 - 0 -> (.0225 + .1225)/2 = .0725
    # class 1: sorted .1(1) .2(0) | .3(0) .5(0): (.15-.5)^2 - .25/1 = -.1275 and .4^2 = .16 -> .01625
    # class 2: sorted .1(0) .1(0) | .3(1) .8(0): .1^2 = .01 and (.55-.5)^2 - .25 = -.2475 -> -.11875 -> clamped to 0
    expected = math.sqrt((0.0725 + 0.01625 + 0.0) / 3)
    assert calibration_error_marginal_l2(p, y, n_bins=2) == pytest.approx(expected, rel=1e-12)
    # Clamping after averaging would give sqrt(max(-0.03/3, 0)) = 0 instead.


def _sq(values, labels01, n_bins):
    pt = torch.tensor([values], dtype=torch.float64)
    true_row = torch.tensor([0 if v else -1 for v in labels01])
    return M._marginal_sq_errors(pt, true_row, n_bins).item()


def test_marginal_equal_mass_split_and_ties_by_hand():
    # N = 7, 3 bins: np.array_split gives parts of 3, 2, 2 (not ceil(7/3) = 3, 3, 1); boundaries
    # .35, .55, 1. Bins {.1,.2,.3 | y 0}: .2^2 = .04; {.4,.5 | y 1}: .55^2 = .3025; {.6,.7 | y 1}: .35^2 = .1225
    v = [0.4, 0.1, 0.7, 0.3, 0.5, 0.2, 0.6]
    y = [1, 0, 1, 0, 1, 0, 1]
    assert _sq(v, y, 3) == pytest.approx((3 * 0.04 + 2 * 0.3025 + 2 * 0.1225) / 7, rel=1e-12)
    # Tie at a cut: [.2 .5 | .5 .9] gives boundary .5 and both .5s go to the lower bin:
    # {.2(0) .5(1) .5(0)}: (.4 - 1/3)^2 - (1/3)(2/3)/2 = -24/225, weight 3/4; {.9} alone counts 0.
    assert _sq([0.2, 0.5, 0.5, 0.9], [0, 1, 0, 1], 2) == pytest.approx(-24 / 225 * 3 / 4, rel=1e-12)


def _guo_ece_numpy(probs, labels, n_bins=15):
    """Straightforward Guo et al. ECE: loop over bins ((m-1)/M, m/M]."""
    conf = probs.max(1)
    correct = (probs.argmax(1) == labels).astype(float)
    total = 0.0
    for m in range(1, n_bins + 1):
        lo, hi = (m - 1) / n_bins, m / n_bins
        in_bin = (conf > lo) & (conf <= hi)
        if in_bin.any():
            total += in_bin.mean() * abs(correct[in_bin].mean() - conf[in_bin].mean())
    return total


def _kumar_marginal_loop(probs, labels, n_bins=15):
    """Kumar et al. 2019 marginal debiased L2, written from the library's description with loops:
    per class, equal-mass bins from np.array_split of the sorted column, boundaries at midpoints,
    value -> first boundary >= value; per-bin (mean p - mean y)^2 - mean y (1 - mean y)/(n_b - 1)
    for bins of >= 2 values; per-class clamp at 0; sqrt of the class mean."""
    n, k = probs.shape
    per_class = []
    for c in range(k):
        col = probs[:, c]
        yc = (labels == c).astype(float)
        parts = np.array_split(np.sort(col), min(n_bins, n))
        bounds = [(parts[i][-1] + parts[i + 1][0]) / 2 for i in range(len(parts) - 1)] + [1.0]
        bins = {}
        for v, t in zip(col, yc):
            j = next((i for i, b in enumerate(bounds) if v <= b), len(bounds) - 1)
            bins.setdefault(j, []).append((v, t))
        sq = 0.0
        for members in bins.values():
            if len(members) < 2:
                continue
            pv = np.mean([a for a, _ in members])
            tv = np.mean([b for _, b in members])
            sq += len(members) / n * ((pv - tv) ** 2 - tv * (1 - tv) / (len(members) - 1))
        per_class.append(max(sq, 0.0))
    return math.sqrt(np.mean(per_class))


def _reference_case(seed, n, k, scale, round_to=None):
    """Seeded softmax outputs with some signal; `round_to` makes many ties."""
    rng = np.random.RandomState(seed)
    z = rng.randn(n, k) * scale
    y = rng.randint(0, k, n)
    z[np.arange(n), y] += 1.0
    z -= z.max(1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(1, keepdims=True)
    if round_to is not None:
        p = np.round(p, round_to)
        p /= p.sum(1, keepdims=True)
    return p, y


# Computed once with uncertainty-calibration 0.1.4 from PyPI (numpy 2.4) on `_reference_case(*args)`:
#   calibration.lower_bound_scaling_ce(p, y, p=2, debias=True, num_bins=15,
#                                      binning_scheme=calibration.get_equal_bins, mode='marginal')
#   calibration.get_ece(p, y)   (top-label L1, 15 equal-width bins)
# The third case is one the library's get_calibration_error would call "discrete".
LIBRARY_REFERENCE = [
    ((0, 1000, 10, 3.0), 0.17991388141635145, 0.503781221529172),
    ((1, 997, 7, 5.0), 0.26441060061564353, 0.6209552928598527),
    ((2, 300, 5, 2.0, 1), 0.18976605179784653, 0.33858417508417515),
    ((3, 20, 3, 1.0), 0.21013927311276134, 0.3097168597653545),
    ((4, 60, 4, 0.5), 0.19242256868708305, 0.3798359550346669),
]


@pytest.mark.parametrize("args,kumar,guo", LIBRARY_REFERENCE)
def test_against_library_reference_values(args, kumar, guo):
    p, y = _reference_case(*args)
    pt, yt = torch.from_numpy(p), torch.from_numpy(y)
    assert calibration_error_marginal_l2(pt, yt) == pytest.approx(kumar, rel=1e-10, abs=1e-14)
    assert ece_top_label(pt, yt) == pytest.approx(guo, rel=1e-10)


@pytest.mark.parametrize("seed,n,k", [(10, 500, 10), (11, 123, 4), (12, 16, 3), (13, 9, 2), (14, 2000, 5)])
def test_against_loop_implementations(seed, n, k):
    p, y = _reference_case(seed, n, k, scale=2.5, round_to=2 if seed == 14 else None)
    pt, yt = torch.from_numpy(p), torch.from_numpy(y)
    assert ece_top_label(pt, yt) == pytest.approx(_guo_ece_numpy(p, y), rel=1e-10, abs=1e-14)
    assert calibration_error_marginal_l2(pt, yt) == pytest.approx(_kumar_marginal_loop(p, y), rel=1e-10, abs=1e-14)
    for bins in (1, 4, 30):
        assert ece_top_label(pt, yt, n_bins=bins) == pytest.approx(_guo_ece_numpy(p, y, bins), rel=1e-10, abs=1e-14)
        assert calibration_error_marginal_l2(pt, yt, n_bins=bins) == pytest.approx(
            _kumar_marginal_loop(p, y, bins), rel=1e-10, abs=1e-14)


def test_class_chunking_float32_and_permutation_invariance(monkeypatch):
    p, y = _reference_case(5, 400, 12, 2.0)
    pt, yt = torch.from_numpy(p).float(), torch.from_numpy(y)
    whole = calibration_error_marginal_l2(pt, yt)
    # float32 values widen exactly, so the float32 and float64 results agree to rounding
    assert whole == pytest.approx(calibration_error_marginal_l2(pt.double(), yt), rel=1e-12)
    monkeypatch.setattr(M, "_CHUNK", 5 * 400)  # 5 classes per block: blocks of 5, 5, 2
    assert calibration_error_marginal_l2(pt, yt) == pytest.approx(whole, rel=1e-12)
    assert brier(pt, yt) == pytest.approx(((pt.double() - torch.eye(12)[yt].double()) ** 2).sum(1).mean().item())
    perm = torch.randperm(400, generator=torch.Generator().manual_seed(0))
    assert calibration_error_marginal_l2(pt[perm], yt[perm]) == pytest.approx(whole, rel=1e-12)
    assert ece_top_label(pt[perm], yt[perm]) == pytest.approx(ece_top_label(pt, yt), rel=1e-12)


def _calibrated_sample(seed, n, k, temperature=1.0):
    """Labels drawn from the model's own probabilities: perfectly calibrated by construction;
    temperature < 1 then sharpens the reported probabilities (over-confidence)."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, k, generator=g, dtype=torch.float64) * 2
    y = torch.multinomial(logits.softmax(1), 1, generator=g).squeeze(1)
    return (logits / temperature).softmax(1), y


def test_perfectly_calibrated_is_near_zero_and_overconfidence_is_not():
    p, y = _calibrated_sample(0, 20000, 10)
    assert ece_top_label(p, y) < 0.015
    assert calibration_error_marginal_l2(p, y) < 0.005
    sharp, y = _calibrated_sample(0, 20000, 10, temperature=0.4)
    assert ece_top_label(sharp, y) > 0.15
    assert calibration_error_marginal_l2(sharp, y) > 0.05
    # A proper score prefers the calibrated forecast.
    assert nll(p, y) < nll(sharp, y) and brier(p, y) < brier(sharp, y)


def test_cell_metrics_keys_and_names():
    m = cell_metrics(P4.float(), Y4)
    assert set(m) == {"n", "acc", "ece", "ece_bins", "ce_marginal_l2", "nll", "brier"}
    assert m["n"] == 4 and isinstance(m["n"], int)
    assert all(isinstance(m[k], float) for k in m if k not in ("n", "ece_bins"))
    assert m["acc"] == 0.75 and m["ece"] == pytest.approx(0.4)
    assert METRIC_NAMES == {
        "ece": "top-label L1, 15 equal-width bins",
        "ce_marginal_l2": "marginal debiased L2, 15 equal-mass bins (Kumar et al. 2019)",
    }


@pytest.mark.parametrize("probs,labels", [
    (torch.tensor([[2.0, -1.0]]), torch.tensor([0])),          # logits, not probabilities
    (torch.tensor([[0.5, 0.5]]), torch.tensor([2])),           # label out of range
    (torch.tensor([[0.5, 0.5]]), torch.tensor([0.0])),         # float labels
    (torch.zeros(0, 3), torch.zeros(0, dtype=torch.long)),     # empty cell
    (torch.tensor([[float("nan"), 0.5]]), torch.tensor([0])),  # NaN
    (torch.tensor([0.5, 0.5]), torch.tensor([0])),             # not (N, K)
])
def test_bad_inputs_raise(probs, labels):
    with pytest.raises(ValueError):
        cell_metrics(probs, labels)


def _cell(c, s, acc, ece=0.1):
    return {"corruption": c, "severity": s, "n": 10, "acc": acc, "ece": ece}


def test_summarize_by_severity_population_std_and_mean_corruption_acc():
    cells = [_cell("clean", 0, 0.9, 0.05),
             _cell("fog", 1, 0.8, 0.10), _cell("snow", 1, 0.6, 0.20),
             _cell("fog", 2, 0.7, 0.30), _cell("snow", 2, 0.4, 0.50)]
    s = summarize(cells, dataset="cifar10c")
    assert list(s["by_severity"]) == ["0", "1", "2"]
    assert s["by_severity"]["0"] == {"acc_mean": 0.9, "acc_std": 0.0, "ece_mean": 0.05, "ece_std": 0.0}
    sev1 = s["by_severity"]["1"]  # population std of {0.8, 0.6} = 0.1; of {0.1, 0.2} = 0.05
    assert sev1["acc_mean"] == pytest.approx(0.7) and sev1["acc_std"] == pytest.approx(0.1)
    assert sev1["ece_mean"] == pytest.approx(0.15) and sev1["ece_std"] == pytest.approx(0.05)
    assert s["by_severity"]["2"]["acc_std"] == pytest.approx(0.15)
    assert s["mean_corruption_acc"] == pytest.approx((0.8 + 0.6 + 0.7 + 0.4) / 4)
    assert s["mce"] is None  # not imagenetc
    assert summarize([_cell("clean", 0, 0.9)])["mean_corruption_acc"] is None


def test_mce_imagenet_c():
    names = list(ALEXNET_ERR)
    assert len(names) == 15
    # Errors at half of AlexNet's on every corruption and severity -> mCE 0.5; severity spread
    # around the mean does not matter, only the mean error over the 5 severities.
    cells = [_cell("clean", 0, 0.76)]
    for c in names:
        for s in range(1, 6):
            err = ALEXNET_ERR[c] / 2 + (s - 3) * 0.01
            cells.append(_cell(c, s, 1 - err))
    cells.append(_cell("speckle_noise", 3, 0.1))  # extras do not enter mCE
    assert summarize(cells, dataset="imagenetc")["mce"] == pytest.approx(0.5)
    # One corruption's errors doubled -> its CE is 1.0 -> mean (14 * 0.5 + 1.0) / 15
    doubled = [dict(c, acc=1 - 2 * (1 - c["acc"])) if c["corruption"] == "fog" else c for c in cells]
    assert summarize(doubled, dataset="imagenetc")["mce"] == pytest.approx((14 * 0.5 + 1.0) / 15)
    missing = [c for c in cells if not (c["corruption"] == "snow" and c["severity"] == 4)]
    assert summarize(missing, dataset="imagenetc")["mce"] is None
    assert summarize(cells, dataset="cifar10c")["mce"] is None
