"""The opt-in native kernels (QACT_KERNEL=native): the same layer as the default torch path, bit for bit
in eval, to float rounding in training (outputs, every gradient, running statistics, reservoirs:
the BatchNorms' statistics are summed in another order)."""

from __future__ import annotations

import copy
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from qact_cli.nn import QAct
from qact_cli.nn.qact import native

needs_compiler = pytest.mark.skipif(not native.available(), reason="no C compiler: the native kernels cannot be built")


@pytest.fixture
def kernel():
    """Select a kernel for the test; the process default comes back afterwards."""
    yield native.set_kernel
    native.set_kernel(None)


def _layer(c: int, **kw) -> QAct:
    torch.manual_seed(0)
    layer = QAct(c, **kw)
    with torch.no_grad():
        for bn in (layer.bn_in, layer.bn_out):
            bn.weight.uniform_(0.5, 2.0)
            bn.bias.normal_()
    return layer


def _train_step(layer: QAct, x: torch.Tensor, g: torch.Tensor, name: str, kernel) -> tuple:
    kernel(name)
    x = x.detach().clone().requires_grad_()
    torch.manual_seed(1)  # the context sample's positions
    y = layer.train()(x)
    y.backward(g)
    grads = {n: p.grad.clone() for n, p in layer.named_parameters()}
    return y.detach(), x.grad, grads, {n: b.clone() for n, b in layer.named_buffers()}


@needs_compiler
@pytest.mark.parametrize("shape,output", [((48, 6, 7, 5), "interp"), ((200, 5), "interp"), ((32, 4, 6, 6), "step")])
def test_training_matches_the_torch_path(shape, output, kernel):
    base = _layer(shape[1], output=output)
    x = torch.randn(shape) * 3 + 1
    g = torch.randn(shape)
    got = _train_step(copy.deepcopy(base), x, g, "native", kernel)
    want = _train_step(copy.deepcopy(base), x, g, "torch", kernel)
    torch.testing.assert_close(got[0], want[0], atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(got[1], want[1], atol=1e-6, rtol=1e-4)
    for name in want[2]:
        torch.testing.assert_close(got[2][name], want[2][name], atol=1e-5, rtol=1e-4, msg=name)
    for name in want[3]:
        torch.testing.assert_close(got[3][name], want[3][name], atol=1e-5, rtol=1e-5, msg=name)


@needs_compiler
@pytest.mark.parametrize("context", ["batch", "stored"])
@pytest.mark.parametrize("output", ["interp", "step"])
def test_eval_gives_the_torch_paths_bits(context, output, kernel):
    layer = _layer(5, output=output, context=context, inplace=True)
    layer.train()(torch.randn(64, 5, 4, 4))  # a reservoir and running statistics
    layer.eval()
    x = torch.randn(16, 5, 6, 6) * 2
    with torch.no_grad():
        kernel("native")
        got = layer(x.clone())
        kernel("torch")
        want = layer(x.clone())
    assert torch.equal(got, want)  # one rounding for the position, as the torch path: the same cells


@needs_compiler
def test_several_threads_give_the_same_bits(kernel):
    kernel("native")
    base = _layer(8)
    x, g = torch.randn(64, 8, 16, 16), torch.randn(64, 8, 16, 16)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _train_step(copy.deepcopy(base), x, g, "native", kernel)
        torch.set_num_threads(3)
        three = _train_step(copy.deepcopy(base), x, g, "native", kernel)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one[0], three[0]) and torch.equal(one[1], three[1])
    assert all(torch.equal(one[2][k], three[2][k]) for k in one[2])


@needs_compiler
def test_nan_input_gives_an_error_or_a_finite_output(kernel):
    kernel("native")
    layer = _layer(2, context_size=64, context="stored")
    layer.train()(torch.randn(32, 2))
    x = torch.randn(32, 2)
    x[3, 1] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        layer.train()(x)
    with torch.no_grad():
        out = layer.eval()(x)  # the stored context has no NaN: only the lookup sees it
    assert torch.isfinite(out).all()


class _OwnBatchNorm(nn.BatchNorm1d):
    """A BatchNorm subclass (SyncBatchNorm, a user's own): the native path must not stand in for it."""


def _float64(layer: QAct) -> QAct:
    return layer.double()


def _own_bn(layer: QAct) -> QAct:
    layer.bn_out = _OwnBatchNorm(layer.num_features)
    return layer


@needs_compiler
@pytest.mark.parametrize("change,dtype", [(_float64, torch.float64), (_own_bn, torch.float32)])
def test_what_the_native_path_does_not_cover_stays_on_torch(change, dtype, kernel):
    """Where the kernels do not apply, autograd's BatchNorms run: the very bits of the torch path."""
    base = change(_layer(3))
    x, g = torch.randn(16, 3, 4, dtype=dtype), torch.randn(16, 3, 4, dtype=dtype)
    got = _train_step(copy.deepcopy(base), x, g, "native", kernel)
    want = _train_step(copy.deepcopy(base), x, g, "torch", kernel)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


@needs_compiler
def test_one_value_per_channel_is_batchnorms_own_error(kernel):
    kernel("native")
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        _layer(3).train()(torch.randn(1, 3))


def test_unknown_kernel_names(kernel, monkeypatch):
    with pytest.raises(ValueError, match="unknown qact kernel"):
        native.set_kernel("cuda")
    monkeypatch.setenv("QACT_KERNEL", "fast")
    with pytest.warns(RuntimeWarning, match="QACT_KERNEL='fast' is not a qact kernel"):
        assert native.kernel() == "torch"


def test_without_a_compiler_it_warns_once_and_keeps_torch(tmp_path):
    """A fresh process whose compiler does not exist: one warning, the default path's numbers."""
    code = (
        "import warnings, torch\n"
        "from qact_cli.nn import QAct\n"
        "torch.manual_seed(0); layer = QAct(3); x = torch.randn(32, 3)\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    torch.manual_seed(1); a = layer(x); torch.manual_seed(1); b = layer(x)\n"
        "msgs = [str(m.message) for m in w if 'native' in str(m.message)]\n"
        "assert len(msgs) == 1 and 'could not compile' in msgs[0], msgs\n"
        "assert torch.equal(a, b)\n"
        "print('ok')\n"
    )
    env = {"QACT_KERNEL": "native", "CC": str(tmp_path / "no-such-cc"), "XDG_CACHE_HOME": str(tmp_path),
           "PATH": "/usr/bin:/bin"}
    env = {**os.environ, **env}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


@needs_compiler
@pytest.mark.parametrize("density,kde_samples", [(False, 1000), (True, 1000), (True, None)])
def test_tables_are_the_torch_paths_bits(density, kde_samples, kernel):
    """The native histograms (cells, KDE sample, exact zeros) give the very tables of the torch path."""
    from qact_cli.nn.qact import grounded_table

    torch.manual_seed(4)
    ctx = torch.randn(7, 2048) * torch.linspace(0.1, 3, 7)[:, None]
    ctx[2, :300] = 0.0  # an atom at 0
    ctx[5] = ctx[5].abs()  # one-signed
    tables = {}
    for name in ("native", "torch"):
        kernel(name)
        tables[name] = grounded_table(ctx, 512, 100.0, 0.5, kde_samples, density, 8)
    for got, want in zip(tables["native"], tables["torch"]):
        assert (got is None and want is None) or torch.equal(got, want)
