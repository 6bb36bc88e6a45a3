"""torch.export archives are scored, not only loaded: the same cells as the eager model, through the
library and the CLI; an archive exported in training mode is refused (it would normalise every batch
by its own statistics and drop activations at random)."""

import json

import pytest
import torch

import qact_cli
from ext_model_builders import small_cnn
from qact_cli.errors import InputError
from qact_cli.models.exported import eval_mode, training_ops

DATA = dict(dataset="gen:digits", corruptions="gaussian_noise,contrast", severities="0,3", limit=24, batch_size=8,
            device="cpu")
FLAGS = ["--dataset", "gen:digits", "--corruptions", "gaussian_noise,contrast", "--severities", "0,3", "--limit", "24",
         "--batch-size", "8", "--device", "cpu"]


def _export(model, path, dynamic=True):
    x = torch.randn(2, 3, 32, 32)
    shapes = ({0: torch.export.Dim("batch")},) if dynamic else None
    torch.export.save(torch.export.export(model, (x,), dynamic_shapes=shapes), str(path))
    return path


@pytest.fixture(scope="module")
def archives(tmp_path_factory):
    d = tmp_path_factory.mktemp("pt2")
    train = small_cnn().train()
    return {"eval": _export(small_cnn(), d / "net.pt2"), "train": _export(train, d / "net_train.pt2"),
            "static": _export(small_cnn(), d / "static.pt2", dynamic=False)}


def cells(doc):
    return {(c["corruption"], c["severity"]): {k: c[k] for k in ("n", "acc", "ece", "nll", "brier")} for c in doc["cells"]}


def test_an_exported_program_scores_as_the_eager_model(archives, tmp_path, cli):
    eager = qact_cli.evaluate(small_cnn(), num_classes=10, **DATA)
    exported = qact_cli.evaluate(str(archives["eval"]), trust_model_file=True, num_classes=10, **DATA)
    assert len(eager["cells"]) == 3  # clean, and the two corruptions at severity 3
    want, got = cells(eager), cells(exported)
    assert want.keys() == got.keys()
    for key in want:
        assert got[key]["n"] == want[key]["n"] and got[key]["acc"] == want[key]["acc"]
        assert got[key] == pytest.approx(want[key], abs=1e-6), key
    assert exported["model"]["weights_sha256"] and exported["model"]["spec"] == str(archives["eval"])
    out = tmp_path / "r.json"
    code, _, err = cli("eval", archives["eval"], "--trust-model-file", "--num-classes", "10", *FLAGS, "--json", out)
    assert code == 0, err
    assert cells(json.loads(out.read_text())) == got


def test_an_archive_exported_in_training_mode_is_refused(archives):
    with pytest.raises(InputError, match=r"exported in training mode \(batch_norm, dropout.*model.eval\(\)"):
        qact_cli.evaluate(str(archives["train"]), trust_model_file=True, num_classes=10, **DATA)


def test_the_mode_is_read_from_the_graph(archives):
    assert training_ops(torch.export.load(str(archives["eval"])).module()) == []
    assert training_ops(torch.export.load(str(archives["train"])).module()) == ["batch_norm", "dropout"]
    assert training_ops(small_cnn()) == []  # an eager module has no graph: nothing to read
    m = torch.export.load(str(archives["train"])).module()  # an exported module handed to evaluate() directly
    with pytest.raises(InputError, match="exported in training mode"):
        eval_mode(m, "mine")
    eager = small_cnn().train()
    assert eval_mode(eager) is eager and not eager.training


def test_an_archive_traced_for_another_batch_size_is_the_models_failure(archives):
    with pytest.raises(InputError, match=r"model .*static.pt2 failed on input \(8, 3, 32, 32\): .*Guard failed.*"
                                         r"dynamic batch dimension"):
        qact_cli.evaluate(str(archives["static"]), trust_model_file=True, num_classes=10, **DATA)
