"""The training package: the shared protocol pieces, the resume state's header, and the registries
(model families, activations, datasets) that one registry style fills."""

import numpy as np
import pytest
import torch

from qact_cli.errors import InputError, UsageError


def test_split_is_fixed_by_seed_42_and_covers_every_index():
    from qact_cli.schedule import split_train_val

    tr, va = split_train_val(100)
    assert len(va) == 20 and len(tr) == 80
    assert np.array_equal(np.sort(np.concatenate([tr, va])), np.arange(100))
    tr2, va2 = split_train_val(100)
    assert np.array_equal(tr, tr2) and np.array_equal(va, va2)
    assert not np.array_equal(va, split_train_val(100, seed=0)[1])


def test_scheduler_follows_the_papers_settings():
    from qact_cli.schedule import make_optimizer, make_scheduler

    opt = make_optimizer([torch.nn.Parameter(torch.zeros(1))])
    sched = make_scheduler(opt, patience=2)
    assert opt.param_groups[0]["lr"] == 1e-3
    assert (sched.mode, sched.factor, sched.patience, sched.cooldown, sched.threshold, sched.threshold_mode) \
        == ("max", 0.1, 2, 10, 0.01, "abs")
    for acc in (0.5, 0.5, 0.5, 0.5):  # no gain of 0.01 for more than `patience` steps
        sched.step(acc)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-4)


def test_early_stopping_keeps_small_gains_as_best_but_keeps_counting():
    from qact_cli.schedule import EarlyStopping

    stop = EarlyStopping(patience=3)
    assert stop.update(0.5, 1) and stop.stale == 0
    assert stop.update(0.5005, 2) and stop.stale == 1 and stop.best_epoch == 2  # best, but under the 0.001 gain
    assert not stop.update(0.4, 3) and stop.stale == 2 and not stop.should_stop
    assert not stop.update(0.5, 4) and stop.should_stop
    again = EarlyStopping(patience=3)
    again.load_state_dict(stop.state_dict())
    assert (again.best, again.best_epoch, again.stale) == (0.5005, 2, 3)
    assert "no 0.001 gain in validation accuracy for 3 epochs" in stop.message(4)


def _interrupted_run(tmp_path):
    from qact_cli.training import TrainConfig, train

    def stop(row):
        raise KeyboardInterrupt

    cfg = TrainConfig(dataset="digits", arch="lenet", out=str(tmp_path / "r.pt"), epochs=2, batch_size=64, device="cpu")
    with pytest.raises(KeyboardInterrupt):
        train(cfg, on_epoch=stop)
    cfg.resume = True
    return cfg, tmp_path / "r.pt.state"


def test_resume_state_carries_format_and_version_and_old_states_resume_as_version_0(tmp_path):
    from qact_cli.checkpoint import save_checkpoint
    from qact_cli.training import train
    from qact_cli.training.state import STATE_FORMAT, STATE_VERSION

    cfg, state = _interrupted_run(tmp_path)
    st = torch.load(state, weights_only=True)
    assert st["format"] == STATE_FORMAT and st["format_version"] == STATE_VERSION == 1
    # a state written before the header existed: the checkpoint header and no version, same layout
    old = {**st, "format": "qact-checkpoint"}
    del old["format_version"]
    save_checkpoint(old, state)
    logs = []
    info = train(cfg, log=logs.append)
    assert info["epochs"] == 2 and any("resuming" in line and "epoch 1" in line for line in logs)
    assert not state.exists()


@pytest.mark.parametrize("change,message", [
    ({"format_version": 99}, "newer than this qact reads"),
    ({"format_version": "1"}, "not an integer"),
    ({"format": "something-else"}, "not a qact training state"),
])
def test_resume_refuses_states_it_cannot_read(tmp_path, change, message):
    from qact_cli.checkpoint import save_checkpoint
    from qact_cli.training import train

    cfg, state = _interrupted_run(tmp_path)
    save_checkpoint({**torch.load(state, weights_only=True), **change}, state)
    with pytest.raises(InputError, match=message) as e:
        train(cfg)
    assert "\n" not in str(e.value) and "remove it" in str(e.value)


def test_resume_refuses_a_damaged_state(tmp_path):
    from qact_cli.checkpoint import save_checkpoint
    from qact_cli.training import train

    cfg, state = _interrupted_run(tmp_path)
    st = torch.load(state, weights_only=True)
    del st["optimizer"]
    save_checkpoint(st, state)
    with pytest.raises(InputError, match="lacks optimizer"):
        train(cfg)


def test_model_family_lookup_takes_a_name_a_class_or_the_family():
    from qact_cli.models import LeNet, get_model_family, model_names

    family = get_model_family("lenet")
    assert family.build is LeNet and get_model_family(LeNet) is family and get_model_family(family) is family
    assert get_model_family("dinov2_vits14").frozen_backbone and not family.frozen_backbone
    assert model_names()[:4] == ["lenet", "resnet18", "vgg11", "densenet"]
    with pytest.raises(UsageError, match="unknown --arch 'resnet19'; did you mean 'resnet18'"):
        get_model_family("resnet19", "--arch")
    with pytest.raises(ValueError, match="not a registered model family"):
        get_model_family(torch.nn.Linear)


def test_rebuild_model_goes_through_the_family(tmp_path):
    from qact_cli.models import build_model, rebuild_model

    info = {"arch": "lenet", "act": "relu", "num_classes": 4, "head": "linear", "arch_kwargs": {"input_size": [28, 28]}}
    model = rebuild_model(info)
    assert model(torch.zeros(2, 3, 28, 28)).shape == (2, 4)
    with pytest.raises(ValueError, match="frozen backbone"):
        build_model("dinov2_vits14")


def test_activations_take_a_name_a_registered_factory_or_any_callable():
    from qact_cli.models import build_model
    from qact_cli.nn.activations import ACTIVATIONS, activation_name, make_activation, relu

    assert list(ACTIVATIONS) == ["relu", "prelu", "selu", "qact"]
    assert isinstance(make_activation("prelu", 6), torch.nn.PReLU) and make_activation("prelu", 6).weight.numel() == 6
    assert isinstance(make_activation(relu, 6), torch.nn.ReLU) and activation_name(relu) == "relu"
    assert isinstance(make_activation(torch.nn.PReLU, 3), torch.nn.PReLU)  # a class taking the channel count
    net = build_model("lenet", act=lambda c: torch.nn.GELU())
    assert any(isinstance(m, torch.nn.GELU) for m in net.modules()) and activation_name(lambda c: None) is None
    with pytest.raises(UsageError, match="did you mean 'selu'"):
        make_activation("gelu", 4)


def test_registry_style_is_shared():
    from qact_cli.registry import Registry, UnknownName

    reg = Registry("thing")

    @reg.register("a")
    def a():
        return 1

    assert reg.get("a") is a and reg.get(a) is a and reg.name_of(a) == "a" and "a" in reg
    with pytest.raises(ValueError, match="registered twice"):
        reg.add("a", a)
    with pytest.raises(UnknownName, match="unknown thing 'b'"):
        reg.get("b")


def test_datasets_register_themselves_and_lookups_pass_a_dataset_through():
    from qact_cli.data import DATASETS, PREFIXED, get_dataset

    assert {"digits", "cifar10", "cifar10c", "mnistc"} <= set(DATASETS) and set(PREFIXED) == {"npy", "folder", "gen", "corrupted"}
    ds = get_dataset("digits")
    assert get_dataset(ds) is ds
    gen = get_dataset("gen:digits")
    assert gen.corrupted and gen.name == "gen:digits"
    with pytest.raises(UsageError, match="did you mean 'digits'"):
        get_dataset("digts")
