"""CI gates of `qact eval`: --baseline/--tolerance (exit 1 on regression, 3 on another protocol), --fail-under."""

import copy
import json

import pytest

from fixtures_corrupted import digits_test, write_cifar_clean, write_npy_c
from qact_cli.errors import InputError, UsageError
from qact_cli.eval.gates import check_gates, protocol_differences, regressions

N = 16


@pytest.fixture(scope="module")
def setup(tmp_path_factory, digits_ckpt):
    """A dataset, and the baseline result of the digits model on it."""
    from qact_cli.eval.run import run_eval

    root = tmp_path_factory.mktemp("gates")
    x, y = digits_test(N)
    write_npy_c(root, x, y, corruptions=("fog", "snow"))
    write_cifar_clean(root, x, y)
    doc = run_eval([str(digits_ckpt)], "cifar10c", root, corruptions="fog,snow", severities="0-5", batch_size=8,
                   device="cpu")[0]
    (root / "base.json").write_text(json.dumps(doc))
    return root, doc


def _args(root, ckpt, *extra):
    return ("eval", ckpt, "--dataset", "cifar10c", "--data-root", root, "--corruptions", "fog,snow", "--batch-size", "8",
            "--device", "cpu", *extra)


def _shift(b, severity: int, key: str, delta: float = 0.0, to: float | None = None):
    """Move every cell of `severity` (and so the summary, recomputed) by `delta`, or set it `to` a value: the
    baseline file stays consistent, as a result file must be."""
    from qact_cli.eval.metrics import summarize

    for c in b["cells"]:
        if c["severity"] == severity:
            c[key] = to if to is not None else c[key] + delta
    b["summary"] = summarize(b["cells"], dataset=b["dataset"])


def _baseline(tmp_path, doc, change):
    b = copy.deepcopy(doc)
    change(b)
    path = tmp_path / "baseline.json"
    path.write_text(json.dumps(b))
    return path


def test_same_model_passes_its_own_baseline(cli, setup, digits_ckpt):
    root, _ = setup
    code, _, err = cli(*_args(root, digits_ckpt, "--baseline", root / "base.json", "--tolerance", "0"))
    assert code == 0, err


def test_accuracy_drop_beyond_tolerance_is_exit_1_and_lists_the_rows(cli, setup, digits_ckpt, tmp_path):
    root, doc = setup

    def better(b):
        _shift(b, 2, "acc", 0.05)
        _shift(b, 4, "acc", 0.2)

    base = _baseline(tmp_path, doc, better)
    code, out, err = cli(*_args(root, digits_ckpt, "--baseline", base, "--tolerance", "0.03", "--json", tmp_path / "r.json"))
    assert code == 1, err
    assert "severity 2: accuracy" in err and "severity 4: accuracy" in err and "severity 3" not in err
    assert (tmp_path / "r.json").is_file() and "mean corruption acc" in out  # outputs are written before the exit
    code, _, err = cli(*_args(root, digits_ckpt, "--baseline", base, "--tolerance", "0.3"))
    assert code == 0, err


def test_ece_rise_beyond_tolerance_is_exit_1(cli, setup, digits_ckpt, tmp_path):
    root, doc = setup

    def calibrated(b):
        _shift(b, 0, "ece", to=0.0)

    code, _, err = cli(*_args(root, digits_ckpt, "--baseline", _baseline(tmp_path, doc, calibrated)))
    assert code == 1 and "severity 0: ECE" in err


def test_another_protocol_is_exit_3_before_evaluating(cli, setup, digits_ckpt, tmp_path):
    root, doc = setup
    base = _baseline(tmp_path, doc, lambda b: b["protocol"].update(batch_size=256, limit=100))
    code, _, err = cli(*_args(root, digits_ckpt, "--baseline", base, "--json", tmp_path / "r.json"))
    assert code == 3 and "another protocol" in err and "batch_size 8 vs 256" in err and "limit None vs 100" in err
    assert not (tmp_path / "r.json").exists()  # failed fast, before any image was read
    code, _, err = cli(*_args(root, digits_ckpt, "--baseline", root / "base.json", "--severities", "1-5"))
    assert code == 3 and "severities" in err
    (tmp_path / "bad.json").write_text("{not json")
    code, _, err = cli(*_args(root, digits_ckpt, "--baseline", tmp_path / "bad.json"))
    assert code == 3 and "bad.json" in err and "Traceback" not in err


def test_fail_under(cli, setup, digits_ckpt):
    root, doc = setup
    mca = doc["summary"]["mean_corruption_acc"]
    code, _, err = cli(*_args(root, digits_ckpt, "--fail-under", f"{mca + 0.01:.4f}"))
    assert code == 1 and "mean corruption accuracy" in err
    assert cli(*_args(root, digits_ckpt, "--fail-under", f"{mca - 0.01:.4f}"))[0] == 0
    assert cli(*_args(root, digits_ckpt, "--fail-under", "70"))[0] == 2  # a percentage, not a fraction
    assert cli(*_args(root, digits_ckpt, "--tolerance", "-0.1", "--baseline", root / "base.json"))[0] == 2


# --- the functions, on hand-made results ------------------------------------------------------------

def _result(dataset="cifar10c", acc=(0.9, 0.8), ece=(0.05, 0.1), **protocol):
    p = {"corruptions": ["fog"], "severities": [0, 1], "batch_size": 256, "context": "batch", "adapt": "none",
         "limit": None, "seed": 0, **protocol}
    cells = [{"corruption": "clean" if s == 0 else "fog", "severity": s, "n": 10, "acc": a, "ece": e}
             for s, (a, e) in enumerate(zip(acc, ece))]
    return {"dataset": dataset, "protocol": p, "model": {"name": "m", "arch": "lenet"}, "cells": cells,
            "summary": {"by_severity": {str(s): {"acc_mean": a, "acc_std": 0.0, "ece_mean": e, "ece_std": 0.0}
                                        for s, (a, e) in enumerate(zip(acc, ece))}, "mean_corruption_acc": acc[1]}}


def test_regressions_are_absolute_and_per_severity():
    base = _result()
    assert regressions(_result(acc=(0.895, 0.79)), base, 0.01) == []
    rows = regressions(_result(acc=(0.85, 0.8), ece=(0.05, 0.2)), base, 0.01)
    assert rows == ["severity 0: accuracy 0.9000 -> 0.8500 (-0.0500)", "severity 1: ECE 0.1000 -> 0.2000 (+0.1000)"]
    assert regressions(_result(acc=(1.0, 1.0), ece=(0.0, 0.0)), base, 0.0) == []  # improvements never fail


def test_protocol_differences_include_the_seed_only_for_generated_sets():
    assert protocol_differences(_result(seed=1), _result()) == []
    assert protocol_differences(_result("gen:digits", seed=1), _result("gen:digits")) == ["seed 1 vs 0"]
    assert protocol_differences(_result("cifar100c"), _result()) == ["dataset cifar100c vs cifar10c"]


def test_generated_sets_record_their_random_streams():
    """A gen: result from before the SplitMix64 streams (no `streams` key) drew other images from the same seed."""
    from qact_cli.corruptions.rng import STREAMS
    from qact_cli.eval.protocol import Protocol

    assert Protocol("gen:digits", ["fog"], [1]).to_json()["streams"] == STREAMS
    assert "streams" not in Protocol("cifar10c", ["fog"], [1]).to_json()
    now, old = _result("gen:digits", streams=STREAMS), _result("gen:digits")
    assert protocol_differences(now, old) == [f"streams {STREAMS} vs None"]
    assert protocol_differences(now, _result("gen:digits", streams=STREAMS)) == []


def test_generated_sets_record_the_corruption_kernels(monkeypatch):
    """QACT_KERNEL=native's float filters give images within one grey level of the default path's, not its
    bytes: a gen: result records which kernels made its images; one recorded before the key is the default's."""
    from qact_cli import native
    from qact_cli.corruptions.rng import STREAMS
    from qact_cli.eval.protocol import Protocol

    monkeypatch.setattr(native, "_state", {**native._state, "kernel": "torch"})  # whatever QACT_KERNEL says
    assert Protocol("gen:digits", ["fog"], [1]).to_json()["kernels"] == "torch"
    monkeypatch.setattr(native, "_state", {**native._state, "kernel": "native"})
    assert Protocol("gen:digits", ["fog"], [1]).to_json()["kernels"] == "native"
    assert "kernels" not in Protocol("cifar10c", ["fog"], [1]).to_json()
    fast, default = _result("gen:digits", streams=STREAMS, kernels="native"), _result("gen:digits", streams=STREAMS)
    assert protocol_differences(fast, default) == ["kernels native vs torch"]
    assert protocol_differences(default, _result("gen:digits", streams=STREAMS, kernels="torch")) == []
    assert protocol_differences(default, _result("gen:digits", streams=STREAMS, kernels="torch"), exact=True) == []
    assert protocol_differences(_result(kernels="native"), _result()) == []  # published sets: the kernels make nothing


def test_check_gates_with_a_multi_model_baseline(tmp_path):
    a, b = _result(), _result(acc=(0.5, 0.4))
    b["model"]["name"] = "other"
    (tmp_path / "multi.json").write_text(json.dumps({"schema": "qact.eval-multi/1", "results": [b, a]}))
    assert check_gates([_result()], tmp_path / "multi.json") == []
    worse = _result(acc=(0.5, 0.4))
    assert check_gates([worse], tmp_path / "multi.json") == [
        "m: severity 0: accuracy 0.9000 -> 0.5000 (-0.4000)", "m: severity 1: accuracy 0.8000 -> 0.4000 (-0.4000)"]
    with pytest.raises(InputError, match="another protocol"):
        check_gates([_result(context="stored")], tmp_path / "multi.json")
    with pytest.raises(UsageError):
        check_gates([_result()], None, fail_under=1.5)
