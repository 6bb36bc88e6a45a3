"""Nothing to tell qact that the model or the dataset already says (models/class_count.py): without a
class flag a callable, a torch.export archive and an in-memory module are scored on the dataset's
classes, with the cells an independent numpy scoring of the same images gives; builders that take
`num_classes` get the dataset's; a wrong width is exit 3 naming both counts. Also `--outputs`,
`--channels` and `evaluate()` leaving the caller's module as it came."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

import qact_cli
from ext_model_builders import five_outputs, gray_cnn, small_cnn, softmax_cnn
from qact_cli.corruptions import corrupt
from qact_cli.data import get_dataset
from qact_cli.errors import InputError, UsageError
from qact_cli.models.external import ModelOptions, resolve_model

CORR, SEV, LIMIT = ["gaussian_noise", "contrast"], [0, 3], 60
DATA = dict(dataset="gen:digits", corruptions=",".join(CORR), severities="0,3", limit=LIMIT, batch_size=16,
            device="cpu")
FLAGS = ["--dataset", "gen:digits", "--corruptions", ",".join(CORR), "--severities", "0,3", "--limit", str(LIMIT),
         "--batch-size", "16", "--device", "cpu"]
IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The user's files: a safetensors state dict of small_cnn and the same model as a torch.export archive."""
    from safetensors.torch import save_file

    d = tmp_path_factory.mktemp("mine")
    save_file(small_cnn().state_dict(), str(d / "w.safetensors"))
    program = torch.export.export(small_cnn(), (torch.zeros(2, 3, 32, 32),),
                                  dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, str(d / "net.pt2"))
    return d


def _cells():
    """(corruption, severity, uint8 NHWC images, labels) built here from the digits test split with
    qact_cli.corruptions.corrupt, as gen:digits defines its cells (seed 0, --limit's evenly spaced indices)."""
    test = get_dataset("digits").split("test")
    images, labels = np.asarray(test.images), np.asarray(test.labels)
    idx = (np.arange(LIMIT) * len(images)) // LIMIT
    out = [("clean", 0, images[idx], labels[idx])]
    for c in CORR:
        out.append((c, 3, corrupt(images[idx], c, 3, seed=0, indices=idx), labels[idx]))
    return out


def numpy_reference(model, mean, std, gray=False, probs=False):
    """acc, ECE (15 equal-width bins, a confidence on an upper edge in the lower bin) and NLL per cell, from
    one forward pass of `model` and numpy; `gray`: images converted by Pillow's "L" first."""
    out = {}
    for name, sev, x, y in _cells():
        if gray:
            x = np.stack([np.asarray(Image.fromarray(im).convert("L")) for im in x])[..., None]
        x = (x.astype(np.float32) / 255 - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
        with torch.no_grad():
            z = model(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).double().numpy()
        p = z if probs else np.exp(z - z.max(1, keepdims=True))
        p = p / p.sum(1, keepdims=True)
        conf, pred = p.max(1), p.argmax(1)
        bins = np.clip(np.ceil(conf * 15).astype(int) - 1, 0, 14)
        ece = sum(abs(((pred == y) - conf)[bins == b].sum()) for b in range(15)) / len(y)
        nll = float(np.mean(-np.log(p[np.arange(len(y)), y])))
        out[(name, sev)] = (float((pred == y).mean()), ece, nll)
    return out


def scored(doc):
    return {(c["corruption"], c["severity"]): (c["acc"], c["ece"], c["nll"]) for c in doc["cells"]}


def _same(doc, ref):
    got = scored(doc)
    assert got.keys() == ref.keys()
    for key in ref:
        assert got[key][0] == ref[key][0], key  # accuracy exactly
        assert got[key][1:] == pytest.approx(ref[key][1:], abs=1e-5), key


def _plain(doc):
    doc = json.loads(json.dumps(doc))
    doc.pop("elapsed_s"), doc.pop("environment")
    return doc


def test_done_when_no_class_flag_and_the_cells_of_an_independent_forward_pass(cli, files, tmp_path):
    ref = numpy_reference(small_cnn(), *IMAGENET)
    docs = {}
    for key, args in (("callable", ["ext_model_builders:small_cnn", "--weights", files / "w.safetensors"]),
                      ("export", [files / "net.pt2", "--trust-model-file"])):
        out = tmp_path / f"{key}.json"
        code, _, err = cli("eval", *args, *FLAGS, "--json", out)
        assert code == 0, err
        docs[key] = json.loads(out.read_text())
        _same(docs[key], ref)
        assert docs[key]["model"]["num_classes"] == 10
    # the Python entry point: the same document for the same MODEL, the same cells for the module itself
    by_spec = qact_cli.evaluate("ext_model_builders:small_cnn", weights=str(files / "w.safetensors"), **DATA)
    assert _plain(by_spec) == _plain(docs["callable"])
    module = qact_cli.evaluate(small_cnn(), **DATA)
    assert module["cells"] == docs["callable"]["cells"] and module["summary"] == docs["callable"]["summary"]
    assert module["model"]["num_classes"] == 10 and module["protocol"] == docs["callable"]["protocol"]


def test_builders_that_take_num_classes_get_the_datasets(files, tmp_path):
    net, meta = resolve_model("ext_model_builders:any_width", classes=10)  # its own default is 1000
    assert net[-1].out_features == 10 and meta["model"]["num_classes"] == 10
    assert meta["model"]["class_count_source"] == "dataset"
    net, meta = resolve_model("ext_model_builders:any_width", ModelOptions(num_classes=7), classes=10)
    assert net[-1].out_features == 7 and meta["model"]["class_count_source"] == "argument"
    from safetensors.torch import save_file
    from ext_model_builders import build

    save_file(build(num_classes=10).state_dict(), str(tmp_path / "r18.safetensors"))
    net, meta = resolve_model("torchvision:resnet18", ModelOptions(weights=str(tmp_path / "r18.safetensors")),
                              classes=10)
    assert net.fc.out_features == 10 and meta["model"]["num_classes"] == 10
    # the weights' head says 10 classes on a 3-class dataset: the model is what the weights say
    net, meta = resolve_model("torchvision:resnet18", ModelOptions(weights=str(tmp_path / "r18.safetensors")),
                              classes=3)
    assert net.fc.out_features == 10 and meta["model"]["class_count_source"] == "weights"
    pytest.importorskip("timm")
    net, meta = resolve_model("timm:resnet18", ModelOptions(weights=str(tmp_path / "r18.safetensors")), classes=10)
    assert meta["model"]["num_classes"] == 10 and net.get_classifier().out_features == 10


def test_without_a_dataset_the_count_must_be_given():
    with pytest.raises(UsageError, match="number of classes is unknown"):
        resolve_model(five_outputs())


@pytest.mark.parametrize("options, match", [
    ({}, r"returned \(16, 5\).*outputs 5 scores per image but dataset gen:digits has 10 classes"),
    ({"num_classes": 10}, r"outputs 5 scores per image but num_classes is 10 \(--num-classes\); pass --num-classes 5"),
])
def test_an_output_width_other_than_the_class_count_is_exit_3(options, match):
    with pytest.raises(InputError, match=match):
        qact_cli.evaluate(five_outputs(), **options, **DATA)


def test_evaluate_leaves_the_callers_module_as_it_came():
    model = small_cnn().train()
    model[1].eval()  # a mixed state, kept as it was
    before = [m.training for m in model.modules()]
    qact_cli.evaluate(model, **DATA)
    assert [m.training for m in model.modules()] == before
    bad = five_outputs().train()
    with pytest.raises(InputError):
        qact_cli.evaluate(bad, **DATA)
    assert all(m.training for m in bad.modules())


def test_declared_probabilities_are_scored_as_such():
    doc = qact_cli.evaluate(softmax_cnn(), outputs="probs", **DATA)
    _same(doc, numpy_reference(softmax_cnn(), *IMAGENET, probs=True))
    assert doc["model"]["outputs"] == "probs" and doc["model"]["channels"] == 3
    with pytest.raises(InputError, match="pass --outputs probs"):
        qact_cli.evaluate(softmax_cnn(), **DATA)


def test_a_grayscale_model_with_channels_1():
    doc = qact_cli.evaluate(gray_cnn(), channels=1, **DATA)  # the documented 1-channel default statistics
    assert doc["model"]["channels"] == 1 and doc["model"]["mean"] == [0.4590] and doc["model"]["std"] == [0.2256]
    _same(doc, numpy_reference(gray_cnn(), [0.4590], [0.2256], gray=True))
    doc = qact_cli.evaluate(gray_cnn(), channels=1, mean=0.5, std="0.25", **DATA)
    _same(doc, numpy_reference(gray_cnn(), [0.5], [0.25], gray=True))


def test_channel_counts_are_checked_across_sources(tmp_path):
    with pytest.raises(UsageError, match=r"mean \(--mean\) must be 1 number"):
        resolve_model(gray_cnn(), ModelOptions(channels=1, mean=[0.5, 0.5, 0.5]), classes=10)
    with pytest.raises(UsageError, match="unknown --channels .2.; choose one of 1, 3"):
        resolve_model(gray_cnn(), ModelOptions(channels=2), classes=10)
    with pytest.raises(UsageError, match=r"mean \(--mean\) has 1 value\(s\) but the model takes 3 channel"):
        resolve_model(small_cnn(), ModelOptions(mean=[0.5]), classes=10)
    card = tmp_path / "gray.yaml"
    card.write_text("model: ext_model_builders:gray_cnn\nchannels: '1'\noutputs: logits\n")
    _, meta = resolve_model(str(card), ModelOptions(mean="0.4", std="0.2"), classes=10)  # the card says 1 channel
    assert meta["model"]["channels"] == 1 and meta["model"]["mean"] == [0.4] and meta["model"]["outputs"] == "logits"
    with pytest.raises(UsageError, match="has 3 value"):
        resolve_model(str(card), ModelOptions(mean="0.4,0.4,0.4"), classes=10)
