"""Temperature scaling (Guo et al. 2017): the fit, the calibrated metrics, `train --calibrate`, and the
quantile head's variants (selectable, recorded in the checkpoint, old checkpoints unchanged)."""

from __future__ import annotations

import pytest
import torch

from qact_cli.calibration import fit_sharpness, fit_temperature
from qact_cli.eval import metrics
from qact_cli.models import build_model
from qact_cli.nn.heads import DEFAULT_VARIANT, VARIANTS, QuantileHead


def _overconfident(n=2000, k=5, seed=0):
    """Logits whose argmax is right ~70% of the time but scaled to ~certainty: over-confident by design."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, k, (n,), generator=g)
    logits = torch.randn(n, k, generator=g)
    logits[torch.arange(n), labels] += 1.5
    return 8.0 * logits, labels


def _nll(logits, labels, t):
    return torch.nn.functional.cross_entropy(logits.double() / t, labels).item()


def test_fitted_temperature_lowers_validation_nll_of_an_overconfident_model():
    logits, labels = _overconfident()
    t = fit_temperature(logits, labels)
    assert t > 2.0  # softens: the raw logits are ~8x too sharp
    assert _nll(logits, labels, t) < 0.5 * _nll(logits, labels, 1.0)
    for other in (0.8 * t, 1.25 * t):  # a minimum, not just an improvement
        assert _nll(logits, labels, t) <= _nll(logits, labels, other)


def test_calibrated_metrics_equal_metrics_of_the_tempered_logits():
    logits, labels = _overconfident(n=600, seed=1)
    t = 3.7
    probs = torch.softmax(logits, 1).float()
    cal = metrics.cell_metrics(probs, labels, temperature=t)["calibrated"]
    direct = torch.softmax(logits.double() / t, 1)
    assert cal["temperature"] == t
    assert cal["ece"] == pytest.approx(metrics.ece_top_label(direct, labels), abs=1e-6)
    assert cal["ce_marginal_l2"] == pytest.approx(metrics.calibration_error_marginal_l2(direct, labels), abs=1e-6)
    assert cal["nll"] == pytest.approx(metrics.nll(direct, labels), rel=1e-5)
    assert cal["brier"] == pytest.approx(metrics.brier(direct, labels), abs=1e-6)
    assert cal["ece"] < metrics.ece_top_label(probs, labels)
    assert "calibrated" not in metrics.cell_metrics(probs, labels)  # raw cells unchanged without a temperature


def test_train_calibrate_stores_temperature_and_eval_reports_both(tmp_path):
    from qact_cli.checkpoint import read_checkpoint
    from qact_cli.eval.run import run_eval
    from qact_cli.training import TrainConfig, train

    out = tmp_path / "t.pt"
    info = train(TrainConfig(dataset="digits", arch="lenet", out=str(out), epochs=2, batch_size=64, device="cpu",
                             calibrate="temperature"))
    t = read_checkpoint(out)["model"]["temperature"]
    assert 0.01 <= t <= 100 and info["calibration"]["temperature"] == t
    assert info["calibration"]["val_nll_after"] <= info["calibration"]["val_nll_before"]
    (doc,) = run_eval([str(out)], "gen:digits", corruptions="fog", severities="0,2", limit=40, device="cpu")
    for cell in doc["cells"]:
        assert cell["calibrated"]["temperature"] == t and set(cell["calibrated"]) >= {"ece", "ce_marginal_l2", "nll"}
        assert cell["ece"] >= 0 and cell["calibrated"]["nll"] > 0


def test_unknown_calibration_is_a_usage_error(tmp_path):
    from qact_cli.errors import UsageError
    from qact_cli.training import TrainConfig, train

    with pytest.raises(UsageError, match="--calibrate"):
        train(TrainConfig(dataset="digits", arch="lenet", out=str(tmp_path / "x.pt"), calibrate="platt"))


def test_quantile_head_variants_are_selectable_and_old_name_is_the_first_reading():
    feats = torch.randn(64, 12)
    legacy = build_model("lenet", act="qact", num_classes=10, head="quantile").head
    assert legacy.variant == "odds" and not hasattr(legacy, "log_scale")
    for name in VARIANTS:
        head = build_model("lenet", act="qact", num_classes=10, head=f"quantile:{name}").head
        assert head.variant == name
        head.train()
        out = head(torch.randn(64, head.in_features))
        assert torch.allclose(out.exp().sum(1), torch.ones(64), atol=1e-5)  # log-probabilities
        head.loss(out, torch.randint(0, 10, (64,))).backward()
    with pytest.raises(ValueError, match="variant"):
        build_model("lenet", act="qact", num_classes=10, head="quantile:nope")
    # the scaled reading at scale 1 is the odds reading
    odds, scaled = QuantileHead(12, 10, variant="odds"), QuantileHead(12, 10, variant="scaled")
    scaled.fc.load_state_dict(odds.fc.state_dict())
    odds.train(), scaled.train()
    torch.manual_seed(0)
    a = odds(feats)
    torch.manual_seed(0)
    assert torch.allclose(a, scaled(feats), atol=1e-6)
    with torch.no_grad():
        scaled.log_scale.fill_(0.1)
    torch.manual_seed(0)
    sharper = scaled(feats)
    assert (sharper.max(1).values > a.max(1).values).all()  # a > 1 raises the top probability


def test_training_records_the_default_variant(tmp_path):
    from qact_cli.nn.heads import resolve_head

    assert resolve_head("quantile") == f"quantile:{DEFAULT_VARIANT}"
    assert resolve_head("linear") == "linear" and resolve_head("quantile:direct") == "quantile:direct"


def test_direct_fit_trains_the_network_as_direct_and_fits_only_the_sharpness():
    feats, target = torch.randn(64, 12), torch.randint(0, 10, (64,))
    direct, fit = QuantileHead(12, 10, variant="direct"), QuantileHead(12, 10, variant="direct_fit")
    fit.fc.load_state_dict(direct.fc.state_dict())
    with torch.no_grad():
        fit.log_scale.fill_(0.07)
    grads = []
    for head in (direct, fit):
        torch.manual_seed(0)
        head.loss(head(feats), target).backward()
        grads.append(head.fc.weight.grad.clone())
    assert torch.allclose(grads[0], grads[1], atol=1e-5)  # the sharpness never reaches the network
    assert fit.log_scale.grad is not None and fit.log_scale.grad.abs() > 0
    torch.manual_seed(0)
    q = direct.quantiles(feats)
    torch.manual_seed(0)
    a = 4.0 * torch.exp(torch.tensor(0.7))
    assert torch.allclose(fit(feats), torch.log_softmax(a * torch.log(q), 1), atol=1e-5)  # p ~ q^a


def test_cli_rejects_an_unknown_calibration(cli, tmp_path):
    code, _, err = cli("train", "--dataset", "digits", "--arch", "lenet", "--out", tmp_path / "x.pt", "--calibrate", "platt")
    assert code == 2 and "--calibrate" in err


def _head_outputs(head, feats, batch=64):
    head.eval()
    with torch.no_grad():
        return torch.cat([head(f) for f in feats.split(batch)])


def test_post_hoc_sharpness_fit_lowers_train_nll_of_a_missharpened_head_and_is_used_at_eval():
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 10, (640,), generator=g)
    feats = torch.randn(640, 12, generator=g)
    feats[:, :10] += 2.0 * torch.nn.functional.one_hot(labels, 10)  # separable enough to want a sharp head
    head = QuantileHead(12, 10, variant="direct_fit")
    with torch.no_grad():
        head.fc.weight.zero_()
        head.fc.weight[:, :10] = torch.eye(10)
    assert head.refits_sharpness and not QuantileHead(12, 10, variant="power4").refits_sharpness
    fitted = []
    for wrong in (0.3, 60.0):  # far too flat, far too sharp
        head.set_sharpness(wrong)
        assert head.sharpness == pytest.approx(wrong, rel=1e-6)
        out = _head_outputs(head, feats)
        record = fit_sharpness(head, out, labels)
        assert record["a_before"] == pytest.approx(wrong, rel=1e-6)
        assert record["train_nll_after"] < 0.9 * record["train_nll_before"]
        # the head now computes with the fitted a: its outputs give the NLL the fit reported
        again = torch.nn.functional.nll_loss(_head_outputs(head, feats).double(), labels).item()
        assert again == pytest.approx(record["train_nll_after"], rel=1e-4)
        fitted.append(head.sharpness)
    assert fitted[0] == pytest.approx(fitted[1], rel=1e-3)  # the exact minimum, wherever a started
    a = fitted[0]
    for other in (0.8 * a, 1.25 * a):
        head.set_sharpness(other)
        worse = torch.nn.functional.nll_loss(_head_outputs(head, feats).double(), labels).item()
        assert worse > record["train_nll_after"]


def test_training_refits_the_sharpness_and_the_checkpoint_carries_it(tmp_path):
    from qact_cli.checkpoint import load_model, read_checkpoint
    from qact_cli.training import TrainConfig, train

    out = tmp_path / "q.pt"
    info = train(TrainConfig(dataset="digits", arch="lenet", act="qact", head="quantile", out=str(out), epochs=1,
                             batch_size=64, device="cpu"))
    sharp = info["head_sharpness"]
    assert (sharp["split"], sharp["batch_size"], sharp["context"]) == ("train", 64, "batch")
    assert sharp["a"] != pytest.approx(sharp["a_before"]) and sharp["train_nll_after"] < sharp["train_nll_before"]
    ckpt = read_checkpoint(out)
    assert ckpt["train"]["head_sharpness"] == sharp
    model, _ = load_model(out)
    assert model.head.sharpness == pytest.approx(sharp["a"], rel=1e-5)
    # a head whose sharpness is learned by its training loss (or has none) is left as trained
    other = train(TrainConfig(dataset="digits", arch="lenet", act="qact", head="quantile:odds",
                              out=str(tmp_path / "o.pt"), epochs=1, batch_size=64, device="cpu"))
    assert "head_sharpness" not in other
