"""`qact eval` on the corrupted layouts from the command line: tables, JSON, several models, bad input."""

import json

import numpy as np
import pytest

from fixtures_corrupted import digits_test, random_checkpoint, write_cifar_clean, write_folder_c, write_npy_c

N = 16
CORR = "gaussian_noise,fog"


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    x, y = digits_test(N)
    write_npy_c(root, x, y, corruptions=("gaussian_noise", "fog", "snow"))
    write_cifar_clean(root, x, y)
    return root


def _one_clean_line(code, err, expected_code=3):
    assert code == expected_code, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_table_on_a_narrow_pipe_keeps_every_number(cli, root, digits_ckpt, monkeypatch, tmp_path):
    monkeypatch.setenv("COLUMNS", "40")
    code, out, err = cli("eval", digits_ckpt, "--dataset", "cifar10c", "--data-root", root, "--corruptions", CORR,
                         "--per-corruption", "--json", tmp_path / "r.json", "--device", "cpu")
    assert code == 0, err
    doc = json.loads((tmp_path / "r.json").read_text())
    assert "…" not in out
    lines = out.splitlines()
    for s in range(6):
        row = doc["summary"]["by_severity"][str(s)]
        assert any(f"{row['acc_mean']:.4f} ± {row['acc_std']:.4f}" in ln and f"{row['ece_mean']:.4f} ± {row['ece_std']:.4f}" in ln
                   for ln in lines), s
    assert f"{doc['summary']['mean_corruption_acc']:.4f}" in out and "mean corruption acc" in out
    for cell in doc["cells"][1:]:  # the grid: every cell's accuracy / ECE
        assert f"{cell['acc']:.4f} / {cell['ece']:.4f}" in out


def test_json_to_stdout_holds_only_json_with_the_protocol(cli, root, digits_ckpt):
    code, out, err = cli("eval", digits_ckpt, "--dataset", "cifar10c", "--data-root", root / "CIFAR-10-C",
                         "--corruptions", "fog", "--severities", "1-5", "--batch-size", "8", "--limit", "10",
                         "--json", "-", "--device", "cpu")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["schema"] == "qact.eval/1" and doc["dataset"] == "cifar10c"
    assert doc["protocol"].pop("data")["n_images"] > 0  # the identity of the data scored (--baseline checks it)
    assert doc["protocol"] == {"corruptions": ["fog"], "severities": [1, 2, 3, 4, 5], "batch_size": 8, "context": "batch",
                               "adapt": "none", "limit": 10, "seed": 0}
    assert [c["n"] for c in doc["cells"]] == [10] * 5 and "accuracy" in err  # the table went to stderr


def test_several_checkpoints_evaluate_the_same_cells(cli, root, digits_ckpt, tmp_path):
    other = random_checkpoint(tmp_path / "rand.pt", 10, 32)
    code, out, err = cli("eval", digits_ckpt, other, "--dataset", "cifar10c", "--data-root", root, "--corruptions", "snow",
                         "--severities", "0,3", "--json", "-", "--device", "cpu")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["schema"] == "qact.eval-multi/1" and [r["model"]["name"] for r in doc["results"]] == ["lenet_relu", "rand"]
    a, b = ([(c["corruption"], c["severity"], c["n"]) for c in r["cells"]] for r in doc["results"])
    assert a == b == [("clean", 0, N), ("snow", 3, N)]
    assert doc["results"][0]["cells"] != doc["results"][1]["cells"]


def test_download_flag_fetches_the_missing_set(cli, digits_ckpt, tmp_path, monkeypatch):
    import qact_cli.data.download as download

    calls = []

    def fake(name, root, progress=None, **kw):
        calls.append(name)
        x, y = digits_test(N)
        return write_npy_c(root, x, y, corruptions=("fog",))

    monkeypatch.setattr(download, "download_and_extract", fake)
    code, _, err = cli("eval", digits_ckpt, "--dataset", "cifar10c", "--data-root", tmp_path, "--corruptions", "fog",
                       "--severities", "1", "--download", "--device", "cpu")
    assert code == 0 and calls == ["cifar10c"], err


# --- bad input: exit 3, one line naming the problem, no traceback -----------------------------------

def test_missing_set_names_path_and_download_command(cli, digits_ckpt, tmp_path):
    code, _, err = cli("eval", digits_ckpt, "--dataset", "cifar10c", "--data-root", tmp_path)
    _one_clean_line(code, err)
    assert str(tmp_path / "CIFAR-10-C") in err and "qact eval CKPT --dataset cifar10c --download" in err


def test_severity_zero_without_the_clean_split(cli, digits_ckpt, tmp_path):
    x, y = digits_test(N)
    write_npy_c(tmp_path, x, y, corruptions=("fog",))
    code, _, err = cli("eval", digits_ckpt, "--dataset", "cifar10c", "--data-root", tmp_path, "--corruptions", "fog",
                       "--severities", "0-5")
    _one_clean_line(code, err)
    assert str(tmp_path / "cifar-10-batches-py") in err
    code, out, err = cli("eval", digits_ckpt, "--dataset", "cifar10c", "--data-root", tmp_path, "--corruptions", "fog",
                         "--json", "-", "--device", "cpu")  # default severities: what is there, with a warning
    assert code == 0 and json.loads(out)["protocol"]["severities"] == [1, 2, 3, 4, 5] and "severity 0 skipped" in err


@pytest.mark.parametrize("damage", ["truncated", "not_npy", "labels_length", "missing_file"])
def test_damaged_npy_folder(cli, digits_ckpt, tmp_path, damage):
    x, y = digits_test(N)
    d = write_npy_c(tmp_path, x, y, corruptions=("fog", "snow"))
    if damage == "truncated":
        (d / "fog.npy").write_bytes((d / "fog.npy").read_bytes()[:-5000])
    elif damage == "not_npy":
        (d / "fog.npy").write_bytes(b"PK\x03\x04 a zip, not an array")
    elif damage == "labels_length":
        np.save(d / "labels.npy", np.tile(y[:10], 5))
    else:
        (d / "fog.npy").unlink()
    code, _, err = cli("eval", digits_ckpt, "--dataset", "cifar10c", "--data-root", tmp_path, "--corruptions", "fog,snow",
                       "--severities", "1-5")
    _one_clean_line(code, err)
    assert str(d / ("labels.npy" if damage == "labels_length" else "fog.npy")) in err or str(d / "fog.npy") in err


def test_hundred_classes_on_a_ten_class_model(cli, digits_ckpt, tmp_path):
    x, y = digits_test(N)
    write_npy_c(tmp_path, x, (y * 9) % 100, corruptions=("fog",), folder="CIFAR-100-C")
    code, _, err = cli("eval", digits_ckpt, "--dataset", "cifar100c", "--data-root", tmp_path, "--corruptions", "fog",
                       "--severities", "1")
    _one_clean_line(code, err)
    assert "10-class model" in err and "100 classes" in err
    write_npy_c(tmp_path, x, (y * 9) % 100, corruptions=("fog",), folder="CIFAR-10-C")  # 100 labels under the 10-class name
    code, _, err = cli("eval", digits_ckpt, "--dataset", "cifar10c", "--data-root", tmp_path, "--corruptions", "fog",
                       "--severities", "1")
    _one_clean_line(code, err)
    assert "cifar100c" in err


def test_images_of_another_size_and_empty_folders(cli, digits_ckpt, tmp_path):
    d = write_folder_c(tmp_path, "Tiny-ImageNet-C", ["n01", "n02"], 1, 64, ["fog"], [1, 2])
    code, _, err = cli("eval", random_checkpoint(tmp_path / "m2.pt", 2, 32), "--dataset", "tinyimagenetc", "--data-root",
                       tmp_path, "--corruptions", "fog", "--severities", "1,2")
    _one_clean_line(code, err)
    assert "expects 32x32" in err and "64x64" in err
    for p in (d / "fog" / "2").rglob("*.JPEG"):
        p.unlink()
    code, _, err = cli("eval", random_checkpoint(tmp_path / "m.pt", 2, 64), "--dataset", "tinyimagenetc", "--data-root",
                       tmp_path, "--corruptions", "fog", "--severities", "1,2")
    _one_clean_line(code, err)
    assert "no image files" in err and str(d / "fog" / "2") in err


@pytest.mark.parametrize("fmt", ["npy", "png"])
def test_folders_written_by_qact_corrupt_evaluate_the_same_way(cli, digits_ckpt, tmp_path, fmt):
    x, y = digits_test(N)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    out = tmp_path / "out"
    code, _, err = cli("corrupt", "--input", tmp_path / "x.npy", "--labels", tmp_path / "y.npy", "--corruptions",
                       "contrast,fog", "--severities", "4,2", "--format", fmt, "--out", out, "--device", "cpu")
    assert code == 0, err
    name = "cifar10c" if fmt == "npy" else "tinyimagenetc"
    code, stdout, err = cli("eval", digits_ckpt, "--dataset", name, "--data-root", out, "--corruptions", "fog,contrast",
                            "--json", "-", "--device", "cpu")
    assert code == 0, err
    doc = json.loads(stdout)
    # severity 0 is the input the manifest names; the severities are the ones written
    assert [(c["corruption"], c["severity"], c["n"]) for c in doc["cells"]] == \
        [("clean", 0, N), ("fog", 2, N), ("fog", 4, N), ("contrast", 2, N), ("contrast", 4, N)]
    if fmt == "npy":
        from qact_cli.data import get_dataset

        cell = get_dataset("cifar10c", out).cells(["fog"], [2])[0]
        rows = np.load(out / "fog.npy")[N:2 * N]  # written in the order asked: 4 then 2
        assert np.array_equal(cell.source.__getitems__(np.arange(N))[0].permute(0, 2, 3, 1).numpy(), rows)


def test_corrupt_from_a_registered_dataset_records_it(cli, tmp_path):
    """`qact corrupt --dataset digits`: the digits test split, corrupted as the gen:digits cells are."""
    out = tmp_path / "digits-C"
    code, _, err = cli("corrupt", "--dataset", "digits", "--corruptions", "fog", "--severities", "3", "--out", out,
                       "--device", "cpu", "--seed", "5")
    assert code == 0, err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["source"]["dataset"] == "digits (test)" and manifest["seed"] == 5 and manifest["complete"]
    from qact_cli.data import get_dataset

    cell = get_dataset("gen:digits", tmp_path).cells(["fog"], [3], seed=5)[0]
    written = np.load(out / "fog.npy")
    assert np.array_equal(cell.source.__getitems__(np.arange(len(written)))[0].permute(0, 2, 3, 1).numpy(), written)
