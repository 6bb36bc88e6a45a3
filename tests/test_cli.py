import json
import subprocess
import sys

import numpy as np
import pytest
import torch


def test_help_lists_commands(cli):
    code, out, _ = cli("--help")
    assert code == 0 and all(c in out for c in ("train", "eval", "corrupt", "compare"))


def test_python_dash_m_is_the_same_cli():
    r = subprocess.run([sys.executable, "-m", "qact_cli", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "eval" in r.stdout


def test_train_then_eval_on_digits(cli, tmp_path):
    ckpt = tmp_path / "m.pt"
    code, out, err = cli("train", "--dataset", "digits", "--arch", "lenet", "--epochs", "3", "--batch-size", "32",
                         "--out", ckpt, "--device", "cpu")
    assert code == 0, err
    assert "best validation accuracy" in out and ckpt.exists() and not (tmp_path / "m.pt.state").exists()
    assert err.count("val acc") == 3  # one line per epoch on stderr
    code, out, err = cli("eval", ckpt, "--dataset", "digits", "--json", tmp_path / "r.json")
    assert code == 0, err
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["schema"] == "qact.eval/1" and doc["dataset"] == "digits"
    clean = doc["cells"][0]
    assert clean["corruption"] == "clean" and clean["severity"] == 0 and clean["n"] == 360
    assert clean["acc"] >= 0.85  # LeNet/ReLU, 3 epochs (issue 2's bar)
    assert set(clean) >= {"acc", "ece", "ce_marginal_l2", "nll", "brier"}
    assert doc["summary"]["by_severity"]["0"]["acc_mean"] == pytest.approx(clean["acc"])
    assert doc["metrics"]["ece"].startswith("top-label L1")
    assert "accuracy" in out and f"{clean['acc']:.4f}" in out


def test_eval_json_to_stdout_is_pure_json(cli, digits_ckpt):
    code, out, _ = cli("eval", digits_ckpt, "--dataset", "digits", "--json", "-")
    assert code == 0
    assert json.loads(out)["model"]["arch"] == "lenet"


def test_eval_several_checkpoints_writes_multi(cli, digits_ckpt):
    code, out, _ = cli("eval", digits_ckpt, digits_ckpt, "--dataset", "digits", "--json", "-", "--limit", "50")
    doc = json.loads(out)
    assert code == 0 and doc["schema"] == "qact.eval-multi/1" and len(doc["results"]) == 2
    assert doc["results"][0]["cells"] == doc["results"][1]["cells"]


def test_resume_continues_from_last_epoch(tmp_path):
    from qact_cli.training import TrainConfig, train

    out = tmp_path / "r.pt"
    calls = []

    def stop_after_first(row):
        calls.append(row["epoch"])
        if row["epoch"] == 1:
            raise KeyboardInterrupt

    cfg = TrainConfig(dataset="digits", arch="lenet", out=str(out), epochs=2, batch_size=64, device="cpu")
    with pytest.raises(KeyboardInterrupt):
        train(cfg, on_epoch=stop_after_first)
    assert (tmp_path / "r.pt.state").exists() and out.exists()
    cfg.resume = True
    info = train(cfg, on_epoch=lambda row: calls.append(row["epoch"]))
    assert calls == [1, 2] and info["epochs"] == 2 and len(info["history"]) == 2
    assert not (tmp_path / "r.pt.state").exists()


def test_training_is_seeded(tmp_path):
    from qact_cli.training import TrainConfig, train

    a = train(TrainConfig(dataset="digits", arch="lenet", out=str(tmp_path / "a.pt"), epochs=1, batch_size=64, device="cpu"))
    b = train(TrainConfig(dataset="digits", arch="lenet", out=str(tmp_path / "b.pt"), epochs=1, batch_size=64, device="cpu"))
    assert a["history"][0]["loss"] == b["history"][0]["loss"]
    sa = torch.load(tmp_path / "a.pt", weights_only=True)["state_dict"]
    sb = torch.load(tmp_path / "b.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


# --- bad input: exit 3 with one line, no traceback -------------------------------------------------

def _one_clean_line(code, err, expected_code=3):
    assert code == expected_code, err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err


def test_missing_checkpoint_exit_3(cli, tmp_path):
    code, _, err = cli("eval", tmp_path / "none.pt", "--dataset", "digits")
    _one_clean_line(code, err)
    assert str(tmp_path / "none.pt") in err


def test_truncated_checkpoint_exit_3(cli, digits_ckpt, tmp_path):
    bad = tmp_path / "cut.pt"
    bad.write_bytes(digits_ckpt.read_bytes()[:1000])
    code, _, err = cli("eval", bad, "--dataset", "digits")
    _one_clean_line(code, err)
    assert "cut.pt" in err


def test_missing_dataset_exit_3(cli, digits_ckpt, tmp_path):
    code, _, err = cli("eval", digits_ckpt, "--dataset", "cifar10", "--data-root", tmp_path)
    _one_clean_line(code, err)
    assert "--download" in err


def test_class_count_mismatch_exit_3(cli, digits_ckpt, tmp_path):
    d = tmp_path / "n"
    d.mkdir()
    rng = np.random.default_rng(0)
    np.save(d / "test_images.npy", rng.integers(0, 255, (8, 32, 32, 3), dtype=np.uint8))
    np.save(d / "test_labels.npy", np.arange(8) * 12)  # 85 classes
    code, _, err = cli("eval", digits_ckpt, "--dataset", f"npy:{d}")
    _one_clean_line(code, err)
    assert "10-class" in err


def test_image_size_mismatch_exit_3(cli, digits_ckpt, tmp_path):
    d = tmp_path / "n"
    d.mkdir()
    np.save(d / "test_images.npy", np.zeros((4, 28, 28), np.uint8))
    np.save(d / "test_labels.npy", np.arange(4))
    code, _, err = cli("eval", digits_ckpt, "--dataset", f"npy:{d}")
    _one_clean_line(code, err)
    assert "32x32" in err


def test_usage_errors_exit_2(cli, digits_ckpt):
    assert cli("eval", digits_ckpt, "--dataset", "digits", "--context", "global")[0] == 2
    assert cli("eval", digits_ckpt, "--dataset", "digits", "--severities", "7")[0] == 2
    assert cli("eval", digits_ckpt, "--dataset", "nope")[0] == 2
    assert cli("train", "--dataset", "digits", "--arch", "alexnet", "--out", "x.pt")[0] == 2
    assert cli("eval", digits_ckpt, "--dataset", "digits", "--bogus")[0] == 2


def test_qact_debug_shows_traceback(digits_ckpt, tmp_path):
    import os

    env = dict(os.environ, QACT_DEBUG="1")
    r = subprocess.run([sys.executable, "-m", "qact_cli", "eval", str(tmp_path / "none.pt"), "--dataset", "digits"],
                       capture_output=True, text=True, env=env)
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_tune_allocator_applies_on_glibc_and_can_be_declined(monkeypatch):
    import platform

    from qact_cli.startup import tune_allocator

    monkeypatch.setenv("QACT_MALLOC", "default")
    assert tune_allocator() is False
    monkeypatch.delenv("QACT_MALLOC")
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert tune_allocator() is True
