"""Models from elsewhere: torchvision / timm / module:callable specs, model cards, weights files and
archives resolve to the same network as the original, and every bad input is one clear error."""

import os
import pathlib
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file

from qact_cli.errors import InputError, UsageError
from qact_cli.models.external import ModelOptions, load_model, resolve_model

from ext_model_builders import build

REPO = Path(__file__).resolve().parents[2]
X = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def net():
    return build(num_classes=10, seed=0)


@pytest.fixture(scope="module")
def expected(net):
    with torch.no_grad():
        return net(X)


@pytest.fixture(scope="module")
def files(net, tmp_path_factory):
    d = tmp_path_factory.mktemp("weights")
    sd = net.state_dict()
    save_file({k: v.contiguous() for k, v in sd.items()}, d / "r18.safetensors")
    torch.save({f"module.{k}": v for k, v in sd.items()}, d / "r18_ddp.pt")
    return d


@pytest.fixture
def in_repo(monkeypatch):
    monkeypatch.chdir(REPO)  # module:callable specs import from the working directory


def _out(model):
    with torch.no_grad():
        return model(X)


def test_torchvision_safetensors_and_prefixed_state_dict(files, expected):
    for name in ("r18.safetensors", "r18_ddp.pt"):
        model, meta = resolve_model("torchvision:resnet18", ModelOptions(weights=str(files / name), num_classes=10))
        assert not model.training
        assert torch.equal(_out(model), expected)
        info = meta["model"]
        assert info["spec"] == "torchvision:resnet18" and info["arch"] == "resnet18" and info["num_classes"] == 10
        assert info["weights"] == str(files / name) and len(info["weights_sha256"]) == 64
        assert info["input_size"] is None and info["resize"] is None and info["classes"] is None
        assert len(info["mean"]) == 3 and len(info["std"]) == 3 and info["preprocess_source"] == "default"
        assert meta["path"] == str(files / name)


def test_lightning_style_state_dict(files, net, expected, tmp_path):
    torch.save({"epoch": 3, "state_dict": {f"model.{k}": v for k, v in net.state_dict().items()}}, tmp_path / "l.ckpt")
    model, _ = load_model("torchvision:resnet18", weights=str(tmp_path / "l.ckpt"), num_classes=10)
    assert torch.equal(_out(model), expected)


def test_card_file_and_dict(files, expected, tmp_path):
    card = tmp_path / "cards" / "r18.yaml"
    card.parent.mkdir()
    (card.parent / "names.txt").write_text("\n".join(f"c{i}" for i in range(10)) + "\n")
    rel = os.path.relpath(files / "r18.safetensors", card.parent)
    card.write_text(yaml.safe_dump({"model": "torchvision:resnet18", "weights": rel, "num_classes": 10,
                                    "input_size": 32, "resize": "bilinear", "mean": [0.5, 0.5, 0.5],
                                    "std": [0.25, 0.25, 0.25], "class_names": "names.txt", "features": "avgpool"}))
    model, meta = resolve_model(str(card))
    assert torch.equal(_out(model), expected)
    info = meta["model"]
    assert info["input_size"] == [32, 32] and info["resize"] == "bilinear" and info["mean"] == [0.5] * 3
    assert info["classes"] == [f"c{i}" for i in range(10)] and info["class_source"] == "card"
    assert info["features"] == "avgpool" and info["card"] == str(card) and meta["path"] == str(card)
    assert info["preprocess_source"] == "card"
    # explicit options override the card's values
    _, meta = resolve_model(str(card), ModelOptions(mean=[0.1, 0.2, 0.3], class_names="cifar10"))
    assert meta["model"]["mean"] == [0.1, 0.2, 0.3] and meta["model"]["classes"][0] == "airplane"
    assert meta["model"]["class_source"] == "argument"
    # a file.py:callable next to the card, found from the card's folder whatever the working directory
    (card.parent / "builders.py").write_text((REPO / "tests" / "ext_model_builders.py").read_text())
    (card.parent / "code.yml").write_text("model: builders.py:build\nmodel_kwargs: {num_classes: 10, seed: 0}\n")
    model, meta = resolve_model(card.parent / "code.yml")
    assert torch.equal(_out(model), expected) and meta["model"]["spec"] == f"{card.parent / 'builders.py'}:build"
    model, meta = load_model({"model": "torchvision:resnet18", "weights": str(files / "r18.safetensors"),
                              "num_classes": 10, "class_names": "digits"})
    assert torch.equal(_out(model), expected) and meta["model"]["classes"] == [str(i) for i in range(10)]


def test_callable_spec_module_and_file(files, expected, in_repo):
    model, meta = resolve_model("tests.ext_model_builders:build", ModelOptions(model_kwargs={"num_classes": 10, "seed": 0}))
    assert torch.equal(_out(model), expected)
    assert meta["model"]["num_classes"] == 10 and meta["model"]["source"] == "callable"
    # other seeded weights, replaced by the file: the file's weights win
    model, meta = resolve_model("tests.ext_model_builders:build",
                                ModelOptions(weights=str(files / "r18_ddp.pt"), model_kwargs='{"seed": 5}'))
    assert torch.equal(_out(model), expected) and meta["model"]["model_kwargs"] == {"seed": 5}
    model, _ = load_model(f"{REPO / 'tests' / 'ext_model_builders.py'}:build", num_classes=10)
    assert torch.equal(_out(model), expected)


def test_nn_module(net, expected):
    model, meta = load_model(net, num_classes=10, class_names=[str(i) for i in range(10)], input_size=[32, 32])
    assert torch.equal(_out(model), expected)
    assert meta["path"] is None and meta["model"]["spec"] == "module" and meta["model"]["class_source"] == "argument"
    with pytest.raises(UsageError, match="num_classes"):
        load_model(net)
    # a Python card may carry the module; CLI-style strings are parsed
    model, meta = load_model({"model": net, "num_classes": 10, "input_size": "32,48", "mean": "0.1,0.2,0.3",
                              "features": "layer4"})
    assert model is net and meta["model"]["input_size"] == [32, 48] and meta["model"]["mean"] == [0.1, 0.2, 0.3]
    assert meta["model"]["features"] == "layer4" and meta["model"]["card"] == "dict"
    with pytest.raises(UsageError, match="unknown argument.*wieghts"):
        load_model(net, wieghts="x")


def test_refusals(files, net, tmp_path, in_repo):
    sf = str(files / "r18.safetensors")
    with pytest.raises(UsageError, match="unknown model spec prefix 'torchvison'.*did you mean torchvision"):
        resolve_model("torchvison:resnet18", ModelOptions(weights=sf))
    with pytest.raises(UsageError, match="did you mean torchvision"):
        resolve_model("torchvisio:resnet18", ModelOptions(weights=sf))
    with pytest.raises(UsageError, match="unknown torchvision model 'resnet81'.*did you mean resnet18"):
        resolve_model("torchvision:resnet81", ModelOptions(weights=sf))
    with pytest.raises(UsageError, match="needs weights"):
        resolve_model("torchvision:resnet18", ModelOptions(num_classes=10))
    with pytest.raises(InputError, match=r"shape fc.weight \[10, 512\] in file vs \[1000, 512\].*--num-classes"):
        resolve_model("torchvision:resnet18", ModelOptions(weights=sf))
    with pytest.raises(InputError, match=r"missing layer1.2.conv1.weight, .*\(\+77 more\)"):
        resolve_model("torchvision:resnet34", ModelOptions(weights=str(files / "r18_ddp.pt"), num_classes=10))
    sd = {k: v for k, v in net.state_dict().items() if not k.startswith("fc.")}
    sd["extra.weight"] = torch.zeros(1)
    torch.save(sd, tmp_path / "partial.pt")
    with pytest.raises(InputError, match=r"missing fc.weight, fc.bias; unexpected extra.weight"):
        resolve_model("torchvision:resnet18", ModelOptions(weights=str(tmp_path / "partial.pt"), num_classes=10))
    with pytest.raises(InputError, match="returned dict, not a torch.nn.Module"):
        resolve_model("tests.ext_model_builders:not_a_module", ModelOptions(num_classes=10))
    with pytest.raises(InputError, match="raised ValueError: no such variant"):
        resolve_model("tests.ext_model_builders:raises", ModelOptions(num_classes=10))
    with pytest.raises(InputError, match="cannot import tests.ext_model_broken: ModuleNotFoundError.*qact_cli_no_such"):
        resolve_model("tests.ext_model_broken:build", ModelOptions(num_classes=10))
    with pytest.raises(UsageError, match="has no attribute 'biuld'.*did you mean build"):
        resolve_model("tests.ext_model_builders:biuld", ModelOptions(num_classes=10))
    with pytest.raises(InputError, match="model not found"):
        resolve_model(str(tmp_path / "nothing.pt"))
    with pytest.raises(InputError, match="weights file not found"):
        resolve_model("torchvision:resnet18", ModelOptions(weights=str(tmp_path / "nothing.safetensors")))
    with pytest.raises(InputError, match="is a weights file, not a model"):
        resolve_model(sf)
    with pytest.raises(UsageError, match="0..1 scale"):
        resolve_model("torchvision:resnet18", ModelOptions(weights=sf, num_classes=10, mean=[123.7, 116.3, 103.5]))
    with pytest.raises(UsageError, match="3 class names for num_classes 10"):
        resolve_model("torchvision:resnet18", ModelOptions(weights=sf, num_classes=10, class_names="a,b,c"))


def test_card_refusals(files, tmp_path):
    card = tmp_path / "bad.yaml"
    card.write_text("model: torchvision:resnet18\nweigths: w.safetensors\n")
    with pytest.raises(UsageError, match="unknown key.*weigths.*valid keys: model, weights"):
        resolve_model(str(card))
    (tmp_path / "outer.yml").write_text("model: bad.yaml\n")
    with pytest.raises(UsageError, match="names another model card"):
        resolve_model(str(tmp_path / "outer.yml"))
    card.write_text(f"model: torchvision:resnet18\nweights: {files / 'r18.safetensors'}\nnum_classes: 10\n"
                    "features: avgpol\n")
    with pytest.raises(InputError, match="features 'avgpol' is not a module.*did you mean avgpool"):
        resolve_model(str(card))
    card.write_text("model: [1, 2\n")
    with pytest.raises(InputError, match="not valid YAML"):
        resolve_model(str(card))


def test_truncated_safetensors(files, tmp_path):
    data = (files / "r18.safetensors").read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated"):
        resolve_model("torchvision:resnet18", ModelOptions(weights=str(tmp_path / "cut.safetensors"), num_classes=10))


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):  # unpickling this would create the marker file
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_pickle_payload_never_runs(net, tmp_path):
    marker = tmp_path / "ran"
    sd = dict(net.state_dict())
    sd["payload"] = _Payload(str(marker))
    torch.save(sd, tmp_path / "evil.pt")
    with pytest.raises(InputError, match="refusing to load .*pickled objects"):
        resolve_model("torchvision:resnet18", ModelOptions(weights=str(tmp_path / "evil.pt"), num_classes=10))
    torch.save(net, tmp_path / "whole_module.pt")  # a pickled nn.Module is refused too
    with pytest.raises(InputError, match="refusing to load"):
        resolve_model("torchvision:resnet18", ModelOptions(weights=str(tmp_path / "whole_module.pt"), num_classes=10))
    assert not marker.exists()


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch deprecates jit.trace/save; users still ship .ts files
def test_archives_need_trust(tmp_path):
    torch.manual_seed(0)
    small = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 4)).eval()
    want = _out(small)
    torch.jit.save(torch.jit.trace(small, X), str(tmp_path / "m.ts"))
    torch.jit.save(torch.jit.trace(small, X), str(tmp_path / "m.pt"))  # a TorchScript zip under another name
    for name in ("m.ts", "m.pt"):
        with pytest.raises(InputError, match="TorchScript archive.*can run code.*--trust-model-file"):
            resolve_model(str(tmp_path / name), ModelOptions(num_classes=4))
        model, meta = resolve_model(str(tmp_path / name), ModelOptions(num_classes=4, trust_model_file=True))
        assert torch.equal(_out(model), want) and meta["model"]["source"] == "torchscript"
        assert meta["model"]["weights_sha256"] and meta["path"] == str(tmp_path / name)
    torch.export.save(torch.export.export(small, (X,)), str(tmp_path / "m.pt2"))
    with pytest.raises(InputError, match="torch.export archive.*--trust-model-file"):
        resolve_model(str(tmp_path / "m.pt2"), ModelOptions(num_classes=4))
    model, meta = resolve_model(str(tmp_path / "m.pt2"), ModelOptions(num_classes=4, trust_model_file=True))
    assert torch.allclose(_out(model), want) and meta["model"]["source"] == "export"


def test_torchvision_weights_name_offline(tmp_path, monkeypatch):
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    hub = tmp_path / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    with pytest.raises(InputError, match=f"not found at {hub}.*--download"):
        resolve_model("torchvision:resnet18", ModelOptions(weights="IMAGENET1K_V1"))
    torch.manual_seed(3)
    ref = torchvision.models.resnet18().eval()
    hub.parent.mkdir(parents=True)
    torch.save(ref.state_dict(), hub)
    for weights in ("IMAGENET1K_V1", "DEFAULT", "ResNet18_Weights.IMAGENET1K_V1"):
        model, meta = resolve_model("torchvision:resnet18", ModelOptions(weights=weights))
        assert torch.equal(_out(model), _out(ref))
        info = meta["model"]
        assert info["num_classes"] == 1000 and info["classes"][0] == "tench" and info["class_source"] == "weights"
        assert info["input_size"] == [224, 224] and info["resize"] == "bilinear" and info["preprocess_source"] == "weights"
        assert info["weights"] == "ResNet18_Weights.IMAGENET1K_V1" and meta["path"] == str(hub)
    with pytest.raises(UsageError, match="has no weights 'IMAGENET1K_V9'.*IMAGENET1K_V1"):
        resolve_model("torchvision:resnet18", ModelOptions(weights="IMAGENET1K_V9"))
    with pytest.raises(UsageError, match="1000 classes, not num_classes 10"):
        resolve_model("torchvision:resnet18", ModelOptions(weights="DEFAULT", num_classes=10))
    marker = tmp_path / "ran"
    torch.save({**ref.state_dict(), "x": _Payload(str(marker))}, hub)  # a poisoned cache file never runs
    with pytest.raises(InputError, match="refusing to load"):
        resolve_model("torchvision:resnet18", ModelOptions(weights="DEFAULT"))
    assert not marker.exists()


def test_model_kwargs_reach_the_builder(files):
    with pytest.raises(UsageError, match="torchvision:resnet18 does not take these arguments.*--model-kwargs"):
        resolve_model("torchvision:resnet18", ModelOptions(weights=str(files / "r18.safetensors"), num_classes=10,
                                                           model_kwargs={"no_such_arg": 1}))
    model, _ = resolve_model("torchvision:resnet18", ModelOptions(weights=str(files / "r18.safetensors"), num_classes=10,
                                                                  model_kwargs={"zero_init_residual": True}))
    assert model.fc.out_features == 10


def test_timm(tmp_path):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    ref = timm.create_model("test_resnet", pretrained=False, num_classes=10).eval()
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, tmp_path / "t.safetensors")
    model, meta = resolve_model("timm:test_resnet", ModelOptions(weights=str(tmp_path / "t.safetensors"), num_classes=10))
    assert torch.equal(_out(model), _out(ref))
    # the user's weights: timm's pretrained config (which describes timm's own weights) is not applied
    info = meta["model"]
    assert info["input_size"] is None and info["resize"] is None and info["preprocess_source"] == "default"
    assert info["preprocessing_source"] == dict.fromkeys(("input_size", "resize", "mean", "std"), "default")
    with pytest.raises(UsageError, match="unknown timm model 'tset_resnet'.*did you mean"):
        resolve_model("timm:tset_resnet", ModelOptions(weights=str(tmp_path / "t.safetensors")))


def test_timm_missing(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "timm", None)  # `import timm` now raises ImportError
    with pytest.raises(InputError, match=r'pip install "qact\[timm\]"'):
        resolve_model("timm:resnet10t", ModelOptions(weights="w.safetensors"))


def test_checkpoint_refuses_model_options(digits_ckpt):
    model, meta = resolve_model(str(digits_ckpt))
    assert meta["model"]["classes"] == [str(i) for i in range(10)] and meta["model"]["class_source"] == "checkpoint"
    with pytest.raises(UsageError, match="qact checkpoint.*drop weights"):
        resolve_model(str(digits_ckpt), ModelOptions(weights="w.safetensors"))
    _, meta = load_model(str(digits_ckpt), features="body")  # a probe's feature module may name a checkpoint's
    assert meta["model"]["features"] == "body" and meta["path"] == str(digits_ckpt)
    with pytest.raises(InputError, match="features 'bdy' is not a module.*did you mean body"):
        load_model(str(digits_ckpt), features="bdy")
