"""What a model returns (eval/outputs.py): declared probabilities / log-probabilities are scored as
such, outputs that contradict the declaration are exit 3, and the model's own failures name the model."""

import numpy as np
import pytest
import torch

from ext_model_builders import forward_raises, small_cnn
from qact_cli.data import get_dataset
from qact_cli.errors import InputError, UsageError
from qact_cli.eval.outputs import as_logits, call_model, check_outputs
from qact_cli.eval.protocol import Protocol, evaluate, limited
from qact_cli.models.external import ModelOptions, resolve_model

CORR, SEV, LIMIT = ["gaussian_noise"], [0, 2], 40
MEAN, STD = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]


def _score(model, outputs=None, batch_size=16):
    net, meta = resolve_model(model, ModelOptions(num_classes=10, mean=MEAN, std=STD))
    if outputs is not None:
        meta["model"]["outputs"] = outputs  # the card key / --outputs flag, once they are wired
    return evaluate(net, meta, get_dataset("gen:digits"), Protocol("gen:digits", CORR, SEV, batch_size, limit=LIMIT),
                    torch.device("cpu"))


def _numpy_reference(model):
    """ECE (15 equal-width bins, upper edge in the bin) and NLL of the model's own probabilities, in numpy."""
    ds = get_dataset("gen:digits")
    out = {}
    for cell in ds.cells(CORR, SEV, seed=0):
        src = limited(cell.source, LIMIT)
        x, y = src.__getitems__(np.arange(len(src)))
        x = (x.float() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
        with torch.no_grad():
            p = model(x).double().numpy()
        y = np.asarray(y)
        conf, pred = p.max(1), p.argmax(1)
        bins = np.clip(np.ceil(conf * 15).astype(int) - 1, 0, 14)
        ece = sum(abs(((pred == y) - conf)[bins == b].sum()) for b in range(15)) / len(y)
        nll = float(np.mean(-np.log(p[np.arange(len(y)), y])))
        out[(cell.corruption, cell.severity)] = (ece, nll)
    return out


def test_probabilities_are_scored_as_probabilities():
    doc = _score(small_cnn(outputs="probs"), "probs")
    ref = _numpy_reference(small_cnn(outputs="probs"))
    got = {(c["corruption"], c["severity"]): (c["ece"], c["nll"]) for c in doc["cells"]}
    assert got.keys() == ref.keys()
    for key in ref:
        assert got[key] == pytest.approx(ref[key], abs=1e-5), key


def test_log_probabilities_and_probabilities_score_as_the_logits():
    base = _score(small_cnn())["cells"]
    for outputs in ("log-probs", "probs"):
        cells = _score(small_cnn(outputs=outputs), outputs)["cells"]
        for a, b in zip(base, cells):
            assert b["acc"] == a["acc"]
            assert {k: b[k] for k in ("ece", "nll", "brier")} == pytest.approx({k: a[k] for k in ("ece", "nll", "brier")},
                                                                              abs=1e-5)


@pytest.mark.parametrize("model,declared,match", [
    (small_cnn(outputs="probs"), None, r"returns probabilities .*pass --outputs probs"),
    (small_cnn(outputs="log-probs"), None, r"returns log-probabilities .*pass --outputs log-probs"),
    (small_cnn(), "probs", r"declared to return probabilities, but its rows sum to .*negative values"),
    (small_cnn(), "log-probs", r"declared to return log-probabilities, but its rows' logsumexp is"),
])
def test_outputs_that_contradict_the_declaration_are_refused(model, declared, match):
    with pytest.raises(InputError, match=match):
        _score(model, declared)


def test_the_checks_on_tensors():
    p = torch.softmax(torch.randn(5, 4), 1)
    check_outputs(p, "probs", "m")
    check_outputs(p.log(), "log-probs", "m")
    check_outputs(torch.randn(5, 4) * 3, "logits", "m")
    with pytest.raises(InputError, match="rows sum to 0.5"):
        check_outputs(p / 2, "probs", "m")
    check_outputs(p.half(), "probs", "m")  # half precision rounding is within the tolerance
    zero = torch.tensor([[1.0, 0.0]])
    assert torch.isfinite(as_logits(zero, "probs")).all() and torch.isfinite(as_logits(zero.log(), "log-probs")).all()
    assert torch.allclose(torch.softmax(as_logits(p, "probs"), 1), p, atol=1e-6)
    with pytest.raises(UsageError, match="outputs must be one of"):
        _score(small_cnn(), "softmax")


def test_a_forward_that_raises_is_the_models_failure():
    with pytest.raises(InputError, match=r"^model m failed on input \(2, 3, 8, 8\): RuntimeError: the user's forward broke$"):
        call_model(forward_raises(), torch.zeros(2, 3, 8, 8), "m")
    gray = small_cnn(in_channels=1)
    with pytest.raises(InputError, match=r"failed on input \(2, 3, 8, 8\): RuntimeError: .*channels.*--channels 1"):
        call_model(gray, torch.zeros(2, 3, 8, 8), "m")


@pytest.mark.parametrize("exc", [torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 30 TiB"),
                                 RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"),
                                 MemoryError()])
def test_running_out_of_memory_stays_a_memory_error(exc):
    class Oom(torch.nn.Module):
        def forward(self, x):
            raise exc

    with pytest.raises(MemoryError):
        call_model(Oom(), torch.zeros(1, 3, 2, 2), "m")


def test_qacts_quantile_heads_return_log_probabilities(tmp_path):
    from qact_cli.checkpoint import make_checkpoint, save_checkpoint
    from qact_cli.eval.outputs import declared_kind
    from qact_cli.models import build_model

    torch.manual_seed(0)
    kwargs = {"input_size": [32, 32], "widths": [4, 8], "hidden": [16, 16]}
    model = build_model("lenet", act="relu", num_classes=10, head="quantile:direct_fit", **kwargs)
    info = {"arch": "lenet", "act": "relu", "head": "quantile:direct_fit", "num_classes": 10, "arch_kwargs": kwargs,
            "input_size": [32, 32], "mean": [0.5] * 3, "std": [0.25] * 3, "classes": None, "backbone": None}
    save_checkpoint(make_checkpoint(model, info, {"dataset": "random", "epochs": 0, "seed": 0}), tmp_path / "q.pt")
    net, meta = resolve_model(str(tmp_path / "q.pt"))
    assert declared_kind(meta["model"]) == "log-probs" and declared_kind({"head": "linear"}) == "logits"
    protocol = Protocol("digits", [], [0], 64, limit=80)
    doc = evaluate(net, meta, get_dataset("digits"), protocol, torch.device("cpu"))
    assert doc["cells"][0]["n"] == 80
    meta["model"]["outputs"] = "logits"  # declared wrongly: the check sees the log-probabilities
    with pytest.raises(InputError, match="returns log-probabilities"):
        evaluate(net, meta, get_dataset("digits"), protocol, torch.device("cpu"))
