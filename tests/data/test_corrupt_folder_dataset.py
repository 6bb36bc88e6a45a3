"""`corrupted:DIR`: a folder written by `qact corrupt` evaluated under its own name, by default on the
corruptions and severities it holds, with severity 0 from the input its manifest names."""

import json

import numpy as np
import pytest

from fixtures_corrupted import digits_test, random_checkpoint
from qact_cli.corruptions.writer import write_corrupted
from qact_cli.data import get_dataset
from qact_cli.data.corrupt_folder import _clean_name, held_corruptions
from qact_cli.errors import InputError, UsageError
from qact_cli.eval.run import run_eval

CORR = ["gaussian_noise", "contrast"]


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    w = tmp_path_factory.mktemp("own_c")
    x, y = digits_test(30)
    np.save(w / "i.npy", x)
    np.save(w / "l.npy", y)
    for fmt in ("npy", "png"):
        write_corrupted(x, y, w / fmt, CORR, [2, 4], fmt=fmt, batch_size=16, images_path=w / "i.npy",
                        labels_path=w / "l.npy", class_names=[str(i) for i in range(10)] if fmt == "png" else None)
    random_checkpoint(w / "m.pt", 10, 32)
    return w


def _cells(doc):
    return [(c["corruption"], c["severity"], c["n"], c["acc"], c["nll"]) for c in doc["cells"]]


@pytest.mark.parametrize("fmt", ["npy", "png"])
def test_the_folder_is_scored_under_its_own_name_on_what_it_holds(work, fmt):
    ds = get_dataset(f"corrupted:{work / fmt}")
    assert ds.name == f"corrupted:{work / fmt}" and ds.corruption_names() == CORR and ds.default_severities() == [0, 2, 4]
    doc = run_eval([str(work / "m.pt")], f"corrupted:{work / fmt}", device="cpu")[0]  # eval's defaults
    assert doc["dataset"] == f"corrupted:{work / fmt}"
    assert doc["protocol"]["corruptions"] == CORR and doc["protocol"]["severities"] == [0, 2, 4]
    assert [(c["corruption"], c["severity"], c["n"]) for c in doc["cells"]] == \
        [("clean", 0, 30)] + [(c, s, 30) for c in CORR for s in (2, 4)]
    # the same cells as through the published-set name (npy layout: cifar10c; image layout: imagenetc)
    named = "cifar10c" if fmt == "npy" else "imagenetc"
    same = run_eval([str(work / "m.pt")], named, data_root=str(work / fmt), corruptions=",".join(CORR),
                    severities="0,2,4", device="cpu")[0]
    assert _cells(doc) == _cells(same) and doc["protocol"]["data"] == same["protocol"]["data"]


def test_the_png_folder_holds_the_npy_folders_pixels(work):
    a = run_eval([str(work / "m.pt")], f"corrupted:{work / 'npy'}", device="cpu")[0]
    b = run_eval([str(work / "m.pt")], f"corrupted:{work / 'png'}", device="cpu")[0]
    for ca, cb in zip(_cells(a), _cells(b)):  # the image tree is read class by class: other summation order
        assert ca[:4] == cb[:4] and ca[4] == pytest.approx(cb[4], rel=1e-12)


def test_a_corruption_the_folder_lacks_or_a_folder_without_manifest(work, tmp_path):
    with pytest.raises(UsageError, match=r"unknown corrupted:.* corruption\(s\) fog; available: gaussian_noise, contrast"):
        run_eval([str(work / "m.pt")], f"corrupted:{work / 'npy'}", corruptions="fog", device="cpu")
    with pytest.raises(InputError, match="has no manifest.json, so it was not written by `qact corrupt`"):
        get_dataset(f"corrupted:{tmp_path}")
    with pytest.raises(InputError, match="corrupted folder not found"):
        get_dataset(f"corrupted:{tmp_path / 'nope'}")


def test_an_interrupted_run_holds_only_its_finished_corruptions(work, tmp_path):
    m = json.loads((work / "npy" / "manifest.json").read_text())
    m["_path"] = "manifest.json"
    assert held_corruptions(m, "npy") == CORR
    assert held_corruptions({**m, "complete": False, "completed": ["labels", "contrast"]}, "npy") == ["contrast"]
    tree = {**m, "complete": False, "completed": ["contrast/2", "contrast/4", "gaussian_noise/2"]}
    assert held_corruptions(tree, "png") == ["contrast"]


def test_severity_0_of_a_published_sets_corruption_is_its_test_split():
    assert _clean_name({"source": {"dataset": "cifar10 (test)"}}) == "cifar10"
    assert _clean_name({"source": {"dataset": "cifar10 (train)"}}) is None
    assert _clean_name({"source": {"dataset": "cifar10 (test)", "selection": {"limit": 5, "of": 10000}}}) is None
    assert _clean_name({"source": {"dataset": "digits (test)"}}) is None
