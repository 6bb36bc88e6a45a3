"""QAct contexts (batch / stored), state_dict round trips, eval folding and degenerate inputs."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from qact_cli.nn import QAct, set_context


def trained(layer: nn.Module, steps: int = 3, shape=(32, 3, 4, 4), seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    layer.train()
    with torch.no_grad():
        for _ in range(steps):
            layer(torch.randn(*shape, generator=g) * 2 + 1)
    return layer


def test_stored_context_round_trips_through_state_dict():
    torch.manual_seed(0)
    a = trained(QAct(3, context_size=256))
    assert int(a.stored_batches) == 3 and a.stored_context.shape == (3, 256)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    b = QAct(3, context_size=256)  # fresh, never run: its BatchNorms already exist
    b.load_state_dict(torch.load(io.BytesIO(buf.getvalue()), weights_only=True))
    assert torch.equal(a.stored_context, b.stored_context) and int(b.stored_batches) == 3
    x = torch.randn(5, 3, 4, 4)
    for m in (a, b):
        m.eval()
        set_context(m, "stored")
    with torch.no_grad():
        assert torch.equal(a(x), b(x))
        # a stored context makes per-sample inference possible and batch-independent
        assert torch.allclose(a(x[:1]), a(x)[:1])


def test_stored_context_survives_the_first_training_forward_after_loading():
    a = trained(QAct(2, context_size=128), shape=(16, 2))
    b = QAct(2, context_size=128)
    b.load_state_dict(a.state_dict())
    before = b.stored_context.clone()
    trained(b, steps=1, shape=(16, 2), seed=9)
    kept = (b.stored_context == before).float().mean()
    assert 0.3 < kept < 0.7  # momentum 0.5: half refreshed, not overwritten (the official code's bug)


def test_batch_context_in_eval_is_deterministic_and_uses_the_batch():
    layer = trained(QAct(3, context_size=64))
    layer.eval()
    x = torch.randn(8, 3, 8, 8)
    other = torch.cat([x[:1], torch.randn(7, 3, 8, 8) * 3 + 2])
    with torch.no_grad():
        assert torch.equal(layer(x), layer(x))  # the context positions come from a fixed seed in eval
        assert not torch.allclose(layer(x)[0], layer(other)[0], atol=1e-3)  # same sample, other context
        set_context(layer, "stored")
        assert torch.allclose(layer(x)[0], layer(other)[0])


def test_eval_fold_matches_the_unfolded_layer():
    layer = trained(QAct(3, context_size=None))
    layer.eval()
    x = torch.randn(16, 3, 6, 6)
    with torch.no_grad():
        folded = layer(x)
    unfolded = layer(x.requires_grad_(True))  # with autograd the BatchNorms stay separate modules
    rel = (folded - unfolded.detach()).abs().max() / unfolded.detach().std()
    assert rel < 0.05


def test_inplace_eval_writes_into_the_input():
    layer = trained(QAct(3))
    layer.eval()
    x = torch.randn(4, 3, 5, 5)
    with torch.no_grad():
        expected = layer(x.clone())
        layer.inplace = True
        got = layer(x)
    assert torch.equal(got, expected) and got.data_ptr() == x.data_ptr()


def test_set_context_switches_every_layer():
    net = nn.Sequential(nn.Linear(4, 5), QAct(5), nn.Linear(5, 5), QAct(5, wrap_bn=False))
    assert set_context(net, "stored") == 2
    assert all(m.context == "stored" for m in net.modules() if isinstance(m, QAct))
    with pytest.raises(ValueError, match="context"):
        set_context(net, "global")


def test_stored_mode_without_a_context_says_so():
    layer = QAct(2, context="stored").eval()
    with pytest.raises(ValueError, match="no stored context"):
        layer(torch.randn(4, 2))


def test_bad_arguments_are_refused():
    for kwargs in ({"output": "smooth"}, {"context": "cell"}, {"bandwidth": "wand"}, {"bandwidth": 0.0},
                   {"context_size": 1}, {"table_size": 4}):
        with pytest.raises(ValueError):
            QAct(3, **kwargs)
    with pytest.raises(ValueError, match="expects input"):
        QAct(3)(torch.randn(4, 2))
    with pytest.raises(ValueError, match="empty"):
        QAct(3)(torch.randn(0, 3))


@pytest.mark.parametrize("train", [True, False])
def test_degenerate_inputs_give_finite_outputs(train):
    layer = trained(QAct(4, context_size=128), shape=(16, 4, 3, 3))
    layer.train(train)
    cases = [torch.full((16, 4, 3, 3), 2.5),  # constant channels
             torch.randint(-1, 2, (16, 4, 3, 3)).float(),  # heavy ties, exact zeros
             torch.rand(16, 4, 3, 3) + 1,  # all positive
             torch.randn(1, 4, 3, 3),  # a conv batch of one
             torch.randn(16, 4, 3, 3) * 1e6]  # huge values
    with torch.no_grad():
        for x in cases:
            assert torch.isfinite(layer(x)).all()
    if not train:
        with torch.no_grad():
            assert torch.isfinite(layer(torch.tensor([[[[float("inf")]]] * 4]).reshape(1, 4, 1, 1))).all()


def test_a_dense_train_batch_of_one_is_a_clear_error():
    with pytest.raises(ValueError, match="more than 1 value"):
        QAct(3).train()(torch.randn(1, 3))


@pytest.mark.parametrize("wrap_bn,train", [(True, True), (False, True), (True, False), (False, False)])
def test_nan_input_is_an_error_or_finite_never_nan(wrap_bn, train):
    layer = trained(QAct(2, wrap_bn=wrap_bn, context_size=64), shape=(32, 2))
    layer.train(train)
    x = torch.randn(32, 2)
    x[5, 1] = float("nan")
    try:
        with torch.no_grad():
            y = layer(x)
    except ValueError as err:
        assert "NaN" in str(err)
    else:
        assert torch.isfinite(y).all()


def test_nan_in_training_is_caught_through_the_batchnorm():
    x = torch.randn(32, 2)
    x[3, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        QAct(2).train()(x)
