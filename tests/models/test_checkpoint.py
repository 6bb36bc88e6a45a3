import pickle

import pytest
import torch

from qact_cli.checkpoint import clean_state_dict, load_model, read_checkpoint
from qact_cli.errors import InputError


def test_round_trip_rebuilds_from_checkpoint_alone(digits_ckpt):
    raw = torch.load(digits_ckpt, weights_only=True)  # plain data and tensors only
    assert raw["format_version"] == 1
    info = raw["model"]
    assert info["arch"] == "lenet" and info["num_classes"] == 10 and len(info["mean"]) == 3 and info["input_size"] == [32, 32]
    assert raw["train"]["dataset"] == "digits" and 0 <= raw["train"]["best_val_acc"] <= 1
    assert raw["provenance"]["torch_version"] == torch.__version__
    model, meta = load_model(digits_ckpt)
    assert "state_dict" not in meta and not model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, raw["state_dict"][k])


def test_missing_checkpoint(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_checkpoint(tmp_path / "none.pt")


def test_truncated_checkpoint(digits_ckpt, tmp_path):
    bad = tmp_path / "cut.pt"
    bad.write_bytes(digits_ckpt.read_bytes()[:500])
    with pytest.raises(InputError, match="truncated"):
        load_model(bad)


class _Payload:
    def __reduce__(self):
        import os

        return (os.system, ("touch PWNED_BY_CHECKPOINT",))


def test_malicious_checkpoint_never_executes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    evil = tmp_path / "evil.pt"
    torch.save({"format": "qact-checkpoint", "model": _Payload()}, evil)
    with pytest.raises(InputError, match="refusing"):
        load_model(evil)
    assert not (tmp_path / "PWNED_BY_CHECKPOINT").exists()
    # a plain pickle file (not a torch zip) is refused too
    plain = tmp_path / "plain.pt"
    plain.write_bytes(pickle.dumps(_Payload()))
    with pytest.raises(InputError):
        load_model(plain)
    assert not (tmp_path / "PWNED_BY_CHECKPOINT").exists()


def test_foreign_file_is_not_a_checkpoint(tmp_path):
    p = tmp_path / "sd.pt"
    torch.save({"weight": torch.zeros(2)}, p)
    with pytest.raises(InputError, match="not a qact checkpoint"):
        load_model(p)


def test_weights_that_do_not_fit(digits_ckpt, tmp_path):
    raw = torch.load(digits_ckpt, weights_only=True)
    raw["model"]["num_classes"] = 5
    p = tmp_path / "mismatch.pt"
    torch.save(raw, p)
    with pytest.raises(InputError, match="do not fit"):
        load_model(p)


def test_clean_state_dict_strips_wrappers():
    sd = clean_state_dict({"module._orig_mod.a.weight": 1, "b": 2})
    assert sd == {"a.weight": 1, "b": 2}
