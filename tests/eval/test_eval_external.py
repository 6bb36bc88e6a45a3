"""End-to-end evaluation of models from elsewhere: one evaluation core behind `qact eval`,
`qact compare` and `qact_cli.evaluate()`; preprocessing, output checks, the options object."""

import json

import numpy as np
import pytest
import torch
import torchvision

import qact_cli
from qact_cli.errors import InputError, UsageError
from qact_cli.eval.options import EvalOptions
from qact_cli.options.model import model_options
from qact_cli.eval.run import plan

DATA = dict(dataset="gen:digits", corruptions="gaussian_noise,contrast", severities="0,3", limit=24, batch_size=8,
            device="cpu")
FLAGS = ["--dataset", "gen:digits", "--corruptions", "gaussian_noise,contrast", "--severities", "0,3", "--limit", "24",
         "--batch-size", "8", "--device", "cpu"]
MEAN, STD = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]

def resnet18(seed=0):
    torch.manual_seed(seed)
    return torchvision.models.resnet18(num_classes=10).eval()


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    from safetensors.torch import save_file

    path = tmp_path_factory.mktemp("r18") / "w.safetensors"
    save_file(resnet18().state_dict(), str(path))
    return path


def reference_cells(model, mean, std, size=None, mode=None):
    """An independent forward pass over the same cells: (accuracy, NLL) per (corruption, severity); the
    NLL depends on every logit, so a preprocessing slip shows even when a random model's argmax does not."""
    from qact_cli.data import get_dataset
    from qact_cli.eval.protocol import limited

    ds = get_dataset("gen:digits")
    out = {}
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    for cell in ds.cells(["gaussian_noise", "contrast"], [0, 3], seed=0):
        src = limited(cell.source, DATA["limit"])
        x, y = src.__getitems__(np.arange(len(src)))
        x = x.float()
        if size:
            x = torch.nn.functional.interpolate(x, size=size, mode=mode, align_corners=False)
        with torch.no_grad():
            logits = model(((x / 255) - m) / s).double()
        nll = float(torch.nn.functional.cross_entropy(logits, y.long()))
        out[(cell.corruption, cell.severity, "acc")] = float((logits.argmax(1) == y).double().mean())
        out[(cell.corruption, cell.severity, "nll")] = nll
    return out


def accuracies(doc):
    return {(c["corruption"], c["severity"], k): c[k] for c in doc["cells"] for k in ("acc", "nll")}


def test_module_matches_an_independent_forward_pass():
    doc = qact_cli.evaluate(resnet18(), num_classes=10, mean=MEAN, std=STD, **DATA)
    ref = reference_cells(resnet18(), MEAN, STD)
    assert accuracies(doc) == pytest.approx(ref, rel=1e-4)
    rec = doc["model"]
    assert rec["num_classes"] == 10 and rec["mean"] == MEAN and rec["std"] == STD and rec["checkpoint"] is None
    assert {"spec", "weights", "weights_sha256", "input_size", "class_source"} <= set(rec)


def test_resize_on_the_device_and_size_mismatch_without_it():
    ref = reference_cells(resnet18(), MEAN, STD, size=[48, 48], mode="bilinear")
    doc = qact_cli.evaluate(resnet18(), num_classes=10, mean=MEAN, std=STD, input_size=48, resize="bilinear", **DATA)
    assert accuracies(doc) == pytest.approx(ref, rel=1e-4)
    assert doc["model"]["input_size"] == [48, 48] and doc["model"]["resize"] == "bilinear"
    with pytest.raises(InputError, match="expects 48x48"):
        qact_cli.evaluate(resnet18(), num_classes=10, input_size="48,48", **DATA)


class _Bad(torch.nn.Module):
    def __init__(self, out):
        super().__init__()
        self.out = out

    def forward(self, x):
        return self.out(x)


@pytest.mark.parametrize("forward, match", [
    (lambda x: torch.zeros(len(x), 5), r"returned \(8, 5\).*expected \(8, 10\)"),
    (lambda x: torch.zeros(len(x), 10, 2), r"returned \(8, 10, 2\)"),
    (lambda x: torch.full((len(x), 10), float("nan")), "NaN or infinite"),
    (lambda x: (torch.zeros(len(x), 10),), "returned tuple"),
])
def test_bad_outputs_are_input_errors(forward, match):
    with pytest.raises(InputError, match=match):
        qact_cli.evaluate(_Bad(forward), num_classes=10, **DATA)


def test_cli_json_equals_evaluate_for_a_checkpoint(cli, digits_ckpt, tmp_path):
    out = tmp_path / "r.json"
    code, _, err = cli("eval", digits_ckpt, *FLAGS, "--json", out)
    assert code == 0, err
    doc = qact_cli.evaluate(str(digits_ckpt), **DATA)
    cli_doc = json.loads(out.read_text())
    for d in (doc, cli_doc):
        d.pop("elapsed_s"), d.pop("environment")
    assert json.loads(json.dumps(doc)) == cli_doc


def test_spec_card_and_module_give_identical_cells(cli, weights, tmp_path):
    by_spec = qact_cli.evaluate("torchvision:resnet18", weights=str(weights), num_classes=10, mean=MEAN, std=STD, **DATA)
    card = tmp_path / "r18.yaml"
    card.write_text(f"model: torchvision:resnet18\nweights: {weights}\nnum_classes: 10\nmean: {MEAN}\nstd: {STD}\n")
    by_card = qact_cli.evaluate(str(card), **DATA)
    by_dict = qact_cli.evaluate({"model": "torchvision:resnet18", "weights": str(weights), "num_classes": 10,
                                 "mean": MEAN, "std": STD}, **DATA)
    by_module = qact_cli.evaluate(resnet18(), num_classes=10, mean=MEAN, std=STD, **DATA)
    assert by_spec["cells"] == by_card["cells"] == by_dict["cells"] == by_module["cells"]
    assert accuracies(by_spec) == pytest.approx(reference_cells(resnet18(), MEAN, STD), rel=1e-4)
    rec = by_spec["model"]
    assert rec["spec"] == "torchvision:resnet18" and rec["weights_sha256"] and rec["mean"] == MEAN

    # the CLI's document is evaluate()'s, elapsed time and environment aside
    out = tmp_path / "cli.json"
    code, _, err = cli("eval", "torchvision:resnet18", "--weights", weights, "--num-classes", "10",
                       "--mean", ",".join(map(str, MEAN)), "--std", ",".join(map(str, STD)), *FLAGS, "--json", out)
    assert code == 0, err
    cli_doc = json.loads(out.read_text())
    for d in (by_spec, cli_doc):
        d.pop("elapsed_s"), d.pop("environment")
    assert json.loads(json.dumps(by_spec)) == cli_doc


def test_readme_command_on_digits(cli, weights):
    code, out, err = cli("eval", "torchvision:resnet18", "--weights", weights, "--num-classes", "10",
                         "--dataset", "gen:digits", "--corruptions", "fog", "--severities", "0,1", "--limit", "16",
                         "--device", "cpu", "--json", "-")
    assert code == 0, err
    assert json.loads(out)["model"]["spec"] == "torchvision:resnet18"


def test_compare_mixed_items_and_an_experiment_entry(cli, digits_ckpt, weights, tmp_path):
    res = tmp_path / "lenet.json"
    assert cli("eval", digits_ckpt, *FLAGS, "--json", res)[0] == 0
    out = tmp_path / "cmp.json"
    code, _, err = cli("compare", res, digits_ckpt, "torchvision:resnet18", "--weights", weights, "--num-classes", "10",
                       *FLAGS, "--json", out)
    assert code == 0, err
    results = json.loads(out.read_text())["results"]
    assert [r["model"].get("spec") for r in results] == [None, None, "torchvision:resnet18"]
    assert results[0]["cells"] == results[1]["cells"]  # the stored result and the re-evaluated checkpoint
    assert results[2]["cells"] == qact_cli.evaluate("torchvision:resnet18", weights=str(weights), num_classes=10,
                                                    **DATA)["cells"]
    # an experiment entry: `model:` with card keys beside it; its result is reused on the second run
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(f"dataset: gen:digits\ncorruptions: [gaussian_noise, contrast]\nseverities: [0, 3]\nlimit: 24\n"
                   f"batch_size: 8\ndevice: cpu\nmodels:\n  - name: r18\n    model: torchvision:resnet18\n"
                   f"    weights: {weights}\n    num_classes: 10\n  - name: lenet\n    checkpoint: {digits_ckpt}\n")
    for _ in range(2):
        code, _, err = cli("compare", "--config", cfg, "--out-dir", tmp_path / "exp")
        assert code == 0, err
    assert "reusing" in err
    doc = json.loads((tmp_path / "exp" / "compare.json").read_text())
    assert doc["results"][0]["cells"] == results[2]["cells"]


def test_options_are_validated_in_one_place():
    assert EvalOptions.from_values({"batch_size": "8", "severities": [0, 3], "limit": None}).batch_size == 8
    for bad, match in (({"batch_size": 0}, "--batch-size must be ≥ 1"), ({"context": "x"}, "unknown --context"),
                       ({"workers": -1}, "--workers"), ({"tolerance": 2}, "--tolerance"), ({"nope": 1}, "unknown option"),
                       ({"limit": "many"}, "--limit in")):
        with pytest.raises(UsageError, match=match):
            EvalOptions.from_values(bad)
    mo = model_options(input_size="224", mean="0.5,0.5,0.5", std=[1, 1, 1], class_names="a,b,c",
                       model_kwargs='{"depth": 18}', num_classes="3")
    assert mo.input_size == [224, 224] and mo.mean == [0.5] * 3 and mo.class_names == ["a", "b", "c"]
    assert mo.model_kwargs == {"depth": 18} and mo.num_classes == 3
    assert model_options() is None
    for bad in ({"mean": "1,2"}, {"resize": "nearest"}, {"model_kwargs": "[1, 2]"}, {"std": "0,1,1"}):
        with pytest.raises(UsageError):
            model_options(**bad)


def test_single_model_flags_apply_to_one_external_model(digits_ckpt):
    with pytest.raises(UsageError, match="2 are given"):
        plan(["torchvision:resnet18", "torchvision:resnet34"], num_classes=10)
    with pytest.raises(UsageError, match="qact checkpoints"):
        plan([str(digits_ckpt)], mean="0.5,0.5,0.5")
    jobs, backbone = plan([str(digits_ckpt), "torchvision:resnet18"], weights="w.safetensors", num_classes=10)
    assert jobs[0].model_options is None and jobs[1].model_options.weights == "w.safetensors"
    assert backbone == "w.safetensors"  # a qact DINOv2 probe's backbone file, as before
    assert plan(["torchvision:resnet18"], weights="w.safetensors")[1] is None


def test_baseline_of_other_weights_is_comparable_but_other_classes_are_not(tmp_path):
    import copy

    from qact_cli.eval.gates import check_gates

    base = qact_cli.evaluate(resnet18(0), num_classes=10, mean=MEAN, std=STD, **DATA)
    path = tmp_path / "base.json"
    path.write_text(json.dumps(base))
    # other weights and other preprocessing of the same architecture: a regression check, not an error
    new = qact_cli.evaluate(resnet18(1), num_classes=10, input_size=40, resize="bicubic", **DATA)
    assert check_gates([new], path, tolerance=1.0) == []
    other = copy.deepcopy(new)
    other["model"]["num_classes"] = 12
    with pytest.raises(InputError, match="model classes 12 vs 10"):
        check_gates([other], path, tolerance=1.0)
