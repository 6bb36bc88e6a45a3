"""The corrupted datasets in their published layouts: cells, row blocks, severity 0, bad input."""

import json
import pickle

import numpy as np
import pytest
import torch

from fixtures_corrupted import (digits_test, perturb, write_cifar_clean, write_folder_c, write_mnist_c, write_npy_c,
                                write_tiny_clean)
from qact_cli.data import get_dataset
from qact_cli.data.npyrows import NpyRows
from qact_cli.errors import InputError, UsageError

N = 12  # images per severity block


@pytest.fixture
def cifar_c(tmp_path):
    x, y = digits_test(N)
    d = write_npy_c(tmp_path, x, y, corruptions=("gaussian_noise", "fog", "snow"))
    return tmp_path, d, x, y


def _all(source):
    x, y = source.__getitems__(np.arange(len(source)))
    return x.permute(0, 2, 3, 1).numpy(), y.numpy()


def test_cifar10c_cells_are_the_severity_row_blocks(cifar_c):
    root, d, x, y = cifar_c
    ds = get_dataset("cifar10c", root)
    cells = ds.cells(["fog", "gaussian_noise"], [1, 2, 3, 4, 5])
    assert [(c.corruption, c.severity) for c in cells] == [("fog", s) for s in range(1, 6)] + [("gaussian_noise", s) for s in range(1, 6)]
    for c in cells:
        rows = np.load(d / f"{c.corruption}.npy")[(c.severity - 1) * N: c.severity * N]
        got_x, got_y = _all(c.source)
        assert np.array_equal(got_x, rows) and np.array_equal(got_x, perturb(x, c.corruption, c.severity))
        assert np.array_equal(got_y, y) and got_y.dtype == np.int64


def test_data_root_may_be_the_folder_itself(cifar_c):
    root, d, _, _ = cifar_c
    a = get_dataset("cifar10c", root).cells(["snow"], [3])[0]
    b = get_dataset("cifar10c", d).cells(["snow"], [3])[0]
    assert np.array_equal(_all(a.source)[0], _all(b.source)[0])


def test_severity_zero_is_the_clean_test_split(cifar_c):
    root, d, x, y = cifar_c
    ds = get_dataset("cifar10c", root)
    with pytest.raises(InputError) as e:
        ds.cells(["fog"], [0, 1])
    assert str(root / "cifar-10-batches-py") in str(e.value) and "--severities 1-5" in str(e.value)
    with pytest.warns(UserWarning, match="severity 0 skipped"):
        assert ds.default_severities() == [1, 2, 3, 4, 5]
    write_cifar_clean(root, x, y)
    for data_root in (root, d):  # found under the data root, or next to the -C folder given directly
        ds = get_dataset("cifar10c", data_root)
        assert ds.default_severities() == [0, 1, 2, 3, 4, 5]
        cells = ds.cells(["fog"], [0, 2])
        assert [(c.corruption, c.severity) for c in cells] == [("clean", 0), ("fog", 2)]
        cx, cy = _all(cells[0].source)
        assert np.array_equal(cx, x) and np.array_equal(cy, y)


def test_cifar100c_uses_the_cifar100_test_split(tmp_path):
    x, y = digits_test(N)
    y100 = (y * 7) % 100
    write_npy_c(tmp_path, x, y100, corruptions=("fog",), folder="CIFAR-100-C")
    write_cifar_clean(tmp_path, x, y100, cifar100=True)
    ds = get_dataset("cifar100c", tmp_path)
    assert ds.num_classes == 100
    cells = ds.cells(["fog"], [0, 5])
    assert np.array_equal(_all(cells[0].source)[1], y100) and np.array_equal(_all(cells[1].source)[1], y100)


def test_qact_corrupt_manifest_with_fewer_severities(tmp_path):
    x, y = digits_test(N)
    d = write_npy_c(tmp_path, x, y, corruptions=("fog",), folder="out", severities=(2, 4))
    (d / "manifest.json").write_text(json.dumps({"severities": [2, 4], "seed": 0}))
    ds = get_dataset("cifar10c", d)
    assert ds.severity_levels == (2, 4) and ds.block == N
    cells = ds.cells(["fog"], [4, 2])
    assert np.array_equal(_all(cells[0].source)[0], perturb(x, "fog", 4))
    assert np.array_equal(_all(cells[1].source)[0], perturb(x, "fog", 2))
    with pytest.raises(InputError, match=r"holds severities \[2, 4\]"):
        ds.cells(["fog"], [3])


def test_npy_rows_reads_like_numpy(tmp_path):
    a = np.random.default_rng(0).integers(0, 255, (50, 4, 5, 3), dtype=np.uint8)
    np.save(tmp_path / "a.npy", a)
    r = NpyRows.open(tmp_path / "a.npy")
    assert r.shape == a.shape and r.dtype == np.uint8 and r.ndim == 4 and len(r) == 50
    v = r.rows(10, 30)
    assert np.array_equal(v[:], a[10:30]) and np.array_equal(v[-1], a[29]) and np.array_equal(v[2:9:3], a[12:19:3])
    idx = np.array([5, 1, 1, 19, 0])
    assert np.array_equal(v[idx], a[10:30][idx]) and np.array_equal(r[[0, 49]], a[[0, 49]])
    assert np.array_equal(np.asarray(v), a[10:30])
    clone = pickle.loads(pickle.dumps(v))  # what a DataLoader worker receives: no data, only the location
    assert len(pickle.dumps(v)) < 1000 and np.array_equal(clone[3], a[13])


def test_tinyimagenetc_tree_and_clean_val(tmp_path):
    wnids = ["n02", "n01", "n03"]
    write_folder_c(tmp_path, "Tiny-ImageNet-C", wnids, 2, 64, ["fog", "contrast"], [1, 2])
    ds = get_dataset("tinyimagenetc", tmp_path)
    assert ds.classes == ["n01", "n02", "n03"] and ds.num_classes == 3
    with pytest.warns(UserWarning, match="severity 0 skipped"):
        assert ds.default_severities() == [1, 2]  # the severities the tree holds
    cells = ds.cells(["contrast"], [2])
    src = cells[0].source
    assert src.image_size == (64, 64) and list(src.labels) == [0, 0, 1, 1, 2, 2]
    assert [p.parent.name for p, _ in src.samples] == ["n01", "n01", "n02", "n02", "n03", "n03"]
    with pytest.raises(InputError, match="tiny-imagenet-200"):
        ds.cells(["fog"], [0])
    write_tiny_clean(tmp_path, wnids)
    ds = get_dataset("tinyimagenetc", tmp_path / "Tiny-ImageNet-C")
    assert ds.classes == ["n01", "n02", "n03"]  # from wnids.txt (sorted), next to the folder given directly
    clean = ds.cells(["fog"], [0, 1])[0]
    assert clean.severity == 0 and len(clean.source) == 6 and sorted(clean.source.labels) == [0, 0, 1, 1, 2, 2]


def test_imagenetc_has_no_clean_split_and_defaults_to_1_5(tmp_path):
    write_folder_c(tmp_path, "ImageNet-C", ["n01440764", "n01443537"], 1, 224, ["fog"], [1, 2, 3, 4, 5])
    ds = get_dataset("imagenetc", tmp_path)
    assert ds.default_severities() == [1, 2, 3, 4, 5] and ds.num_classes == 2
    with pytest.raises(InputError, match="--severities 1-5"):
        ds.cells(["fog"], [0])
    with pytest.raises(InputError, match="lacks snow severity 1"):
        ds.cells(["snow"], [1])


def test_mnistc_one_severity_and_identity_as_clean(tmp_path):
    d = write_mnist_c(tmp_path)
    ds = get_dataset("mnistc", tmp_path)
    assert ds.corruption_names() == ["fog", "shear"] and ds.default_severities() == [0, 1]
    cells = ds.cells(["shear", "fog"], [0, 1])
    assert [(c.corruption, c.severity) for c in cells] == [("clean", 0), ("shear", 1), ("fog", 1)]
    assert cells[0].source.image_size == (28, 28)
    x, _ = cells[1].source.__getitems__(np.arange(3))
    assert x.shape == (3, 3, 28, 28) and torch.equal(x[0, 0], torch.from_numpy(np.load(d / "shear" / "test_images.npy")[0, :, :, 0]))
    with pytest.raises(UsageError, match="one severity"):
        ds.cells(["fog"], [2])


# --- bad input ---------------------------------------------------------------------------------------

def test_missing_dataset_names_the_path_and_the_download_command(tmp_path):
    for name, folder in (("cifar10c", "CIFAR-10-C"), ("tinyimagenetc", "Tiny-ImageNet-C"), ("mnistc", "mnist_c")):
        with pytest.raises(InputError) as e:
            get_dataset(name, tmp_path)
        assert str(tmp_path / folder) in str(e.value) and f"--dataset {name} --download" in str(e.value)


def test_truncated_and_non_npy_files(cifar_c):
    root, d, _, _ = cifar_c
    raw = (d / "fog.npy").read_bytes()
    (d / "fog.npy").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(InputError, match=r"fog\.npy.*truncated"):
        get_dataset("cifar10c", root).cells(["fog"], [1])
    (d / "snow.npy").write_text("not an array")
    with pytest.raises(InputError, match=r"snow\.npy.*not a \.npy"):
        get_dataset("cifar10c", root).cells(["snow"], [1])


def test_labels_of_another_length_and_range(cifar_c):
    root, d, _, y = cifar_c
    np.save(d / "labels.npy", np.tile(y[:10], 5).astype(np.uint8))  # 50 labels for 60 rows
    with pytest.raises(InputError, match="rows but labels.npy has"):
        get_dataset("cifar10c", root).cells(["fog"], [1])
    np.save(d / "labels.npy", np.arange(5 * N - 1) % 10)
    with pytest.raises(InputError, match="5 equal severity blocks"):
        get_dataset("cifar10c", root)
    np.save(d / "labels.npy", np.tile(y + 90, 5))
    with pytest.raises(InputError, match="cifar100c"):
        get_dataset("cifar10c", root)


def test_missing_corruption_file_lists_what_is_there(cifar_c):
    root, d, _, _ = cifar_c
    ds = get_dataset("cifar10c", root)
    ds.cells(["fog"], [1])  # an absent file matters only when asked for
    with pytest.raises(InputError) as e:
        ds.cells(["fog", "frost"], [1])
    assert str(d / "frost.npy") in str(e.value) and "fog,gaussian_noise,snow" in str(e.value)


def test_empty_and_foreign_folders(tmp_path):
    d = write_folder_c(tmp_path, "Tiny-ImageNet-C", ["n01", "n02"], 1, 64, ["fog"], [1, 2])
    for p in (d / "fog" / "2" / "n01").iterdir():
        p.unlink()
    for p in (d / "fog" / "2" / "n02").iterdir():
        p.unlink()
    ds = get_dataset("tinyimagenetc", tmp_path)
    with pytest.raises(InputError, match="no image files"):
        ds.cells(["fog"], [2])
    (d / "fog" / "1" / "n99").mkdir()  # a class folder the clean set's wnids.txt does not know
    (tmp_path / "tiny-imagenet-200").mkdir()
    (tmp_path / "tiny-imagenet-200" / "wnids.txt").write_text("n01\nn02\n")
    with pytest.raises(InputError, match="n99"):
        get_dataset("tinyimagenetc", tmp_path).cells(["fog"], [1])
    (tmp_path / "empty" / "Tiny-ImageNet-C" / "fog" / "1").mkdir(parents=True)
    with pytest.raises(InputError, match="no <corruption>/<severity>/<class>/ folders"):
        get_dataset("tinyimagenetc", tmp_path / "empty")
