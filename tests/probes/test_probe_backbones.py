"""Probes on any frozen backbone (`qact train --backbone SPEC`): a qact checkpoint's features, a model
from elsewhere cut at its penultimate features, DINOv2; the backbone's identity; `qact eval` of each."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from qact_cli.checkpoint import load_model, make_checkpoint, read_checkpoint, save_checkpoint
from qact_cli.data import get_dataset
from qact_cli.data.transforms import to_model_input
from qact_cli.errors import InputError
from qact_cli.models import build_model, dinov2
from qact_cli.probes.backbones import backbone_unchanged, locate_features, resolve_backbone
from qact_cli.train import TrainConfig, split_train_val, train
from qact_cli.probes import linear as fitting
from qact_cli.probes.features import feature_batches
from qact_cli.utils import sha256_file

TINY = "dinov2_tiny_test"
DIGITS_MEAN, DIGITS_STD = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]


@pytest.fixture(autouse=True)
def env(monkeypatch, tmp_path):
    monkeypatch.setitem(dinov2.ARCHS, TINY, (32, 2, 2))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("QACT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(fitting, "C_COARSE", [1e-2, 1.0])  # a short C sweep keeps these fast
    monkeypatch.setattr(fitting, "C_REFINE", (0.5,))
    monkeypatch.setattr(fitting, "LOGREG_MAX_ITER", 100)


def lenet_checkpoint(path, act="relu", seed=0, batch_size=16):
    """A small random LeNet checkpoint as `qact train` writes it (train.batch_size recorded)."""
    torch.manual_seed(seed)
    kwargs = {"input_size": [32, 32], "widths": [4, 8], "hidden": [16, 16]}
    model = build_model("lenet", act=act, num_classes=10, **kwargs)
    info = {"arch": "lenet", "act": act, "head": "linear", "num_classes": 10, "arch_kwargs": kwargs,
            "input_size": [32, 32], "mean": DIGITS_MEAN, "std": DIGITS_STD, "classes": None, "backbone": None}
    save_checkpoint(make_checkpoint(model, info, {"dataset": "digits", "epochs": 1, "seed": seed,
                                                  "batch_size": batch_size}), path)
    return path


def fit(dataset, backbone, out, head="linear", **kw):
    cfg = TrainConfig(dataset=dataset, arch="probe", backbone=str(backbone), out=str(out), head=head, device="cpu",
                      epochs=2, batch_size=32, **kw)
    return train(cfg)


def eval_args(ckpt, tmp_path, *extra):
    return ("eval", ckpt, "--dataset", "gen:digits", "--limit", 8, "--corruptions", "gaussian_noise",
            "--severities", "0,1", "--batch-size", 8, "--device", "cpu", "--json", tmp_path / "r.json", *extra)


def val_accuracy(model, meta, dataset):
    source = get_dataset(dataset).split("train")
    _, va = split_train_val(len(source))
    x, y = source.__getitems__(va)
    with torch.inference_mode():
        pred = model(to_model_input(x, meta["model"]["mean"], meta["model"]["std"])).argmax(1)
    return (pred == y).float().mean().item()


# --- a qact checkpoint --------------------------------------------------------------------------------


def test_probe_on_a_relu_checkpoint_holds_the_head_and_the_backbone_identity(small_digits, tmp_path, cli):
    bb = lenet_checkpoint(tmp_path / "relu.pt")
    out = tmp_path / "probe.pt"
    info = fit(small_digits, bb, out)
    ckpt = read_checkpoint(out)
    assert set(ckpt["state_dict"]) == {"head.fc.weight", "head.fc.bias"}
    rec = ckpt["model"]["backbone"]
    assert rec["impl"] == "qact-checkpoint" and rec["sha256"] == sha256_file(bb) and rec["path"] == str(bb.resolve())
    assert rec["embed_dim"] == 16 and not rec["batch_dependent"] and info["probe"]["feature_order"] == "file order"
    assert ckpt["model"]["mean"] == DIGITS_MEAN and ckpt["model"]["arch"] == "probe" and rec["arch"] == "lenet"

    model, meta = load_model(out)
    assert list(model.state_dict()) == ["head.fc.weight", "head.fc.bias"]
    assert [n for n, _ in model.named_parameters()] == ["head.fc.weight", "head.fc.bias"]
    # scored the way `eval` scores it, the probe gives the validation accuracy of its fit
    assert val_accuracy(model, meta, small_digits) == pytest.approx(info["best_val_acc"])
    code, _, err = cli(*eval_args(out, tmp_path, "--adapt", "bn"))  # adapt bn reaches the frozen backbone's BatchNorm
    assert code == 0, err
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["model"]["backbone"]["sha256"] == sha256_file(bb) and len(doc["cells"]) == 2
    # ... and leaves it as it was
    with torch.inference_mode():
        x = torch.randn(4, 3, 32, 32)
        before = model(x)
        from qact_cli.nn import adapted

        with adapted(model, [torch.randn(8, 3, 32, 32) * 3]):
            pass
        torch.testing.assert_close(model(x), before)


def test_probe_on_a_qact_checkpoint_takes_the_batch_as_context(small_digits, tmp_path, cli):
    bb = lenet_checkpoint(tmp_path / "qact.pt", act="qact", batch_size=24)
    out = tmp_path / "qc.pt"
    info = fit(small_digits, bb, out, head="quantile")
    p = info["probe"]
    # training features in batches of the network's training batch size, shuffled, context "batch"
    assert (p["feature_batch_size"], p["feature_context"], p["feature_order"]) == (24, "batch", "seeded random")
    model, _ = load_model(out)
    assert model.backbone.batch_dependent and not model.eval_cache  # never from a per-image cache
    from qact_cli.nn import QAct

    assert sum(isinstance(m, QAct) for m in model.modules()) > 1  # --context reaches the backbone's layers too
    x = torch.randn(16, 3, 32, 32)
    with torch.inference_mode():
        whole, half = model.features(x)[:8], model.features(x[:8])
    assert not torch.allclose(whole, half)  # an image's features depend on its batch
    code, _, err = cli(*eval_args(out, tmp_path))
    assert code == 0, err


@pytest.mark.parametrize("head", ["linear", "quantile"])
def test_probe_calibrate_temperature_is_fitted_on_validation_and_eval_reports_it(small_digits, tmp_path, cli, head):
    from qact_cli.calibration import fit_temperature

    bb = lenet_checkpoint(tmp_path / "relu.pt", act="relu" if head == "linear" else "qact")
    out = tmp_path / "cal.pt"
    info = fit(small_digits, bb, out, head=head, calibrate="temperature")
    cal = info["calibration"]
    t = read_checkpoint(out)["model"]["temperature"]
    assert cal["method"] == "temperature" and cal["split"] == "val" and cal["temperature"] == t and 0.01 <= t <= 100
    assert cal["val_nll_after"] <= cal["val_nll_before"]
    if head == "linear":  # the probe run as eval runs it, on the validation images: the same T
        model, meta = load_model(out)
        source = get_dataset(small_digits).split("train")
        _, va = split_train_val(len(source))
        x, y = source.__getitems__(va)
        with torch.inference_mode():
            logits = model(to_model_input(x, meta["model"]["mean"], meta["model"]["std"]))
        assert fit_temperature(logits, y) == pytest.approx(t, rel=1e-3)
    code, stdout, err = cli(*eval_args(out, tmp_path))
    assert code == 0, err
    doc = json.loads((tmp_path / "r.json").read_text())
    assert all(c["calibrated"]["temperature"] == t and c["calibrated"]["nll"] > 0 for c in doc["cells"])
    assert f"temperature T = {t:.4f}" in stdout and "raw -> calibrated" in " ".join(stdout.split())
    # without --calibrate nothing is fitted and eval reports the raw metrics alone
    plain = fit(small_digits, bb, tmp_path / "plain.pt", head=head)
    assert "calibration" not in plain and "temperature" not in read_checkpoint(tmp_path / "plain.pt")["model"]


def test_feature_batches_never_leave_one_image_alone():
    batches = feature_batches(9, 4, None)
    assert [len(b) for b in batches] == [4, 5] and np.array_equal(np.concatenate(batches), np.arange(9))
    shuffled = feature_batches(10, 4, 0)
    assert sorted(np.concatenate(shuffled).tolist()) == list(range(10)) and [len(b) for b in shuffled] == [4, 4, 2]
    assert not np.array_equal(np.concatenate(shuffled), np.arange(10))


# --- a model from elsewhere --------------------------------------------------------------------------


@pytest.fixture
def resnet_card(tmp_path):
    from safetensors.torch import save_file
    from ext_model_builders import build

    def card(name="card.yaml", seed=0, features=None):
        w = tmp_path / f"r18-{seed}.safetensors"
        if not w.is_file():
            save_file(build(num_classes=10, seed=seed).state_dict(), str(w))
        text = f"model: torchvision:resnet18\nweights: {w.name}\nnum_classes: 10\ninput_size: 32\n"
        (tmp_path / name).write_text(text + (f"features: {features}\n" if features else ""))
        return tmp_path / name, w

    return card


def test_probe_on_torchvision_resnet18_cut_at_the_input_of_its_fc(small_digits, tmp_path, cli, resnet_card):
    card, w = resnet_card()
    out = tmp_path / "r18probe.pt"
    code, _, err = cli("train", "--dataset", small_digits, "--backbone", card, "--head", "linear", "--out", out,
                       "--device", "cpu", "--batch-size", 32)
    assert code == 0, err
    rec = read_checkpoint(out)["model"]["backbone"]
    assert rec["impl"] == "external" and rec["features"] == "input of fc" and rec["embed_dim"] == 512
    assert rec["sha256"] == sha256_file(w) and rec["spec"] == str(card.resolve())
    # the card's `features:` names the same place from the other side: avgpool's output, flattened
    named, _ = resnet_card("named.yaml", features="avgpool")
    a, b = resolve_backbone(str(card)), resolve_backbone(str(named))
    assert b.record()["features"] == "output of avgpool"
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(a.features(x), b.features(x))
    assert cli(*eval_args(out, tmp_path))[0] == 0
    # another weights file for the backbone: refused
    _, other = resnet_card("other.yaml", seed=1)
    code, _, err = cli(*eval_args(out, tmp_path, "--weights", other))
    assert code == 3 and "not the backbone this probe was fitted on" in err


def test_features_location_rule():
    net = torch.nn.Sequential(torch.nn.Linear(4, 10), torch.nn.ReLU(), torch.nn.Linear(10, 6), torch.nn.Linear(6, 10))
    assert locate_features(net, 10, None, "m") == ("3", "input")  # the last Linear with K outputs
    assert locate_features(net, 10, "1", "m") == ("1", "output")
    with pytest.raises(InputError, match="features: MODULE"):
        locate_features(torch.nn.Sequential(torch.nn.Conv2d(3, 10, 1), torch.nn.Flatten()), 10, None, "convnet")


# --- DINOv2 -------------------------------------------------------------------------------------------


def test_dinov2_backbone_and_its_arch_alias_fit_the_same_probe(small_digits, tmp_path, cli):
    args = ("--dataset", small_digits, "--weights", "random", "--probe-res", 28, "--device", "cpu", "--batch-size", 32)
    assert cli("train", "--backbone", TINY, "--out", tmp_path / "a.pt", *args)[0] == 0
    assert cli("train", "--arch", TINY, "--out", tmp_path / "b.pt", *args)[0] == 0
    a, b = read_checkpoint(tmp_path / "a.pt"), read_checkpoint(tmp_path / "b.pt")
    assert a["model"]["backbone"] == b["model"]["backbone"] and a["model"]["backbone"]["impl"] == "qact-dinov2"
    torch.testing.assert_close(a["state_dict"], b["state_dict"])
    assert cli(*eval_args(tmp_path / "a.pt", tmp_path))[0] == 0


# --- refusals -----------------------------------------------------------------------------------------


def test_a_probe_refuses_another_backbone(small_digits, tmp_path, cli):
    bb, other = lenet_checkpoint(tmp_path / "a.pt"), lenet_checkpoint(tmp_path / "b.pt", seed=1)
    out = tmp_path / "p.pt"
    fit(small_digits, bb, out)
    code, _, err = cli(*eval_args(out, tmp_path, "--weights", other))
    assert code == 3 and "b.pt is not the backbone this probe was fitted on" in err and len(err.strip().splitlines()) == 1
    moved = tmp_path / "moved.pt"
    bb.rename(moved)
    code, _, err = cli(*eval_args(out, tmp_path))
    assert code == 3 and "missing" in err and "--weights" in err
    assert cli(*eval_args(out, tmp_path, "--weights", moved))[0] == 0  # the same backbone, moved: found again
    moved.write_bytes(other.read_bytes())  # the file now holds another network
    assert cli(*eval_args(out, tmp_path, "--weights", moved))[0] == 3
    code, _, err = cli("train", "--dataset", small_digits, "--backbone", out, "--out", tmp_path / "pp.pt", "--device", "cpu")
    assert code == 3 and "itself a probe" in err
    assert backbone_unchanged(out) is False


def test_experiment_fits_a_probe_on_a_model_it_trains(small_digits, tmp_path):
    from qact_cli.compare.experiment import parse_experiment, run_experiment
    from qact_cli.eval.options import EvalOptions

    exp = parse_experiment({"train": {"dataset": small_digits, "epochs": 1, "batch_size": 32},
                            "models": [{"name": "net", "arch": "lenet", "act": "relu"},
                                       {"name": "net+LR", "backbone": "net", "head": "linear"}]}, "exp.yaml")
    assert exp.models[1].train["backbone"] == "net"
    opts = EvalOptions.from_values({"dataset": small_digits, "severities": "0", "batch_size": 16, "device": "cpu"},
                                   "test")
    entries = run_experiment(exp, opts, tmp_path / "run")
    probe_ckpt = read_checkpoint(tmp_path / "run" / "checkpoints" / "net+LR.pt")
    assert probe_ckpt["model"]["backbone"]["sha256"] == sha256_file(tmp_path / "run" / "checkpoints" / "net.pt")
    assert [e.name for e in entries] == ["net", "net+LR"] and all(e.result for e in entries)


def test_experiment_backbone_must_be_listed_before_its_probe():
    from qact_cli.compare.experiment import parse_experiment
    from qact_cli.errors import UsageError

    with pytest.raises(UsageError, match="listed before it"):
        parse_experiment({"models": [{"name": "p", "backbone": "net", "head": "linear"},
                                     {"name": "net", "arch": "lenet"}]}, "exp.yaml")
    with pytest.raises(UsageError, match="exactly one of"):
        parse_experiment({"models": [{"name": "p", "backbone": "net", "arch": "lenet"}]}, "exp.yaml")
