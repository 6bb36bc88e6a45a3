import pytest
import torch

from qact_cli.models import build_model


@pytest.mark.parametrize("arch,kwargs", [("lenet", {}), ("resnet18", {}), ("vgg11", {}), ("densenet", {"depth": 40})])
@pytest.mark.parametrize("act", ["relu", "prelu", "selu"])
def test_every_arch_and_activation(arch, kwargs, act):
    torch.manual_seed(0)
    net = build_model(arch, act=act, num_classes=7, **kwargs)
    x = torch.randn(4, 3, 32, 32)
    logits, feats = net(x, return_features=True)
    assert logits.shape == (4, 7) and feats.shape == (4, net.embed_dim)
    logits.sum().backward()


def test_densenet_is_about_one_million_parameters():
    n = sum(p.numel() for p in build_model("densenet").parameters())
    assert 0.7e6 < n < 1.1e6


def test_resnet18_is_cifar_style():
    net = build_model("resnet18")
    stem = net.body[0]
    assert stem.kernel_size == (3, 3) and stem.stride == (1, 1)
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in net.modules())
    assert 11.0e6 < sum(p.numel() for p in net.parameters()) < 11.3e6


def test_lenet_other_input_size():
    net = build_model("lenet", input_size=(28, 28))
    assert net(torch.randn(2, 3, 28, 28)).shape == (2, 10)


def test_unknown_names():
    with pytest.raises(ValueError, match="unknown arch"):
        build_model("alexnet")
    with pytest.raises(ValueError, match="unknown activation"):
        build_model("lenet", act="gelu")
