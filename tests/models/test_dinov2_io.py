"""DINOv2 weights handling (missing / truncated / foreign files, download with resume from a local
HTTP server, sha256) and the input forms of extract_features, on a tiny test-only variant."""

import hashlib
import os
import warnings

import numpy as np
import pytest
import torch

from fixtures_http import Server
from qact_cli.errors import InputError
from qact_cli.models import dinov2
from qact_cli.models.dinov2 import FeatureSpec, backbone_features, extract_features, load_backbone
from qact_cli.utils import sha256_file

TINY = "dinov2_tiny"  # embed 32, depth 2, heads 2: a ~0.4 MB file with the official key layout


@pytest.fixture(autouse=True)
def tiny_arch(monkeypatch, tmp_path):
    monkeypatch.setitem(dinov2.ARCHS, TINY, (32, 2, 2))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))


def cache_file():
    return dinov2.default_weights_path(TINY)


def tiny_file_bytes(tmp_path, seed=0):
    path = tmp_path / "w.pth"
    torch.save(load_backbone(TINY, weights="random", seed=seed).state_dict(), path)
    return path.read_bytes()


@pytest.fixture
def serve(monkeypatch):
    servers = []

    def start(files, ranges=True):
        s = Server(files, ranges)
        servers.append(s)
        monkeypatch.setattr(dinov2, "WEIGHTS_BASE_URL", s.url)
        return s

    yield start
    for s in servers:
        s.close()


URL_PATH = f"/{TINY}/{TINY}_pretrain.pth"


# --- missing and bad files ----------------------------------------------------------------------


def test_missing_weights_message_names_file_folder_and_commands(serve):
    server = serve({})
    with pytest.raises(InputError) as e:
        load_backbone(TINY)
    msg = str(e.value)
    assert f"{TINY}_pretrain.pth" in msg and str(cache_file().parent) in msg
    assert f"qact train --arch {TINY} --download" in msg and "--weights PATH" in msg
    assert "\n" not in msg and server.requests == []  # no network without download=True
    with pytest.raises(InputError, match="nowhere.pth"):
        load_backbone(TINY, weights="/nowhere.pth")


def test_truncated_and_garbage_files_are_input_errors(tmp_path):
    good = tiny_file_bytes(tmp_path)
    for name, data in [("trunc.pth", good[: len(good) // 2]), ("garbage.pth", b"not a checkpoint" * 10), ("empty.pth", b"")]:
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(InputError, match=name) as e:
            load_backbone(TINY, weights=path)
        assert "truncated or corrupt" in str(e.value)


def test_foreign_state_dicts_are_input_errors(tmp_path):
    sd = load_backbone(TINY, weights="random").state_dict()
    cases = {
        "extra.pth": {**sd, "head.weight": torch.zeros(3)},
        "missing.pth": {k: v for k, v in sd.items() if k != "mask_token"},
        "shape.pth": {**sd, "pos_embed": torch.zeros(1, 1370, 48)},
        "wrapped.pth": {"model": sd},
        "tensor.pth": torch.zeros(3),
    }
    expect = {"extra.pth": "head.weight", "missing.pth": "mask_token", "shape.pth": "pos_embed"}
    for name, obj in cases.items():
        path = tmp_path / name
        torch.save(obj, path)
        with pytest.raises(InputError, match=name) as e:
            load_backbone(TINY, weights=path)
        assert expect.get(name, "") in str(e.value)
    with pytest.raises(Exception, match="unknown DINOv2 backbone"):
        load_backbone("dinov2_vitx14", weights="random")


def test_explicit_path_and_sha256(tmp_path):
    data = tiny_file_bytes(tmp_path, seed=3)
    path = tmp_path / "mine.pth"
    path.write_bytes(data)
    bb = load_backbone(TINY, weights=str(path))
    assert bb.weights_path == str(path) and bb.weights_sha256 == hashlib.sha256(data).hexdigest()
    assert load_backbone(TINY, weights="random").weights_sha256 is None


def test_sha256_is_memoised_by_path_size_and_mtime(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"a" * 1000)
    first = sha256_file(path, cached=True)  # what load_backbone uses for pretrained weights
    st = os.stat(path)
    path.write_bytes(b"b" * 1000)  # same size; restore the mtime: the memo cannot tell
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert sha256_file(path, cached=True) == first
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert sha256_file(path, cached=True) == hashlib.sha256(b"b" * 1000).hexdigest()


# --- download -----------------------------------------------------------------------------------


def test_download_into_hub_cache(tmp_path, serve):
    data = tiny_file_bytes(tmp_path)
    server = serve({URL_PATH: data})
    seen = []
    bb = load_backbone(TINY, download=True, progress=lambda done, total: seen.append((done, total)))
    assert cache_file().read_bytes() == data and bb.weights_path == str(cache_file())
    assert bb.weights_sha256 == hashlib.sha256(data).hexdigest()
    assert seen[-1] == (len(data), len(data)) and server.requests == [(URL_PATH, None)]
    assert sorted(p.name for p in cache_file().parent.iterdir()) == [cache_file().name]  # no temp left
    load_backbone(TINY, download=True)  # cached: no second request
    assert len(server.requests) == 1


@pytest.mark.parametrize("ranges", [True, False])
def test_download_resumes_a_partial_file(tmp_path, serve, ranges):
    data = tiny_file_bytes(tmp_path)
    server = serve({URL_PATH: data}, ranges=ranges)
    part = cache_file().with_name(cache_file().name + ".part")
    part.parent.mkdir(parents=True)
    cut = len(data) // 3
    part.write_bytes(data[:cut])
    load_backbone(TINY, download=True)
    assert server.requests == [(URL_PATH, f"bytes={cut}-")]
    assert cache_file().read_bytes() == data and not part.exists()


def test_download_failure_is_an_input_error(tmp_path, serve):
    server = serve({})
    with pytest.raises(InputError, match="could not download") as e:
        load_backbone(TINY, download=True)
    assert "404" in str(e.value) or "Not Found" in str(e.value)
    assert not cache_file().exists() and len(server.requests) == 1


# --- extract_features inputs --------------------------------------------------------------------


def test_feature_inputs_and_trainable_output(tmp_path):
    bb = load_backbone(TINY, weights="random")
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (5, 3, 20, 20), dtype=torch.uint8, generator=g)
    spec = FeatureSpec(res=28)
    done = []
    ref = extract_features(bb, x, batch_size=2, device="cpu", spec=spec, progress=done.append)
    assert ref.shape == (5, 32) and done == [2, 4, 5]
    np.save(tmp_path / "x.npy", x.permute(0, 2, 3, 1).numpy())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a read-only memory map must not trip torch.from_numpy
        mapped = extract_features(bb, np.load(tmp_path / "x.npy", mmap_mode="r"), device="cpu", spec=spec)
    torch.testing.assert_close(mapped, ref)
    as_numpy = extract_features(bb, x.permute(0, 2, 3, 1).numpy(), device="cpu", spec=spec)
    streamed = extract_features(bb, iter([x[:3], x[3:].numpy().transpose(0, 2, 3, 1)]), device="cpu", spec=spec)
    torch.testing.assert_close(as_numpy, ref)
    torch.testing.assert_close(streamed, ref)
    gray = x[:, :1]
    torch.testing.assert_close(
        extract_features(bb, gray[:, 0], spec=spec, device="cpu"),
        extract_features(bb, gray.expand(-1, 3, -1, -1), spec=spec, device="cpu"),
    )
    both = extract_features(bb, x, device="cpu", spec=FeatureSpec(res=28, feature="cls+avgpool"))
    assert both.shape == (5, 64) and torch.allclose(both[:, :32], ref, atol=1e-6)
    # A probe's model gets (uint8/255 - mean)/std at the dataset's size and resizes internally.
    normed = (x.float() / 255 - torch.tensor(spec.mean).view(1, 3, 1, 1)) / torch.tensor(spec.std).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(backbone_features(bb, normed, spec), ref, rtol=1e-4, atol=1e-5)
    head = torch.nn.Linear(32, 3)
    head(ref).sum().backward()  # not an inference tensor: a probe can be trained on it
    assert head.weight.grad is not None
    with pytest.raises(ValueError, match="uint8"):
        extract_features(bb, x.float(), device="cpu", spec=spec)
    assert extract_features(bb, [], device="cpu", spec=spec).shape == (0, 32)
    assert np.isfinite(ref.numpy()).all()
