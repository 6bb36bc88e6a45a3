"""Feature cache: hit/miss, identity (weights, key, spec), atomic files, corrupt entries."""

import pytest
import torch

from qact_cli.models import dinov2
from qact_cli.models.dinov2 import FeatureSpec, extract_features, load_backbone
from qact_cli.probes.feature_cache import cache_path, cache_root, cached_features

TINY = "dinov2_tiny"
SPEC = FeatureSpec(res=28)


@pytest.fixture(autouse=True)
def tiny_arch(monkeypatch, tmp_path):
    monkeypatch.setitem(dinov2.ARCHS, TINY, (32, 2, 2))
    monkeypatch.setenv("QACT_CACHE", str(tmp_path / "qc"))


@pytest.fixture
def images():
    calls = []
    x = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))

    def images_fn():
        calls.append(1)
        return x

    images_fn.calls, images_fn.x = calls, x
    return images_fn


def test_second_call_hits_the_cache(images, tmp_path):
    bb = load_backbone(TINY, weights="random")
    first = cached_features(bb, "digits/test", images, spec=SPEC, device="cpu")
    second = cached_features(bb, "digits/test", images, spec=SPEC, device="cpu")
    assert len(images.calls) == 1 and torch.equal(first, second)
    torch.testing.assert_close(first, extract_features(bb, images.x, device="cpu", spec=SPEC))
    path = cache_path(bb, "digits/test", SPEC)
    assert cache_root() == tmp_path / "qc" / "features" and path.is_relative_to(cache_root()) and path.is_file()
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary files left
    cached_features(bb, "digits/test", images, spec=SPEC, device="cpu", refresh=True)
    assert len(images.calls) == 2


def test_key_spec_and_weights_are_part_of_the_identity(images, tmp_path):
    bb = load_backbone(TINY, weights="random", seed=0)
    cached_features(bb, "cifar10/train", images, spec=SPEC, device="cpu")
    cached_features(bb, "cifar10/test", images, spec=SPEC, device="cpu")
    cached_features(bb, "cifar10/train", images, spec=FeatureSpec(res=28, antialias=False), device="cpu")
    other = load_backbone(TINY, weights="random", seed=1)
    cached_features(other, "cifar10/train", images, spec=SPEC, device="cpu")
    assert len(images.calls) == 4
    # Same weights from a file: identified by sha256, and cached under it.
    path = tmp_path / "w.pth"
    torch.save(bb.state_dict(), path)
    from_file = load_backbone(TINY, weights=path)
    a = cached_features(from_file, "cifar10/train", images, spec=SPEC, device="cpu")
    b = cached_features(from_file, "cifar10/train", images, spec=SPEC, device="cpu")
    assert len(images.calls) == 5 and torch.equal(a, b)
    assert from_file.weights_sha256[:16] in str(cache_path(from_file, "cifar10/train", SPEC))
    explicit = tmp_path / "elsewhere"
    cached_features(from_file, "cifar10/train", images, spec=SPEC, device="cpu", cache_dir=explicit)
    assert len(images.calls) == 6 and any(explicit.rglob("*.pt"))


def test_corrupt_or_foreign_entry_is_recomputed(images):
    bb = load_backbone(TINY, weights="random")
    good = cached_features(bb, "k", images, spec=SPEC, device="cpu")
    path = cache_path(bb, "k", SPEC)
    path.write_bytes(path.read_bytes()[:100])
    again = cached_features(bb, "k", images, spec=SPEC, device="cpu")
    assert len(images.calls) == 2 and torch.equal(again, good)
    entry = torch.load(path, weights_only=True)
    entry["identity"]["key"] = "other"
    torch.save(entry, path)
    cached_features(bb, "k", images, spec=SPEC, device="cpu")
    assert len(images.calls) == 3
