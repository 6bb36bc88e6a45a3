"""The eval protocol on the published layouts: one cell per batch in file order, --limit, metrics by hand."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from fixtures_corrupted import (digits_test, perturb, random_checkpoint, write_cifar_clean, write_folder_c, write_mnist_c,
                                write_npy_c, write_tiny_clean)
from qact_cli.checkpoint import load_model
from qact_cli.data import get_dataset
from qact_cli.data.transforms import to_model_input
from qact_cli.errors import InputError
from qact_cli.eval.metrics import ALEXNET_ERR, cell_metrics
from qact_cli.eval.protocol import Protocol, evaluate, limit_indices
from qact_cli.eval.run import run_eval

N = 24
CORR = ("gaussian_noise", "fog", "contrast")


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("c10c")
    x, y = digits_test(N)
    write_npy_c(root, x, y, corruptions=CORR)
    write_cifar_clean(root, x, y)
    return root


def _cell_images(corruption, severity):
    x, _ = digits_test(N)
    return x if severity == 0 else perturb(x, corruption, severity)


def _probs(model, meta, images):
    with torch.no_grad():
        x = to_model_input(torch.from_numpy(images).permute(0, 3, 1, 2), meta["model"]["mean"], meta["model"]["std"])
        return torch.softmax(model(x), 1)


def _ece(probs, labels, bins=15):
    """Guo et al.'s top-label ECE written out directly: bins ((m-1)/15, m/15]."""
    conf, pred = probs.max(1)
    conf, correct = conf.double().numpy(), (pred == labels).double().numpy()
    b = np.clip(np.ceil(conf * bins) - 1, 0, bins - 1).astype(int)
    return sum(abs(correct[b == m].sum() - conf[b == m].sum()) for m in range(bins)) / len(conf)


class Recorder(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner, self.seen = inner, []

    def forward(self, x):
        self.seen.append(x.clone())
        return self.inner(x)


def test_every_batch_holds_one_cell_in_file_order(cifar_root, digits_ckpt):
    model, meta = load_model(digits_ckpt)
    rec = Recorder(model)
    ds = get_dataset("cifar10c", cifar_root)
    protocol = Protocol("cifar10c", ["fog", "gaussian_noise"], [0, 2, 5], batch_size=10)
    doc = evaluate(rec, meta, ds, protocol, torch.device("cpu"))
    order = [("clean", 0), ("fog", 2), ("fog", 5), ("gaussian_noise", 2), ("gaussian_noise", 5)]
    assert [(c["corruption"], c["severity"]) for c in doc["cells"]] == order
    assert [len(b) for b in rec.seen] == [10, 10, 4] * len(order)  # batches never straddle two cells
    for k, (c, s) in enumerate(order):
        expected = to_model_input(torch.from_numpy(_cell_images(c, s)).permute(0, 3, 1, 2), meta["model"]["mean"],
                                  meta["model"]["std"])
        assert torch.equal(torch.cat(rec.seen[3 * k: 3 * k + 3]), expected)


def test_metrics_and_summaries_match_a_hand_computation(cifar_root, digits_ckpt):
    doc = run_eval([str(digits_ckpt)], "cifar10c", cifar_root, corruptions=",".join(CORR), severities="0-5",
                   batch_size=64, device="cpu")[0]
    model, meta = load_model(digits_ckpt)
    _, y = digits_test(N)
    labels = torch.from_numpy(y)
    assert len(doc["cells"]) == 1 + 3 * 5
    for cell in doc["cells"]:
        probs = _probs(model, meta, _cell_images(cell["corruption"], cell["severity"]))
        assert cell["n"] == N
        assert cell["acc"] == pytest.approx((probs.argmax(1) == labels).double().mean().item(), abs=1e-12)
        assert cell["ece"] == pytest.approx(_ece(probs, labels), abs=1e-6)
        assert cell["nll"] == pytest.approx(-probs[torch.arange(N), labels].double().log().mean().item(), rel=1e-5)
        ref = cell_metrics(probs, labels)
        assert all(cell[k] == pytest.approx(ref[k], abs=1e-6) for k in ("ce_marginal_l2", "brier"))
    summary = doc["summary"]
    for s in range(6):
        rows = [c for c in doc["cells"] if c["severity"] == s]
        acc, ece = np.array([c["acc"] for c in rows]), np.array([c["ece"] for c in rows])
        got = summary["by_severity"][str(s)]
        assert got["acc_mean"] == pytest.approx(acc.mean()) and got["acc_std"] == pytest.approx(acc.std(ddof=0))
        assert got["ece_mean"] == pytest.approx(ece.mean()) and got["ece_std"] == pytest.approx(ece.std(ddof=0))
    accs = [c["acc"] for c in doc["cells"] if c["severity"] >= 1]
    assert summary["mean_corruption_acc"] == pytest.approx(sum(accs) / 15) and summary["mce"] is None
    # the cells differ, so the checks above are not trivially true
    assert len(set(accs)) > 1 and len({c["nll"] for c in doc["cells"]}) == 16
    assert any(summary["by_severity"][str(s)]["acc_std"] > 0 for s in range(1, 6))
    assert doc["protocol"].pop("data")["n_images"] > 0  # the identity of the data scored (--baseline checks it)
    assert doc["protocol"] == {"corruptions": list(CORR), "severities": [0, 1, 2, 3, 4, 5], "batch_size": 64,
                               "context": "batch", "adapt": "none", "limit": None, "seed": 0}


def test_limit_takes_evenly_spaced_images_in_file_order(cifar_root, digits_ckpt):
    idx = limit_indices(N, 7)
    assert list(idx) == [0, 3, 6, 10, 13, 17, 20] and limit_indices(N, N) is None and limit_indices(N, None) is None
    doc = run_eval([str(digits_ckpt)], "cifar10c", cifar_root, corruptions="fog", severities="0,4", limit=7,
                   batch_size=4, device="cpu")[0]
    model, meta = load_model(digits_ckpt)
    _, y = digits_test(N)
    for cell in doc["cells"]:
        probs = _probs(model, meta, _cell_images(cell["corruption"], cell["severity"])[idx])
        assert cell["n"] == 7 and cell["acc"] == pytest.approx((probs.argmax(1).numpy() == y[idx]).mean())
    assert doc["protocol"]["limit"] == 7
    assert run_eval([str(digits_ckpt)], "cifar10c", cifar_root, corruptions="fog", severities="1", limit=500,
                    device="cpu")[0]["cells"][0]["n"] == N


def test_imagenetc_mce_is_alexnet_normalised(tmp_path):
    from qact_cli.corruptions import COMMON

    # the published layout; the images are 40 px instead of 224 to keep the test fast
    write_folder_c(tmp_path, "ImageNet-C", ["n01440764", "n01443537"], 1, 40, COMMON, range(1, 6))
    ckpt = random_checkpoint(tmp_path / "in.pt", 2, 40, widths=(2, 2), hidden=(4, 4))
    doc = run_eval([str(ckpt)], "imagenetc", tmp_path, device="cpu")[0]
    assert doc["protocol"]["severities"] == [1, 2, 3, 4, 5] and len(doc["cells"]) == 75
    err = {c: np.mean([1 - x["acc"] for x in doc["cells"] if x["corruption"] == c]) for c in COMMON}
    assert doc["summary"]["mce"] == pytest.approx(np.mean([err[c] / ALEXNET_ERR[c] for c in COMMON]))
    part = run_eval([str(ckpt)], "imagenetc", tmp_path, corruptions="fog", severities="1-5", device="cpu")[0]
    assert part["summary"]["mce"] is None  # AlexNet's errors average all 15 corruptions


def test_tinyimagenetc_end_to_end_with_clean_val(tmp_path):
    wnids = ["n01443537", "n01629819", "n01641577"]
    write_folder_c(tmp_path, "Tiny-ImageNet-C", wnids, 2, 64, ["fog", "pixelate"], [1, 2, 3, 4, 5])
    write_tiny_clean(tmp_path, wnids)
    ckpt = random_checkpoint(tmp_path / "t.pt", 3, 64)
    doc = run_eval([str(ckpt)], "tinyimagenetc", tmp_path, corruptions="fog,pixelate", batch_size=4, device="cpu")[0]
    assert [(c["corruption"], c["severity"]) for c in doc["cells"]][:3] == [("clean", 0), ("fog", 1), ("fog", 2)]
    assert len(doc["cells"]) == 11 and all(c["n"] == 6 for c in doc["cells"])
    assert set(doc["summary"]["by_severity"]) == {"0", "1", "2", "3", "4", "5"}


def test_an_image_of_another_size_inside_a_cell_is_an_input_error(tmp_path):
    from PIL import Image

    d = write_folder_c(tmp_path, "Tiny-ImageNet-C", ["n01", "n02"], 2, 64, ["fog"], [1])
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(d / "fog" / "1" / "n02" / "val_9.JPEG")
    ckpt = random_checkpoint(tmp_path / "t.pt", 2, 64)
    with pytest.raises(InputError, match="32x32 among the cell's"):
        run_eval([str(ckpt)], "tinyimagenetc", tmp_path, corruptions="fog", severities="1", batch_size=1, device="cpu")


def test_generated_cells_follow_the_same_protocol(digits_ckpt):
    doc = run_eval([str(digits_ckpt)], "gen:digits", corruptions="gaussian_noise,contrast", severities="0,5", limit=30,
                   batch_size=16, device="cpu")[0]
    assert [(c["corruption"], c["severity"], c["n"]) for c in doc["cells"]] == \
        [("clean", 0, 30), ("gaussian_noise", 5, 30), ("contrast", 5, 30)]
    again = run_eval([str(digits_ckpt)], "gen:digits", corruptions="gaussian_noise,contrast", severities="0,5", limit=30,
                     batch_size=16, device="cpu")[0]
    assert again["cells"] == doc["cells"]  # seeded
    assert not math.isclose(doc["cells"][0]["nll"], doc["cells"][1]["nll"])


def test_mnistc_grey_images_end_to_end(tmp_path):
    write_mnist_c(tmp_path)
    ckpt = random_checkpoint(tmp_path / "m.pt", 10, 28)
    doc = run_eval([str(ckpt)], "mnistc", tmp_path / "mnist_c", device="cpu")[0]
    assert doc["protocol"]["severities"] == [0, 1] and doc["protocol"]["corruptions"] == ["fog", "shear"]
    assert [(c["corruption"], c["severity"], c["n"]) for c in doc["cells"]] == [("clean", 0, 12), ("fog", 1, 12), ("shear", 1, 12)]
