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


@pytest.mark.parametrize("arch,kwargs", [("lenet", {}), ("resnet18", {"widths": (8, 16, 16, 16)}), ("vgg11", {}),
                                         ("densenet", {"depth": 40})])
def test_qact_slots_into_every_arch(arch, kwargs):
    from qact_cli.nn import QAct, set_context

    torch.manual_seed(0)
    net = build_model(arch, act="qact", num_classes=5, head="quantile", **kwargs)
    assert any(isinstance(m, QAct) for m in net.modules())
    x = torch.randn(16, 3, 32, 32)
    logp = net(x)
    assert logp.shape == (16, 5) and torch.isfinite(logp).all()
    assert torch.allclose(torch.softmax(logp, 1).sum(1), torch.ones(16), atol=1e-5)
    logp.sum().backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)
    net.eval()
    set_context(net, "stored")
    a, b = net(x[:4]), net(x)[:4]  # stored context: a sample's output does not depend on its batch
    assert torch.allclose(a, b, atol=1e-4)


def test_official_placement_keeps_relu_inside_blocks():
    from qact_cli.nn import QAct

    net = build_model("resnet18", act="qact", placement="official")
    block = net.body[3]
    assert isinstance(block.act1, torch.nn.ReLU) and isinstance(block.act2, QAct)
    assert isinstance(net.body[2], QAct) and isinstance(net.pre_head, QAct)
