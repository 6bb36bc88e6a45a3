"""`qact compare` with checkpoints, experiments from a config, the bundled quickstart and sample configs."""

import filecmp
import json
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SMALL = ("--dataset", "gen:digits", "--corruptions", "fog", "--severities", "0,1", "--limit", "30", "--device", "cpu")


def command_params(name):
    from typer.main import get_command

    from qact_cli.cli import app

    return {p.name for p in get_command(app).commands[name].params}


def test_checkpoint_item_is_evaluated_like_qact_eval(cli, digits_ckpt, tmp_path):
    res = tmp_path / "r.json"
    code, _, err = cli("eval", digits_ckpt, *SMALL, "--json", res)
    assert code == 0, err
    code, out, err = cli("compare", res, digits_ckpt, *SMALL, "--json", tmp_path / "c.json")
    assert code == 0, err
    doc = json.loads((tmp_path / "c.json").read_text())
    a, b = doc["results"]
    assert a["protocol"] == b["protocol"] and a["cells"] == b["cells"]  # same cells, same numbers
    assert [c["name"] for c in doc["comparison"]["columns"]] == ["lenet_relu", "lenet_relu#2"]


def test_checkpoint_item_needs_a_dataset(cli, digits_ckpt):
    code, _, err = cli("compare", digits_ckpt)
    assert code == 2 and "--dataset" in err


TINY = """
title: tiny
dataset: gen:digits
corruptions: fog
severities: [0, 1]
limit: 20
device: cpu
train: {epochs: 1, batch_size: 64}
models:
  - {name: relu, arch: lenet, act: relu}
  - {name: relu-bn, from: relu, eval: {adapt: bn}}
  - {name: dino, arch: dinov2_vits14}
"""


def test_tiny_experiment_end_to_end_then_reused(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no DINOv2 weights there
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY)
    out_dir = tmp_path / "exp"
    code, out, err = cli("compare", "--config", cfg, "--out-dir", out_dir)
    assert code == 0, err
    assert "relu: training" in err
    assert "relu-bn" in out and "skipped" in out
    assert "relu-bn: adapt bn" in out and "changes nothing" not in out  # LeNet has BatchNorm to re-estimate
    weights = tmp_path / "torch" / "hub" / "checkpoints" / "dinov2_vits14_pretrain.pth"
    assert f"dino: skipped: no weights at {weights}; see README" in out
    for f in ("checkpoints/relu.pt", "results/relu.json", "results/relu-bn.json", "compare.json", "compare.md",
              "compare.png", "compare.reliability.png", "compare.html"):
        assert (out_dir / f).is_file(), f
    doc = json.loads((out_dir / "compare.json").read_text())
    cols = {c["name"]: c for c in doc["comparison"]["columns"]}
    assert cols["dino"]["status"] == "skipped" and cols["relu-bn"]["overrides"] == {"adapt": "bn"}
    assert [r["protocol"]["adapt"] for r in doc["results"]] == ["none", "bn"]
    # the declared override is not a protocol mismatch
    assert cols["relu-bn"]["protocol_differences"] == []
    # a second run trains and evaluates nothing
    code, out2, err = cli("compare", "--config", cfg, "--out-dir", out_dir)
    assert code == 0, err
    assert "reusing" in err and "training" not in err and "evaluating" not in err
    assert out2 == out
    # another training setting is another model
    from qact_cli.eval.options import EvalOptions
    from qact_cli.compare.experiment import checkpoint_matches, parse_experiment, train_config

    data = yaml.safe_load(TINY)
    exp = parse_experiment({k: data[k] for k in ("title", "train", "models")}, "tiny")
    spec = exp.models[0]
    opts = EvalOptions(dataset="gen:digits", device="cpu")
    ckpt = out_dir / "checkpoints" / "relu.pt"
    assert checkpoint_matches(ckpt, train_config(spec, opts, ckpt))
    spec.train["epochs"] = 2
    assert not checkpoint_matches(ckpt, train_config(spec, opts, ckpt))


@pytest.mark.parametrize("text, key", [
    ("dataset: gen:digits\nmodelz: []\n", "modelz"),
    ("dataset: gen:digits\nmodels:\n  - {name: a, arch: lenet, actt: relu}\n", "actt"),
    ("dataset: gen:digits\nmodels:\n  - {name: a, arch: lenet, eval: {limit: 3}}\n", "limit"),
    ("dataset: gen:digits\ntrain: {epocs: 3}\nmodels:\n  - {name: a, arch: lenet}\n", "epocs"),
])
def test_config_with_unknown_key_is_a_usage_error(cli, tmp_path, text, key):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    code, _, err = cli("compare", "--config", cfg, "--out-dir", tmp_path / "o")
    assert code == 2 and repr(key) in err


@pytest.mark.parametrize("models, words", [
    ("  - {name: a, from: b}\n", "'b'"),
    ("  - {name: a, arch: lenet}\n  - {name: a, arch: lenet}\n", "unique"),
    ("  - {name: 'a/b', arch: lenet}\n", "name"),
    ("  - {name: a, arch: lenet, checkpoint: x.pt}\n", "exactly one"),
])
def test_bad_model_lists(cli, tmp_path, models, words):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("dataset: gen:digits\nmodels:\n" + models)
    code, _, err = cli("compare", "--config", cfg, "--out-dir", tmp_path / "o")
    assert code == 2 and words in err


def test_missing_checkpoint_in_config_is_an_input_error(cli, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("dataset: gen:digits\nmodels:\n  - {name: a, checkpoint: nowhere.pt}\n")
    code, _, err = cli("compare", "--config", cfg, "--out-dir", tmp_path / "o")
    assert code == 3 and "nowhere.pt" in err


def test_quickstart_ships_in_the_package_and_matches_sample_configs():
    from qact_cli.compare.experiment import quickstart_path

    assert filecmp.cmp(quickstart_path(), ROOT / "sample_configs" / "quickstart.yaml", shallow=False)


def test_sample_configs_hold_only_known_keys():
    from qact_cli.compare.experiment import parse_experiment
    from qact_cli.compare.experiment_keys import EXPERIMENT_KEYS

    compare_keys = command_params("compare") | EXPERIMENT_KEYS
    for name in ("quickstart.yaml", "paper_cifar10c.yaml", "claim_digits.yaml", "paper_protocol_digits.yaml"):
        data = yaml.safe_load((ROOT / "sample_configs" / name).read_text())
        assert {k.replace("-", "_") for k in data} <= compare_keys, name
        exp = parse_experiment({k: v for k, v in data.items() if k in EXPERIMENT_KEYS}, name)
        assert [m.name for m in exp.models][:1] and all(m.train or m.source for m in exp.models)
    ci = yaml.safe_load((ROOT / "sample_configs" / "ci_regression.yaml").read_text())
    assert {k.replace("-", "_") for k in ci} <= command_params("eval")
    assert {"baseline", "tolerance"} <= set(ci)


def test_no_items_runs_the_bundled_quickstart(cli, tmp_path, monkeypatch):
    """`qact compare` alone runs quickstart.yaml (flags still override it), writing into ./qact-quickstart/."""
    import qact_cli.compare.experiment as experiment
    from qact_cli.compare.table import Entry
    from fixtures_results import make_result

    seen = {}

    def fake_run(exp, opts, out_dir, hooks=None):
        seen.update(exp=exp, opts=opts, out_dir=out_dir)
        return [Entry(m.name, make_result(m.name, 0.9, 0.05, limit=opts.limit), declared=dict(m.eval))
                for m in exp.models]

    monkeypatch.setattr(experiment, "run_experiment", fake_run)
    monkeypatch.chdir(tmp_path)
    code, out, err = cli("compare", "--limit", "7")
    assert code == 0, err
    opts = seen["opts"]
    assert opts.dataset == "gen:digits" and opts.corruptions == "common" and opts.limit == 7 and opts.batch_size == 256
    assert [m.name for m in seen["exp"].models] == ["lenet-relu", "lenet-relu-bn-adapt", "lenet-qact", "dinov2-probe"]
    assert str(seen["out_dir"]) == "qact-quickstart"
    assert all((tmp_path / "qact-quickstart" / f).is_file()
               for f in ("compare.json", "compare.md", "compare.png", "compare.html"))


def test_gpu_only_model_is_skipped_on_cpu_and_so_is_what_uses_it(cli, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("dataset: gen:digits\ndevice: cpu\nmodels:\n  - {name: big, arch: lenet, needs_gpu: true}\n"
                   "  - {name: big-bn, from: big, eval: {adapt: bn}}\n")
    code, out, err = cli("compare", "--config", cfg, "--out-dir", tmp_path / "o")
    assert code == 0, err
    assert "big: skipped: needs a GPU" in out and "big-bn: skipped: needs a GPU" in out
    assert not (tmp_path / "o" / "checkpoints").exists()
