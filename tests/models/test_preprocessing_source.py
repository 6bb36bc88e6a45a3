"""Preprocessing is visible and never borrowed silently: where each of input size, resize, mean and
std came from (argument, card, weights, checkpoint, default), recorded in the result and stated in the
table; ImageNet's statistics by default say so on stderr; timm's pretrained config applies only to
timm's own weights file, never to a user's."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from fixtures_weights import resnet18_state_dict
from qact_cli.constants import IMAGENET_MEAN, IMAGENET_STD
from qact_cli.eval.report import preprocessing_words, summary_table
from qact_cli.models.external import resolve_model
from qact_cli.options.model import ModelOptions

KEYS = ("input_size", "resize", "mean", "std")
FLAGS = ["--dataset", "gen:digits", "--corruptions", "contrast", "--severities", "0,1", "--limit", "8",
         "--batch-size", "8", "--device", "cpu"]


def _resolve(spec, **options):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, meta = resolve_model(spec, ModelOptions(**options))
    return meta["model"], [str(w.message) for w in caught if "ImageNet" in str(w.message)]


@pytest.fixture(scope="module")
def tv_weights(tmp_path_factory):
    """A torchvision resnet18 state dict (built with weights=None: nothing downloaded)."""
    return resnet18_state_dict(tmp_path_factory.mktemp("tv") / "r18.pt", num_classes=10)


def test_torchvision_weights_file_defaults_are_named_and_imagenet_statistics_warn(tv_weights):
    info, warned = _resolve("torchvision:resnet18", weights=str(tv_weights), num_classes=10)
    assert info["preprocessing_source"] == dict.fromkeys(KEYS, "default")
    assert info["mean"] == list(IMAGENET_MEAN) and info["input_size"] is None and info["resize"] is None
    assert len(warned) == 1 and "torchvision:resnet18" in warned[0] and "--mean R,G,B --std R,G,B" in warned[0]

    info, warned = _resolve("torchvision:resnet18", weights=str(tv_weights), num_classes=10, mean=[0.5] * 3,
                            std=[0.25] * 3, input_size=[32, 32])
    assert info["preprocessing_source"] == {"input_size": "argument", "resize": "default", "mean": "argument",
                                            "std": "argument"}
    assert not warned


def test_card_values_are_named_as_the_card(tmp_path, tv_weights):
    card = tmp_path / "m.yaml"
    card.write_text(f"model: torchvision:resnet18\nweights: {tv_weights}\nnum_classes: 10\n"
                    "mean: [0.5, 0.5, 0.5]\nstd: [0.25, 0.25, 0.25]\n")
    info, warned = _resolve(str(card), input_size=[32, 32])
    assert info["preprocessing_source"] == {"input_size": "argument", "resize": "default", "mean": "card",
                                            "std": "card"}
    assert not warned


def test_timm_pretrained_config_applies_to_timm_own_file_only(tmp_path):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    net = timm.create_model("resnet18", pretrained=False, num_classes=10)
    mine = tmp_path / "mine.pth"
    torch.save(net.state_dict(), mine)
    # a user's weights on 32-px data: used at their own size, ImageNet's statistics by default, with the note
    info, warned = _resolve("timm:resnet18", weights=str(mine), num_classes=10)
    assert info["input_size"] is None and info["resize"] is None
    assert info["mean"] == list(IMAGENET_MEAN) and info["std"] == list(IMAGENET_STD)
    assert info["preprocessing_source"] == dict.fromkeys(KEYS, "default") and len(warned) == 1
    # the file timm's pretrained config names (its release file name) gets that config
    cfg = net.pretrained_cfg
    own = tmp_path / cfg["url"].rsplit("/", 1)[-1]
    own.write_bytes(mine.read_bytes())
    info, warned = _resolve("timm:resnet18", weights=str(own), num_classes=10)
    assert info["input_size"] == list(cfg["input_size"][-2:]) and info["resize"] == cfg["interpolation"]
    assert info["mean"] == list(cfg["mean"]) and info["preprocessing_source"] == dict.fromkeys(KEYS, "weights")
    assert not warned
    # as does timm's Hugging Face hub copy
    hub = tmp_path / f"models--{cfg['hf_hub_id'].replace('/', '--')}" / "snapshots" / "abc" / "model.pth"
    hub.parent.mkdir(parents=True)
    hub.write_bytes(mine.read_bytes())
    assert _resolve("timm:resnet18", weights=str(hub), num_classes=10)[0]["input_size"] == list(cfg["input_size"][-2:])


def test_timm_user_weights_evaluate_at_their_own_size(cli, tmp_path):
    """`timm:resnet18 --weights mine.pth` on 32-px digits: scored at 32 px (timm's config would ask 224 bicubic)."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    mine = tmp_path / "mine.pth"
    torch.save(timm.create_model("resnet18", pretrained=False, num_classes=10).state_dict(), mine)
    code, out, err = cli("eval", "timm:resnet18", "--weights", mine, "--num-classes", 10, *FLAGS,
                         "--json", tmp_path / "r.json")
    assert code == 0, err
    assert err.count("warning: timm:resnet18: no mean and std") == 1 and "--mean R,G,B --std R,G,B" in err
    model = json.loads((tmp_path / "r.json").read_text())["model"]
    assert model["input_size"] is None and model["resize"] is None
    assert model["preprocessing_source"] == dict.fromkeys(KEYS, "default")
    assert "preprocessing: input any size, no resize, mean 0.485,0.456,0.406" in " ".join(out.split())


def test_checkpoint_preprocessing_is_the_checkpoint_and_the_table_says_so(cli, digits_ckpt, tmp_path):
    code, out, err = cli("eval", digits_ckpt, *FLAGS, "--json", tmp_path / "r.json")
    assert code == 0, err
    assert "ImageNet" not in err
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["model"]["preprocessing_source"] == dict.fromkeys(KEYS, "checkpoint")
    assert "(all from checkpoint)" in " ".join(out.split())
    # a result written before the record loads and renders, without sources
    del doc["model"]["preprocessing_source"]
    assert "checkpoint)" not in preprocessing_words(doc["model"])
    assert preprocessing_words(doc["model"]).startswith("preprocessing: input ")
    assert summary_table(doc).caption


def test_mixed_sources_are_named_each():
    words = preprocessing_words({"input_size": [32, 32], "resize": "bilinear", "mean": [0.5, 0.5, 0.5],
                                 "std": [0.25, 0.25, 0.25],
                                 "preprocessing_source": {"input_size": "card", "resize": "argument",
                                                          "mean": "weights", "std": "default"}})
    assert words == ("preprocessing: input 32x32 (card), resize bilinear (argument), mean 0.5,0.5,0.5 (weights), "
                     "std 0.25,0.25,0.25 (default)")


@pytest.mark.parametrize("columns", [80, 120])
def test_the_footer_fits_the_terminal(columns):
    from rich.cells import cell_len
    from rich.console import Console

    from qact_cli.eval.report import print_table

    cells = [{"corruption": "clean" if s == 0 else "fog", "severity": s, "n": 8, "acc": 0.5, "ece": 0.1,
              "ce_marginal_l2": 0.1, "nll": 1.2, "brier": 0.6,
              "calibrated": {"temperature": 1.5, "ece": 0.05, "ce_marginal_l2": 0.05, "nll": 1.1, "brier": 0.55}}
             for s in (0, 1)]
    doc = {"dataset": "gen:digits", "cells": cells,
           "model": {"name": "timm:resnet18", "arch": "resnet18", "act": None, "input_size": [224, 224],
                     "resize": "bicubic", "mean": [0.4914, 0.4822, 0.4465], "std": [0.247, 0.2435, 0.2616],
                     "preprocessing_source": {"input_size": "argument", "resize": "card", "mean": "weights",
                                              "std": "default"}},
           "protocol": {"batch_size": 8, "context": "batch", "adapt": "none", "limit": 8, "seed": 0},
           "summary": {"by_severity": {str(s): {"acc_mean": 0.5, "acc_std": 0.0, "ece_mean": 0.1, "ece_std": 0.0}
                                       for s in (0, 1)}, "mean_corruption_acc": 0.5, "mce": None}}
    console = Console(width=columns, force_terminal=True, color_system=None, record=True)
    print_table(console, summary_table(doc))
    text = console.export_text()
    assert max(cell_len(line) for line in text.splitlines()) <= columns
    flat = " ".join(text.split())
    assert "input 224x224 (argument)" in flat and "std 0.247,0.2435,0.2616 (default)" in flat
    assert "temperature T = 1.5000, raw -> calibrated: ECE 0.1000 -> 0.0500 clean" in flat
