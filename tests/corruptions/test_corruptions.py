"""Corruption API: shapes, dtypes, layouts, determinism, chunk independence, profiles, argument checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qact_cli.corruptions import COMMON, CORRUPTIONS, DETERMINISTIC, EXTRA, corrupt, resolve_profile
from qact_cli.errors import InputError, UsageError
from fixtures_images import natural


# one image size per profile; the imagenet profile on a small non-square image keeps the test fast and
# checks that shape-dependent details follow the image, not the profile
CASES = [("cifar", (32, 32)), ("tiny", (64, 64)), ("imagenet", (40, 48))]


def test_names_and_order():
    assert len(COMMON) == 15 and len(EXTRA) == 4 and CORRUPTIONS == COMMON + EXTRA
    assert CORRUPTIONS[:4] == ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur")
    assert EXTRA == ("speckle_noise", "gaussian_blur", "spatter", "saturate")
    assert set(DETERMINISTIC) < set(CORRUPTIONS)


def test_registry_lookups_take_a_name_or_the_function():
    from qact_cli.corruptions import check_name, get_corruption, weather
    from qact_cli.corruptions.profiles import Frost, params

    spec = get_corruption(weather.frost)
    assert spec is get_corruption("frost") and spec.group == "common" and not spec.deterministic
    assert check_name(weather.fog) == "fog" and get_corruption("saturate").group == "extra"
    assert params("cifar", weather.frost, 2) == params("cifar", "frost", 2) == Frost(1, 0.3, 0.2)
    x = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    assert np.array_equal(corrupt(x, weather.fog, 3, seed=1), corrupt(x, "fog", 3, seed=1))
    with pytest.raises(UsageError, match="unknown corruption"):
        get_corruption(lambda x, c, rng: x)


def test_resolve_profile():
    assert resolve_profile(32, 32) == "cifar" and resolve_profile(48, 40) == "cifar"
    assert resolve_profile(49, 49) == "tiny" and resolve_profile(128, 64) == "tiny"
    assert resolve_profile(129, 100) == "imagenet" and resolve_profile(224, 224) == "imagenet"


@pytest.mark.parametrize("profile,size", CASES)
@pytest.mark.parametrize("name", CORRUPTIONS)
def test_shape_determinism_and_chunks(name, profile, size):
    x = natural(size, 5, seed=1)
    sev = 2 + CORRUPTIONS.index(name) % 4  # spread the severities over the corruptions
    out = corrupt(x, name, sev, profile=profile, seed=3)
    assert out.shape == x.shape and out.dtype == np.uint8
    assert not np.array_equal(out, x)
    # same seed, same bytes; chunked calls with matching start_index, same bytes
    assert np.array_equal(out, corrupt(x, name, sev, profile=profile, seed=3))
    parts = [corrupt(x[a:b], name, sev, profile=profile, seed=3, start_index=a) for a, b in ((0, 2), (2, 3), (3, 5))]
    assert np.array_equal(out, np.concatenate(parts))
    # any subset in any order, given its dataset indices, gets the same bytes as in the whole call
    pick = [4, 0, 2]
    assert np.array_equal(out[pick], corrupt(x[pick], name, sev, profile=profile, seed=3, indices=pick))
    if name not in DETERMINISTIC:
        assert not np.array_equal(out, corrupt(x, name, sev, profile=profile, seed=4))
        # a different position in the dataset gets different randomness
        assert not np.array_equal(out[1:2], corrupt(x[1:2], name, sev, profile=profile, seed=3, start_index=0))


@pytest.mark.parametrize("name", ["gaussian_noise", "glass_blur", "frost", "saturate"])
def test_layouts_round_trip(name):
    x = natural((32, 32), 3)
    ref = corrupt(x, name, 3, seed=5)
    t = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()
    out_t = corrupt(t, name, 3, seed=5)
    assert isinstance(out_t, torch.Tensor) and out_t.dtype == torch.uint8 and out_t.shape == t.shape
    assert np.array_equal(out_t.permute(0, 2, 3, 1).numpy(), ref)
    grey = x[..., 0]
    for g in (grey, grey[..., None]):
        out_g = corrupt(g, name, 3, seed=5)
        assert out_g.shape == g.shape and out_g.dtype == np.uint8
    out_gt = corrupt(torch.from_numpy(grey)[:, None], name, 3, seed=5)
    assert out_gt.shape == (3, 1, 32, 32)
    assert np.array_equal(out_gt[:, 0].numpy(), corrupt(grey, name, 3, seed=5))


def test_severity_zero_and_empty_batch():
    x = natural((32, 32), 2)
    assert np.array_equal(corrupt(x, "fog", 0), x)
    assert corrupt(x[:0], "fog", 3).shape == (0, 32, 32, 3)


def test_profile_changes_parameters():
    x = natural((32, 32), 2)
    assert np.array_equal(corrupt(x, "contrast", 3), corrupt(x, "contrast", 3, profile="cifar"))
    assert not np.array_equal(corrupt(x, "contrast", 3, profile="cifar"), corrupt(x, "contrast", 3, profile="imagenet"))


def test_bad_arguments():
    x = natural((32, 32), 1)
    with pytest.raises(UsageError, match="gaussian_noise"):
        corrupt(x, "blizzard", 3)
    for bad in (6, -1, 2.5):
        with pytest.raises(UsageError):
            corrupt(x, "fog", bad)
    with pytest.raises(UsageError):
        corrupt(x, "fog", 3, profile="huge")
    with pytest.raises(UsageError, match="indices"):
        corrupt(x, "fog", 3, indices=[0, 1])
    with pytest.raises(InputError, match="uint8"):
        corrupt(x.astype(np.float32), "fog", 3)
    with pytest.raises(InputError):
        corrupt(x[0], "fog", 3)  # (H, W, 3) without the batch axis reads as 32 images of 3 px
    with pytest.raises(InputError, match="16x16"):
        corrupt(np.zeros((1, 8, 8, 3), np.uint8), "fog", 3)
