"""DINOv2 probes (`qact train --arch dinov2_*`): training on cached features, small checkpoints that
hold only the head, eval through `qact eval`, and refusal of missing or other backbone weights.

A tiny test-only variant (embed 32, depth 2, 2 heads) with the official key layout stands in for
ViT-S/14; its weights files live in a temporary TORCH_HOME, features in a temporary QACT_CACHE.
"""

import json
import shutil

import numpy as np
import pytest
import torch

from qact_cli.checkpoint import load_model, read_checkpoint
from qact_cli.data import get_dataset
from qact_cli.data.transforms import to_model_input
from qact_cli.errors import InputError
from qact_cli.models import dinov2
from qact_cli.probes import model as probe
from qact_cli.probes import linear as fitting, quantile_head
from qact_cli.models.dinov2 import load_backbone
from qact_cli.utils import sha256_file
from qact_cli.models.vit import DinoVisionTransformer
from qact_cli.training import TrainConfig, split_train_val, train

TINY = "dinov2_tiny"
COARSE, REFINE, MAX_ITER = fitting.C_COARSE, fitting.C_REFINE, fitting.LOGREG_MAX_ITER


@pytest.fixture(autouse=True)
def env(monkeypatch, tmp_path):
    monkeypatch.setitem(dinov2.ARCHS, TINY, (32, 2, 2))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("QACT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("QACT_FEATURE_CACHE", raising=False)
    # a short C sweep keeps the pipeline tests fast; test_c_sweep_* runs the real one
    monkeypatch.setattr(fitting, "C_COARSE", [1e-2, 1.0])
    monkeypatch.setattr(fitting, "C_REFINE", (0.5,))
    monkeypatch.setattr(fitting, "LOGREG_MAX_ITER", 100)


@pytest.fixture
def calls(monkeypatch):
    """Counts images through the backbone (every path ends in forward_tokens)."""
    seen = []
    original = DinoVisionTransformer.forward_tokens

    def counting(self, x):
        seen.append(len(x))
        return original(self, x)

    monkeypatch.setattr(DinoVisionTransformer, "forward_tokens", counting)
    return seen


def write_weights(seed=0):
    """The tiny backbone's state dict (official key layout) in the hub cache; returns its path."""
    path = dinov2.default_weights_path(TINY)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(load_backbone(TINY, weights="random", seed=seed).state_dict(), path)
    return path


def fit(dataset, out, head="linear", res=28, **kw):
    cfg = TrainConfig(dataset=dataset, arch=TINY, out=str(out), head=head, device="cpu", epochs=3, batch_size=32, **kw)
    cfg.probe_res = res
    return train(cfg)


def eval_args(ckpt, tmp_path, *extra):
    return ("eval", ckpt, "--dataset", "gen:digits", "--limit", 8, "--corruptions", "gaussian_noise",
            "--severities", "0,1", "--batch-size", 8, "--device", "cpu", "--json", tmp_path / "r.json", *extra)


# --- training and checkpoints ---------------------------------------------------------------------


def test_linear_probe_trains_evaluates_and_checkpoint_holds_only_the_head(small_digits, tmp_path, cli):
    weights = write_weights()
    out = tmp_path / "probe.pt"
    info = fit(small_digits, out)
    ckpt = read_checkpoint(out)
    assert out.stat().st_size < 5e6 and set(ckpt["state_dict"]) == {"head.fc.weight", "head.fc.bias"}
    bb = ckpt["model"]["backbone"]
    assert bb["name"] == TINY and bb["weights_sha256"] == sha256_file(weights) and bb["spec"]["res"] == 28
    assert ckpt["model"]["act"] == "none" and ckpt["model"]["mean"] == list(dinov2.IMAGENET_MEAN)
    assert info["probe"]["C"] in [s["C"] for s in info["history"]] and info["best_epoch"] == 1

    # the model run the way `eval` runs it reproduces the validation accuracy of the fit
    model, meta = load_model(out)
    source = get_dataset(small_digits).split("train")
    _, va = split_train_val(len(source))
    x, y = source.__getitems__(va)
    with torch.inference_mode():
        pred = model(to_model_input(x, meta["model"]["mean"], meta["model"]["std"])).argmax(1)
    assert (pred == y).float().mean().item() == pytest.approx(info["best_val_acc"])

    code, _, err = cli(*eval_args(out, tmp_path))
    assert code == 0, err
    doc = json.loads((tmp_path / "r.json").read_text())
    assert [(c["corruption"], c["severity"], c["n"]) for c in doc["cells"]] == [("clean", 0, 8), ("gaussian_noise", 1, 8)]
    assert doc["model"]["backbone"]["weights_sha256"] == sha256_file(weights)


def test_quantile_probe_folds_its_standardisation(small_digits, tmp_path, cli):
    out = tmp_path / "q.pt"
    info = fit(small_digits, out, head="quantile", weights="random")
    ckpt = read_checkpoint(out)
    assert all(k.startswith("head.") for k in ckpt["state_dict"]) and ckpt["model"]["backbone"]["weights_sha256"] is None
    assert 1 <= info["best_epoch"] <= info["epochs"] <= 3 and info["optimizer"] == "adam"
    # --head quantile is direct_fit: its sharpness refitted on the training features and carried by the head
    sharp = info["head_sharpness"]
    assert sharp["split"] == "train" and sharp["train_nll_after"] <= sharp["train_nll_before"]
    assert load_model(out)[0].head.sharpness == pytest.approx(sharp["a"], rel=1e-5)
    code, _, err = cli(*eval_args(out, tmp_path))
    assert code == 0, err

    fc = torch.nn.Linear(5, 3)
    x = torch.randn(7, 5) * 40 + 3
    mu, sd = x.mean(0), x.std(0)
    expected = fc((x - mu) / sd)
    quantile_head._fold_standardisation(fc, mu, sd)
    torch.testing.assert_close(fc(x), expected, rtol=1e-4, atol=1e-4)


def test_c_sweep_walks_dinov2_grid_and_prefers_the_smaller_c(monkeypatch):
    monkeypatch.setattr(fitting, "C_COARSE", COARSE)
    monkeypatch.setattr(fitting, "C_REFINE", REFINE)
    monkeypatch.setattr(fitting, "LOGREG_MAX_ITER", MAX_ITER)
    g = np.random.default_rng(1)
    y = g.integers(0, 3, 150)
    x = g.normal(size=(150, 4)) + 1.5 * np.eye(4)[y]  # overlapping blobs: accuracy peaks at a finite C
    head, rec = fitting.fit_linear(torch.as_tensor(x[:120]), y[:120], torch.as_tensor(x[120:]), y[120:], 3, select="acc")
    grid = 10.0 ** np.linspace(-6, 5, 45)  # dinov2/eval/log_regression.py: C_POWER_RANGE
    tried = np.array([s["C"] for s in rec["sweep"]])
    assert np.isclose(tried[:, None], grid[None], rtol=1e-9).any(1).all() and len(tried) <= 18
    decades = [c for c in tried if np.isclose(np.log10(c), np.round(np.log10(c)))]
    best_decade = max(decades, key=lambda c: ([s["val_acc"] for s in rec["sweep"] if s["C"] == c][0], -c))
    assert decades[0] == 1e-6 and sum(c > best_decade for c in decades) <= fitting.C_PATIENCE
    best = max(s["val_acc"] for s in rec["sweep"])
    assert rec["val_acc"] == best and rec["C"] == min(s["C"] for s in rec["sweep"] if s["val_acc"] == best)
    pred = head(torch.as_tensor(x[120:], dtype=torch.float32)).argmax(1).numpy()
    assert (pred == y[120:]).mean() == pytest.approx(rec["val_acc"])
    # the default: C by validation log-loss, which the head's probabilities reproduce
    head, rec = fitting.fit_linear(torch.as_tensor(x[:120]), y[:120], torch.as_tensor(x[120:]), y[120:], 3)
    assert rec["select"] == "nll" and rec["val_nll"] == min(s["val_nll"] for s in rec["sweep"])
    logp = torch.log_softmax(head(torch.as_tensor(x[120:], dtype=torch.float32)), 1).detach().numpy()
    assert -logp[np.arange(30), y[120:]].mean() == pytest.approx(rec["val_nll"], rel=1e-4)


def test_forward_on_model_input_gives_the_cached_training_features():
    """eval feeds (uint8/255 - mean)/std at the dataset's size; training features come from uint8."""
    bb = load_backbone(TINY, weights="random")
    spec = dinov2.FeatureSpec(res=42)
    model = probe.ProbeModel(bb, torch.nn.Identity(), spec)
    x = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        got = model(to_model_input(x, spec.mean, spec.std))
    torch.testing.assert_close(got, dinov2.extract_features(bb, x, device="cpu", spec=spec), rtol=1e-5, atol=1e-5)
    assert list(model.state_dict()) == [] and list(model.parameters()) == []


@pytest.mark.parametrize("classes", [[0, 1, 2, 3], [1, 3], [0, 2, 3]])
def test_linear_head_reproduces_sklearn_probabilities(classes):
    g = np.random.default_rng(0)
    x = g.normal(size=(60, 6))
    y = np.array(classes)[g.integers(0, len(classes), 60)]
    clf = fitting._logreg(1.0, x, y)
    head = fitting._linear_head_from(clf, 6, 4)
    p = torch.softmax(head(torch.as_tensor(x, dtype=torch.float32)), 1).detach().numpy()
    np.testing.assert_allclose(p[:, clf.classes_], clf.predict_proba(x), atol=1e-5)
    assert np.all(np.delete(p, clf.classes_, axis=1) < 1e-6)  # a class never seen is never predicted


def test_training_features_come_from_the_cache_on_a_second_run(small_digits, tmp_path, calls):
    first = fit(small_digits, tmp_path / "a.pt", weights="random")
    n_first = sum(calls)
    second = fit(small_digits, tmp_path / "b.pt", weights="random")
    assert n_first == 120 and sum(calls) == n_first  # no image went through the backbone again
    assert not first["probe"]["features_cached"] and second["probe"]["features_cached"]
    assert second["best_val_acc"] == first["best_val_acc"]
    fit(small_digits, tmp_path / "c.pt", weights="random", res=56)  # another resolution: a new entry
    assert sum(calls) == 2 * n_first


def test_eval_features_are_cached_by_input_content(small_digits, tmp_path, cli, calls, monkeypatch):
    out = tmp_path / "p.pt"
    fit(small_digits, out, weights="random")
    calls.clear()
    assert cli(*eval_args(out, tmp_path))[0] == 0
    first = json.loads((tmp_path / "r.json").read_text())["cells"]
    assert sum(calls) == 16
    assert cli(*eval_args(out, tmp_path))[0] == 0
    assert sum(calls) == 16 and json.loads((tmp_path / "r.json").read_text())["cells"] == first
    monkeypatch.setenv("QACT_FEATURE_CACHE", "0")
    assert cli(*eval_args(out, tmp_path))[0] == 0
    assert sum(calls) == 32 and json.loads((tmp_path / "r.json").read_text())["cells"] == first


# --- weights: missing, other, random ----------------------------------------------------------------


def test_missing_weights_at_train_time_name_file_folder_and_command(small_digits, tmp_path, cli):
    code, _, err = cli("train", "--dataset", small_digits, "--arch", TINY, "--out", tmp_path / "p.pt", "--device", "cpu")
    path = dinov2.default_weights_path(TINY)
    assert code == 3 and path.name in err and str(path.parent) in err and "--download" in err and "--weights" in err
    code, _, err = cli("train", "--dataset", small_digits, "--arch", TINY, "--out", tmp_path / "p.pt",
                       "--weights", tmp_path / "nowhere.pth", "--device", "cpu")
    assert code == 3 and "nowhere.pth" in err and not (tmp_path / "p.pt").exists()


def test_eval_refuses_other_weights_and_finds_the_right_ones(small_digits, tmp_path, cli):
    hub = write_weights(seed=0)
    out = tmp_path / "p.pt"
    fit(small_digits, out)
    good = tmp_path / "good.pth"
    shutil.copy(hub, good)
    other = tmp_path / "other.pth"
    torch.save(load_backbone(TINY, weights="random", seed=1).state_dict(), other)

    code, _, err = cli(*eval_args(out, tmp_path, "--weights", other))  # explicit other weights
    assert code == 3 and "sha256" in err and "other.pth" in err
    shutil.copy(other, hub)  # the hub cache now holds other weights
    code, _, err = cli(*eval_args(out, tmp_path))
    assert code == 3 and "sha256" in err
    assert cli(*eval_args(out, tmp_path, "--weights", good))[0] == 0  # the right file, given explicitly
    hub.unlink()  # nothing in the hub cache, and the file used in training is gone too
    code, _, err = cli(*eval_args(out, tmp_path))
    assert code == 3 and hub.name in err and str(hub.parent) in err and "--weights" in err
    with pytest.raises(InputError, match="sha256"):
        load_model(out, weights=other)


def test_eval_falls_back_to_the_weights_file_used_in_training(small_digits, tmp_path, cli):
    w = tmp_path / "mine.pth"
    torch.save(load_backbone(TINY, weights="random", seed=3).state_dict(), w)
    out = tmp_path / "p.pt"
    fit(small_digits, out, weights=str(w))
    assert read_checkpoint(out)["model"]["backbone"]["weights_path"] == str(w)
    assert cli(*eval_args(out, tmp_path))[0] == 0  # the hub cache is empty: the recorded file is used
    write_weights(seed=4)
    assert cli(*eval_args(out, tmp_path))[0] == 0  # the hub holds other weights: the recorded file still fits


def test_random_backbone_probe_refuses_a_weights_file(small_digits, tmp_path, cli):
    out = tmp_path / "p.pt"
    code, stdout, err = cli("train", "--dataset", small_digits, "--arch", TINY, "--out", out, "--weights", "random",
                            "--seed", 5, "--device", "cpu")
    assert code == 0 and "best validation accuracy" in stdout, err
    ckpt = read_checkpoint(out)
    assert ckpt["model"]["backbone"]["seed"] == 5 and ckpt["model"]["backbone"]["spec"]["res"] == 224
    code, _, err = cli(*eval_args(out, tmp_path, "--weights", write_weights()))
    assert code == 3 and "random" in err


def test_weights_available_and_bad_options(tmp_path, small_digits):
    assert probe.dinov2_weights_available(TINY) == (False, dinov2.default_weights_path(TINY))
    path = write_weights()
    assert probe.dinov2_weights_available(TINY) == (True, path)
    assert probe.dinov2_weights_available(TINY, tmp_path / "x.pth") == (False, tmp_path / "x.pth")
    assert probe.dinov2_weights_available(TINY, "random") == (True, None)
    from qact_cli.errors import UsageError

    for kw in ({"res": 30}, {"loss": "watershed"}, {"act": "qact"}):
        with pytest.raises(UsageError):
            fit(small_digits, tmp_path / "p.pt", weights="random", **kw)


def test_eval_download_fetches_the_backbone_weights(small_digits, tmp_path, cli, monkeypatch):
    """`qact eval PROBE --download` with an empty hub cache fetches the frozen backbone's weights (checked
    against the sha256 recorded at training time), like `qact train --download` does."""
    from fixtures_http import Server

    hub = write_weights(seed=0)
    out = tmp_path / "p.pt"
    fit(small_digits, out)
    data = hub.read_bytes()
    hub.unlink()
    server = Server({f"/{TINY}/{TINY}_pretrain.pth": data})
    monkeypatch.setattr(dinov2, "WEIGHTS_BASE_URL", server.url)
    try:
        code, _, err = cli(*eval_args(out, tmp_path))  # no --download: no request, a clear message
        assert code == 3 and "--download" in err and server.requests == []
        code, _, err = cli(*eval_args(out, tmp_path, "--download"))
        assert code == 0, err
        assert hub.read_bytes() == data and len(server.requests) == 1
    finally:
        server.close()
