import pickle

import numpy as np
import pytest
import torch

from qact_cli.data import get_dataset, make_loader
from qact_cli.data.base import to_nchw
from qact_cli.errors import InputError, UsageError


def test_digits_split_is_fixed_and_upsampled():
    ds = get_dataset("digits")
    tr, te = ds.split("train"), ds.split("test")
    assert (len(tr), len(te)) == (1437, 360)
    assert tr.image_size == (32, 32) and ds.num_classes == 10
    x, y = te.__getitems__(list(range(8)))
    assert x.dtype == torch.uint8 and x.shape == (8, 3, 32, 32)
    assert torch.equal(x[:, 0], x[:, 1])  # grey replicated to RGB
    # same split on every call (fixed seed, stratified)
    assert np.array_equal(get_dataset("digits").split("test").labels, te.labels)
    assert np.bincount(te.labels).min() >= 34


def test_loader_keeps_file_order_and_seeded_shuffle():
    te = get_dataset("digits").split("test")
    ys = torch.cat([y for _, y in make_loader(te, 100)])
    assert np.array_equal(ys.numpy(), te.labels)
    a = torch.cat([y for _, y in make_loader(te, 50, shuffle=True, seed=3)])
    b = torch.cat([y for _, y in make_loader(te, 50, shuffle=True, seed=3)])
    assert torch.equal(a, b) and not torch.equal(a, ys)


def test_to_nchw_layouts():
    grey = np.arange(2 * 4 * 5, dtype=np.uint8).reshape(2, 4, 5)
    assert to_nchw(grey).shape == (2, 3, 4, 5)
    assert to_nchw(grey[..., None]).shape == (2, 3, 4, 5)
    rgb = np.random.default_rng(0).integers(0, 255, (2, 4, 5, 3), dtype=np.uint8)
    assert torch.equal(to_nchw(rgb)[1, 2], torch.from_numpy(rgb[1, :, :, 2]))


def _write_npy_dir(d, n=20, h=28):
    rng = np.random.default_rng(0)
    d.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        np.save(d / f"{split}_images.npy", rng.integers(0, 255, (n, h, h, 1), dtype=np.uint8))
        np.save(d / f"{split}_labels.npy", rng.integers(0, 10, n).astype(np.int64))


def test_npy_dir_memory_maps(tmp_path):
    _write_npy_dir(tmp_path / "m")
    ds = get_dataset(f"npy:{tmp_path / 'm'}")
    te = ds.split("test")
    assert isinstance(te.images, np.memmap) and te.image_size == (28, 28)
    x, _ = te.__getitems__([3, 1, 2])
    assert x.shape == (3, 3, 28, 28)
    assert torch.equal(x[0, 0], torch.from_numpy(np.load(tmp_path / "m" / "test_images.npy")[3, :, :, 0]))


def test_npy_dir_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        get_dataset(f"npy:{tmp_path / 'nope'}")
    _write_npy_dir(tmp_path / "m")
    np.save(tmp_path / "m" / "test_labels.npy", np.zeros(3, np.int64))
    with pytest.raises(InputError, match="labels"):
        get_dataset(f"npy:{tmp_path / 'm'}").split("test")
    (tmp_path / "m" / "test_images.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(InputError, match="truncated or not a .npy"):
        get_dataset(f"npy:{tmp_path / 'm'}").split("test")
    (tmp_path / "m" / "test_images.npy").write_bytes(b"PK\x03\x04 a damaged zip (.npz) under a .npy name")
    with pytest.raises(InputError, match="truncated or not a .npy"):
        get_dataset(f"npy:{tmp_path / 'm'}").split("test")
    np.savez(tmp_path / "m" / "a.npz", x=np.zeros(3))
    (tmp_path / "m" / "a.npz").replace(tmp_path / "m" / "test_images.npy")
    with pytest.raises(InputError, match="not a single .npy array"):
        get_dataset(f"npy:{tmp_path / 'm'}").split("test")


def _write_cifar(root, n=12):
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": rng.integers(0, 255, (n, 3072), dtype=np.uint8), "labels": list(rng.integers(0, 10, n)),
                 "batch_label": name}
        with open(base / name, "wb") as f:
            pickle.dump(batch, f)
    return base


def test_cifar10_torchvision_format(tmp_path):
    base = _write_cifar(tmp_path)
    ds = get_dataset("cifar10", root=tmp_path)
    tr, te = ds.split("train"), ds.split("test")
    assert len(tr) == 60 and len(te) == 12 and te.image_size == (32, 32)
    with open(base / "test_batch", "rb") as f:
        raw = pickle.load(f)
    x, y = te.__getitems__([0])
    assert torch.equal(x[0], torch.from_numpy(raw["data"][0].reshape(3, 32, 32)))
    assert y[0] == raw["labels"][0]


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_cifar_pickle_payload_never_runs(tmp_path, capsys):
    base = _write_cifar(tmp_path)
    with open(base / "test_batch", "wb") as f:
        pickle.dump({"data": _Evil(), "labels": []}, f)
    with pytest.raises(InputError, match="corrupt"):
        get_dataset("cifar10", root=tmp_path).split("test")
    assert "pwned" not in capsys.readouterr().out


def test_missing_dataset_names_path_and_download(tmp_path):
    with pytest.raises(InputError) as e:
        get_dataset("cifar10", root=tmp_path)
    assert str(tmp_path / "cifar-10-batches-py") in str(e.value) and "--download" in str(e.value)


def test_unknown_dataset_is_usage_error():
    with pytest.raises(UsageError, match="unknown dataset"):
        get_dataset("imagenet1k")


def test_image_folder(tmp_path):
    from PIL import Image

    for split in ("train", "test"):
        for c in ("cat", "dog"):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(3):
                Image.fromarray(np.full((16, 16, 3), 40 * i, np.uint8)).save(tmp_path / split / c / f"{i}.png")
    ds = get_dataset(f"folder:{tmp_path}")
    assert ds.classes == ["cat", "dog"] and ds.num_classes == 2
    te = ds.split("test")
    xs, ys = zip(*[b for b in make_loader(te, 4, workers=0)])
    assert torch.cat(ys).tolist() == [0, 0, 0, 1, 1, 1] and xs[0].shape == (4, 3, 16, 16)


def test_empty_folder_is_input_error(tmp_path):
    (tmp_path / "a").mkdir()
    with pytest.raises(InputError, match="no image files"):
        get_dataset(f"folder:{tmp_path}").split("test")
