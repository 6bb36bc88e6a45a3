"""adapted(): BatchNorm statistics and QAct contexts re-estimated on test batches, then restored."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from qact_cli.models import build_model
from qact_cli.nn import QAct, adapted


def net(act: str) -> nn.Module:
    torch.manual_seed(0)
    a = QAct(4, context_size=64) if act == "qact" else nn.ReLU()
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), a, nn.Dropout(0.5),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))


def train_a_little(model: nn.Module) -> None:
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(8, 3, 5, 5))
    model.eval()


def snapshot(model: nn.Module) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("act", ["relu", "qact"])
def test_adapted_reestimates_then_restores_exactly(act):
    model = net(act)
    train_a_little(model)
    before = snapshot(model)
    g = torch.Generator().manual_seed(1)
    batches = [torch.randn(8, 3, 5, 5, generator=g) * 3 + 2 for _ in range(4)]
    bn = model[1]
    with adapted(model, batches) as m:
        assert m is model and not any(mod.training for mod in m.modules())
        # cumulative average over the batches (momentum=None), as the eval protocol wants
        conv_out = [model[0](b) for b in batches]
        expected_mean = torch.stack([o.mean((0, 2, 3)) for o in conv_out]).mean(0)
        assert torch.allclose(bn.running_mean, expected_mean, atol=1e-4)
        assert int(bn.num_batches_tracked) == 4
        if act == "qact":
            assert int(model[2].stored_batches) == 4
            assert not torch.equal(model[2].stored_context, before["2.stored_context"])
        with torch.no_grad():
            adapted_out = m(batches[0])
    after = snapshot(model)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert bn.momentum == 0.1 and not model.training
    if act == "qact":
        assert model[2].context_momentum == 0.5 and model[2].bn_in.momentum == 0.1
    with torch.no_grad():
        assert not torch.allclose(model(batches[0]), adapted_out)


def test_adapted_restores_on_error_and_refuses_no_batches():
    model = net("qact")
    train_a_little(model)
    model.train()
    before = snapshot(model)
    with pytest.raises(RuntimeError, match="boom"):
        with adapted(model, [torch.randn(4, 3, 5, 5)]):
            raise RuntimeError("boom")
    with pytest.raises(ValueError, match="no batches"):
        with adapted(model, []):
            pass
    after = snapshot(model)
    assert all(torch.equal(before[k], after[k]) for k in before) and model.training


def test_adapt_after_an_inference_mode_pass():
    """Eval under inference_mode, then adapt under no_grad (what `qact eval --adapt bn` and compare do, cell
    after cell): QAct's reused CPU scratch buffer must not become an inference tensor on the way."""
    from qact_cli.nn.qact import lookup as qact_module
    from qact_cli.nn.qact import native

    if native.kernel() != "torch":
        pytest.skip("the scratch buffer belongs to the default torch kernels (QACT_KERNEL is set)")
    if hasattr(qact_module._SCRATCH, "buf"):
        del qact_module._SCRATCH.buf  # so that the inference-mode pass below allocates it
    model = build_model("lenet", "qact", 10).eval()
    assert any(getattr(m, "inplace", False) for m in model.modules())  # in place is the default
    x = torch.randn(64, 3, 32, 32)
    with torch.inference_mode():
        before = model(x)
    assert qact_module._SCRATCH.buf.numel() > 0 and not qact_module._SCRATCH.buf.is_inference()
    with torch.no_grad(), adapted(model, [x.clone(), x.clone()]):
        model(x)
    with torch.inference_mode():
        assert torch.equal(model(x), before)
