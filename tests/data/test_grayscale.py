"""Grayscale models: RGB -> L exactly as Pillow's `Image.convert("L")`, on the device, before the
normalisation (which then has one mean and one std); `channels` of the model's metadata drives it."""

import numpy as np
import pytest
import torch
from PIL import Image

from ext_model_builders import small_cnn
from qact_cli.data import get_dataset
from qact_cli.data.transforms import rgb_to_luma
from qact_cli.errors import UsageError
from qact_cli.eval.protocol import Preprocess, Protocol, evaluate, limited
from qact_cli.models.external import ModelOptions, resolve_model


def _pil_l(images: np.ndarray) -> np.ndarray:
    return np.stack([np.asarray(Image.fromarray(im).convert("L")) for im in images])


def test_luma_is_pillows_l_exactly():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (6, 64, 48, 3), dtype=np.uint8)
    images[0] = np.arange(64 * 48 * 3).reshape(64, 48, 3) % 256  # a sweep of every value in every channel
    images[1, ..., :] = rng.integers(0, 256, (64, 48, 1), dtype=np.uint8)  # grey stays grey
    got = rgb_to_luma(torch.from_numpy(images).permute(0, 3, 1, 2))
    assert got.dtype == torch.uint8 and got.shape == (6, 1, 64, 48)
    assert np.array_equal(got[:, 0].numpy(), _pil_l(images))
    assert np.array_equal(got[1, 0].numpy(), images[1, ..., 0])
    f = rgb_to_luma(torch.from_numpy(images).permute(0, 3, 1, 2).double())
    assert (f - got.double()).abs().max() <= 0.5  # floats: the same weights, without the rounding


def test_a_one_channel_model_is_scored_on_pillows_l():
    mean, std = [0.4], [0.3]
    net, meta = resolve_model(small_cnn(in_channels=1), ModelOptions(num_classes=10))
    meta["model"].update(channels=1, mean=mean, std=std)  # the card keys / flags, once they are wired
    doc = evaluate(net, meta, get_dataset("gen:digits"), Protocol("gen:digits", ["contrast"], [0, 2], 16, limit=30),
                   torch.device("cpu"))
    ds = get_dataset("gen:digits")
    for cell, row in zip(ds.cells(["contrast"], [0, 2], seed=0), doc["cells"]):
        src = limited(cell.source, 30)
        x, y = src.__getitems__(np.arange(len(src)))
        gray = torch.from_numpy(_pil_l(x.permute(0, 2, 3, 1).numpy())).unsqueeze(1).float()
        with torch.no_grad():
            logits = small_cnn(in_channels=1)((gray / 255 - mean[0]) / std[0]).double()
        assert row["acc"] == float((logits.argmax(1) == y).double().mean())
        assert row["nll"] == pytest.approx(float(torch.nn.functional.cross_entropy(logits, y.long())), abs=1e-5)


def test_mean_and_std_must_match_the_channels():
    with pytest.raises(UsageError, match="1-channel model needs 1 mean and std"):
        Preprocess([0.5, 0.5, 0.5], [0.2, 0.2, 0.2], None, None, "cpu", "m", channels=1)
    Preprocess([0.5], [0.2], None, None, "cpu", "m", channels=3)  # one value for every channel still broadcasts
