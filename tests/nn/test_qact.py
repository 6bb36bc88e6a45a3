"""QAct against a brute-force float64 reference: values, grounding, monotonicity, layouts, gradients."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qact_cli.nn import QAct, make_activation
from qact_cli.nn.qact import REFINE, grounded_table, table_lookup
from qact_cli.nn.qact.reference import exact_cdf


def check_levy(ctx: torch.Tensor, table, x: torch.Tensor, y: torch.Tensor, refine: int) -> None:
    """y(x) lies between the exact CDF one grid cell either side of x, give or take one knot weight."""
    for ch in range(ctx.shape[0]):
        c = ctx[ch].double().numpy()
        cell = refine / float(table.inv_step[ch])
        w = 0.5 / (min((c < 0).sum(), (c >= 0).sum()) + 1) + 1e-5
        xs = x[ch].double().numpy()
        lo, hi = exact_cdf(c, xs - cell), exact_cdf(c, xs + cell)
        got = y[ch].double().numpy()
        assert np.all(got >= lo - w) and np.all(got <= hi + w), (ch, np.max(lo - w - got), np.max(got - hi - w))


values = st.lists(st.one_of(st.floats(-6, 6, allow_nan=False, width=32), st.sampled_from([0.0, 1.5, -2.0])),
                  min_size=1, max_size=120)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values, st.integers(0, 3))
def test_table_within_a_cell_of_the_exact_cdf(vals, shift):
    """Random and adversarial contexts (ties, zeros, one sign, one value): the output is the exact
    grounded CDF up to one grid cell horizontally and one knot weight vertically."""
    ctx = torch.tensor(vals, dtype=torch.float32)[None] + float(shift) * (shift % 2)
    table = grounded_table(ctx, table_size=64, density=False)
    probe = torch.cat([ctx, torch.linspace(-8, 8, 33)[None], torch.tensor([[0.0, 150.0, -150.0]])], 1)
    y = table_lookup(table, probe[:, :, None].transpose(0, 1).reshape(1, 1, -1)).reshape(1, -1)
    assert torch.all((y >= 0) & (y <= 1))
    check_levy(ctx, table, probe, y, refine=REFINE)


def test_layer_matches_reference_closely_on_smooth_data():
    torch.manual_seed(0)
    z = torch.randn(4000, 3) * torch.tensor([1.0, 3.0, 0.5]) + torch.tensor([0.0, 1.0, -0.2])
    layer = QAct(3, wrap_bn=False, context_size=None)
    with torch.no_grad():
        y = layer(z)
    for ch in range(3):
        ref = exact_cdf(z[:, ch].double().numpy(), z[:, ch].double().numpy())
        assert np.abs(y[:, ch].double().numpy() - ref).max() < 0.01


def test_grounding_and_monotone():
    torch.manual_seed(1)
    z = torch.randn(40000, 2) + torch.tensor([1.5, -1.5])  # mostly positive / mostly negative channels
    layer = QAct(2, wrap_bn=False, context_size=None)
    with torch.no_grad():
        layer(z)  # fills the stored context
        layer.eval()
        layer.context = "stored"
        grid = torch.linspace(-5, 5, 1001)[:, None].expand(-1, 2).contiguous()
        y = layer(grid)
        at0 = layer(torch.zeros(1, 2))
    assert torch.all(y[1:] >= y[:-1])  # monotone
    assert torch.all(y[grid < 0] < 0.5) and torch.all(y[grid > 0] > 0.5)
    # 0 -> 1/2 whatever the mass on each side (to within a lookup cell: 1/16 of a grid cell here)
    assert torch.allclose(at0, torch.full_like(at0, 0.5), atol=2e-3)
    assert torch.all((y >= 0) & (y <= 1))


def test_all_positive_channel_keeps_half_mass_below_zero():
    z = torch.rand(500, 1) + 0.1
    layer = QAct(1, wrap_bn=False, context_size=None)
    with torch.no_grad():
        layer(z)
        layer.eval()
        layer.context = "stored"
        y = layer(torch.tensor([[-1.0], [0.0], [0.05], [2.0]]))[:, 0]
    assert 0.45 < y[0] < 0.5 and abs(y[1] - 0.5) < 1e-3 and 0.5 < y[2] < 0.51 and y[3] > 0.99


def test_conv_and_dense_layouts_agree():
    torch.manual_seed(2)
    x = torch.randn(4, 3, 5, 6)
    conv, dense = QAct(3, wrap_bn=False, context_size=None), QAct(3, wrap_bn=False, context_size=None)
    with torch.no_grad():
        yc = conv(x)
        yd = dense(x.permute(0, 2, 3, 1).reshape(-1, 3))
    assert torch.equal(yc.permute(0, 2, 3, 1).reshape(-1, 3), yd)


def test_step_output_is_the_official_staircase():
    torch.manual_seed(3)
    layer = QAct(2, wrap_bn=False, output="step", n_quantiles=100, context_size=None)
    with torch.no_grad():
        y = layer(torch.randn(2000, 2))
    levels = torch.arange(1, 101) / 101
    assert torch.isin(torch.round(y * 101), torch.round(levels * 101)).all()
    assert 90 <= torch.unique(y[:, 0]).numel() <= 100


def test_gradient_is_the_grounded_density():
    """Symmetric N(0,1) context: the grounded distribution is N(0,1), its Gaussian KDE (h = 0.5)
    the N(0, 1.25) density."""
    torch.manual_seed(4)
    z = torch.randn(16384, 2, requires_grad=True)
    QAct(2, wrap_bn=False, context_size=4096, kde_samples=4096)(z).sum().backward()
    zz = z.detach()
    expected = torch.exp(-zz**2 / 2.5) / math.sqrt(2 * math.pi * 1.25)
    inner = zz.abs() < 2.5
    assert (z.grad - expected)[inner].abs().max() < 0.03
    assert torch.all(z.grad >= 0)


def test_gradient_bandwidth_rules():
    torch.manual_seed(5)
    for rule in ("silverman", "scott"):
        z = torch.randn(8192, 1, requires_grad=True)
        QAct(1, wrap_bn=False, bandwidth=rule)(z).sum().backward()
        phi = torch.exp(-z.detach() ** 2 / 2) / math.sqrt(2 * math.pi)
        inner = z.detach().abs() < 2
        assert (z.grad - phi)[inner].abs().max() < 0.06, rule


def test_gradient_flows_through_the_wrapped_layer():
    torch.manual_seed(6)
    layer = QAct(4)
    x = torch.randn(8, 4, 3, 3, requires_grad=True)
    (layer(x) * torch.randn(8, 4, 3, 3)).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for p in layer.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()


def test_small_qact_mlp_learns_xor():
    torch.manual_seed(7)
    x = torch.rand(512, 2) * 2 - 1
    y = ((x[:, 0] > 0) ^ (x[:, 1] > 0)).long()
    net = torch.nn.Sequential(torch.nn.Linear(2, 32), QAct(32), torch.nn.Linear(32, 2))
    opt = torch.optim.Adam(net.parameters(), lr=0.02)
    for _ in range(150):
        idx = torch.randint(0, 512, (256,))
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        acc = (net(x).argmax(1) == y).float().mean()
    assert acc > 0.9  # a linear model gets about 0.5


def test_make_activation_builds_qact():
    act = make_activation("qact", 5, context_size=512)
    assert isinstance(act, QAct) and act.context_size == 512


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float64])
def test_other_dtypes(dtype):
    layer = QAct(3)
    x = torch.randn(16, 3, 4, 4, dtype=dtype)
    with torch.no_grad():
        y_train = layer.to(dtype)(x)
        layer.eval()
        y_eval = layer(x)
    assert y_train.dtype == dtype and y_eval.dtype == dtype
    assert torch.isfinite(y_train).all() and torch.isfinite(y_eval).all()


def _layouts(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The same values as x (N, C, H, W) in non-contiguous memory layouts."""
    n, c, h, w = x.shape
    wide = torch.randn(n, c + 2, h, w + 3)
    wide[:, 1:c + 1, :, 2:w + 2] = x
    return {"permuted": x.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2),
            "channels_last": x.contiguous(memory_format=torch.channels_last),
            "sliced": wide[:, 1:c + 1, :, 2:w + 2],
            "issue": x.reshape(n, c, h * w).permute(0, 2, 1).contiguous().permute(0, 2, 1).reshape(n, c, h, w)}


def _run(layer: QAct, x: torch.Tensor, grad: bool, up: torch.Tensor):
    x = x.detach().clone(memory_format=torch.preserve_format).requires_grad_(grad)
    torch.manual_seed(11)  # the training context sample is random
    with torch.set_grad_enabled(grad):
        y = layer(x)
    if grad:
        (y * up).sum().backward()
    return y.detach(), (x.grad if grad else None)


@pytest.mark.parametrize("wrap_bn", [False, True])
@pytest.mark.parametrize("mode", ["train", "batch", "stored"])
@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("output", ["interp", "step"])
def test_non_contiguous_inputs_match_contiguous(wrap_bn, mode, grad, output):
    """Permuted, channels_last and sliced inputs give the outputs and gradients of the same values
    made contiguous (a non-contiguous index once raised a false 'NaN values' error in training)."""
    torch.manual_seed(12)
    x = torch.randn(32, 3, 8, 8) * torch.tensor([1.0, 2.0, 0.5])[:, None, None] + 0.3
    up = torch.randn(32, 3, 8, 8)
    base = QAct(3, wrap_bn=wrap_bn, context_size=None, output=output)
    with torch.no_grad():
        base(torch.randn(64, 3, 8, 8))  # a stored context, and BatchNorm running stats
    if mode != "train":
        base.eval()
        base.context = mode
    y_ref, g_ref = _run(copy.deepcopy(base), x.contiguous(), grad, up)
    for name, xl in _layouts(x).items():
        assert not xl.is_contiguous() and torch.equal(xl, x), name
        y, g = _run(copy.deepcopy(base), xl, grad, up)
        assert torch.equal(y, y_ref), (name, (y - y_ref).abs().max())
        if grad:  # BatchNorm's backward sums over the batch in the layout's order: float32 rounding
            tol = 1e-5 if wrap_bn else 0.0
            assert torch.allclose(g, g_ref, atol=tol, rtol=0), (name, (g - g_ref).abs().max())
        if not wrap_bn and output == "interp" and mode != "stored":  # the context is this batch: the float64 reference
            for ch in range(3):
                vals = x[:, ch].double().numpy().ravel()
                assert np.abs(y[:, ch].double().numpy().ravel() - exact_cdf(vals, vals)).max() < 0.01, (name, ch)
