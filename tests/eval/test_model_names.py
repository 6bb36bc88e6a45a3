"""Messages name the model by its MODEL (spec or card), and the weights file only where the file is
the problem (it cannot be read, or its tensors do not fit the model)."""

from __future__ import annotations

import pytest

from fixtures_weights import resnet18_state_dict

FLAGS = ["--dataset", "gen:digits", "--corruptions", "contrast", "--severities", "0", "--limit", "8",
         "--batch-size", "8", "--device", "cpu", "--mean", "0.5,0.5,0.5", "--std", "0.25,0.25,0.25"]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return resnet18_state_dict(tmp_path_factory.mktemp("names") / "w.pt", num_classes=5)


@pytest.fixture(scope="module")
def weights10(tmp_path_factory):
    return resnet18_state_dict(tmp_path_factory.mktemp("names10") / "w10.pt", num_classes=10)


@pytest.mark.parametrize("k, extra, words", [
    (5, [], "torchvision:resnet18 is a 5-class model but dataset gen:digits has 10 classes"),
    (10, ["--input-size", 64], "torchvision:resnet18 expects 64x64 images but"),
])
def test_a_model_problem_names_the_model_not_its_weights_file(cli, weights, weights10, k, extra, words):
    w = weights if k == 5 else weights10
    code, _, err = cli("eval", "torchvision:resnet18", "--weights", w, "--num-classes", k, *extra, *FLAGS)
    assert code == 3 and words in err and str(w) not in err and "Traceback" not in err


def test_a_card_is_named_by_its_name(cli, weights, tmp_path):
    card = tmp_path / "r18.yaml"
    card.write_text(f"model: torchvision:resnet18\nweights: {weights}\nnum_classes: 5\n")
    code, _, err = cli("eval", card, *FLAGS)
    assert code == 3 and "r18 is a 5-class model" in err and str(weights) not in err


def test_a_weights_file_that_does_not_fit_names_the_file(cli, weights):
    code, _, err = cli("eval", "torchvision:resnet18", "--weights", weights, "--num-classes", 10, *FLAGS)
    assert code == 3 and f"weights {weights} do not fit torchvision:resnet18" in err
