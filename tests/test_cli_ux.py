"""The small conveniences of the CLI: --version, -h, "did you mean", Click's errors as one `qact:`
line with the documented exit codes, complete command descriptions, corrupt --limit and resuming."""

import json
import sys

import numpy as np
import pytest


def run_main(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    """The console script's main() in-process (Click's standalone handling off, our formatting on)."""
    from qact_cli.cli import main

    monkeypatch.setattr(sys, "argv", ["qact", *map(str, args)])
    with pytest.raises(SystemExit) as exc:
        main()
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def test_version_names_qact_torch_torchvision_and_the_device(monkeypatch, capsys):
    import torch
    import torchvision

    from qact_cli import __version__

    code, out, _ = run_main(monkeypatch, capsys, "--version")
    assert code == 0
    assert out.startswith(f"qact {__version__} ") and f"torch {torch.__version__}" in out
    assert f"torchvision {torchvision.__version__}" in out and "device auto = cpu" in out


@pytest.mark.parametrize("args", [["-h"], ["eval", "-h"], ["compare", "-h"], ["corrupt", "-h"], ["train", "-h"]])
def test_h_is_help_everywhere(monkeypatch, capsys, args):
    code, out, _ = run_main(monkeypatch, capsys, *args)
    assert code == 0 and out.startswith("Usage: qact") and "-h, --help" in out


def test_top_level_help_has_whole_descriptions(monkeypatch, capsys):
    code, out, _ = run_main(monkeypatch, capsys, "--help")
    commands = out[out.index("Commands:"):].splitlines()[1:]
    assert code == 0 and len([c for c in commands if c.strip()]) == 4
    for line in commands:
        assert not line.rstrip().endswith("..."), line


def test_eval_help_lists_every_dataset_form(monkeypatch, capsys):
    code, out, _ = run_main(monkeypatch, capsys, "eval", "--help")
    text = " ".join(out.split())
    for name in ("digits", "cifar10,", "cifar100,", "tinyimagenet", "cifar10c", "cifar100c", "tinyimagenetc", "imagenetc",
                 "mnistc", "npy:DIR", "folder:DIR", "gen:NAME"):
        assert name in text, name


@pytest.mark.parametrize("args, code", [
    (["eval", "x.pt", "--batch-size", "abc"], 2),   # a type error
    (["train", "--bogus"], 2),                       # an unknown option
    (["evl"], 2),                                    # an unknown command
    (["eval", "--dataset"], 2),                      # a missing value
])
def test_click_errors_are_one_qact_line(monkeypatch, capsys, args, code):
    got, out, err = run_main(monkeypatch, capsys, *args)
    assert got == code and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("qact: ") and "--help" in lines[0], err
    assert "╭" not in err and "Traceback" not in err


def test_click_error_names_the_option_and_the_command(monkeypatch, capsys):
    _, _, err = run_main(monkeypatch, capsys, "eval", "x.pt", "--batch-size", "abc")
    assert "'--batch-size'" in err and "`qact eval --help`" in err
    _, _, err = run_main(monkeypatch, capsys, "evl")
    assert "'eval'" in err


def test_library_errors_keep_their_exit_codes_through_main(monkeypatch, capsys, tmp_path):
    code, _, err = run_main(monkeypatch, capsys, "eval", tmp_path / "missing.pt", "--dataset", "digits")
    assert code == 3 and err.startswith("qact: ") and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("args, hint", [
    (["corrupt", "--input", "x.npy", "--out", "o", "--corruptions", "gaussian_nosie"], "did you mean 'gaussian_noise'?"),
    (["corrupt", "--dataset", "cifar10-c", "--out", "o"], "did you mean 'cifar10c'?"),
    (["corrupt", "--dataset", "digits", "--out", "o", "--format", "jpg"], "did you mean 'jpeg'?"),
    (["corrupt", "--dataset", "digits", "--out", "o", "--profile", "imagnet"], "did you mean 'imagenet'?"),
    (["train", "--dataset", "digits", "--arch", "resnet19", "--out", "m.pt"], "did you mean 'resnet18'?"),
    (["train", "--dataset", "digits", "--arch", "lenet", "--act", "qatc", "--out", "m.pt"], "did you mean 'qact'?"),
    (["train", "--dataset", "digits", "--arch", "lenet", "--loss", "watershd", "--out", "m.pt"], "did you mean 'watershed'?"),
    (["train", "--dataset", "digits", "--arch", "lenet", "--head", "quantil", "--out", "m.pt"], "did you mean 'quantile'?"),
    (["compare", "r.json", "--metrics", "acc,eec"], "did you mean 'ece'?"),
])
def test_did_you_mean_on_closed_sets(cli, tmp_path, monkeypatch, args, hint):
    monkeypatch.chdir(tmp_path)
    code, _, err = cli(*args)
    assert code == 2 and hint in err, err
    assert len(err.strip().splitlines()) == 1


def test_suggestions():
    from qact_cli.suggest import closest, unknown

    assert closest("stord", ["batch", "stored"]) == "stored" and closest("xyz", ["batch", "stored"]) is None
    assert closest("BN", ["none", "bn"]) == "bn"
    assert unknown("--adapt", "bnn", ["none", "bn"]) == "unknown --adapt 'bnn'; did you mean 'bn'? choose one of none, bn"
    assert unknown("--adapt", "zzz", ["none", "bn"]) == "unknown --adapt 'zzz'; choose one of none, bn"


def test_corrupt_limit_records_the_rows_and_a_rerun_says_it_resumes(cli, tmp_path):
    from fixtures_corrupted import synthetic

    images = synthetic(40, 32, seed=1)
    np.save(tmp_path / "x.npy", images)
    args = ["corrupt", "--input", tmp_path / "x.npy", "--no-labels", "--corruptions", "fog,contrast", "--severities", "1,2",
            "--limit", "8", "--out", tmp_path / "out"]
    code, out, err = cli(*args)
    assert code == 0, err
    err = " ".join(err.split())  # Rich wraps stderr at 80 columns
    assert "resuming" not in err and "8 evenly spaced of 40" in err
    m = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert m["n_images"] == 8 and m["source"]["selection"]["limit"] == 8 and m["source"]["selection"]["of"] == 40
    fog = np.load(tmp_path / "out" / "fog.npy")
    assert fog.shape == (16, 32, 32, 3)
    # the rows are those eval --limit would take: (k * 40) // 8 = 0, 5, 10, ...
    from qact_cli.corruptions.writer import write_corrupted

    write_corrupted(images[::5], np.zeros(8, np.int64), tmp_path / "direct", ["fog"], [1, 2], profile="auto")
    assert np.array_equal(np.load(tmp_path / "direct" / "fog.npy"), fog)

    (tmp_path / "out" / "contrast.npy").unlink()  # as if interrupted after fog
    m["completed"] = ["fog", "labels"]
    m["complete"] = False
    (tmp_path / "out" / "manifest.json").write_text(json.dumps(m))
    code, _, err = cli(*args)
    assert code == 0 and "resuming: 2 of 3 files done" in " ".join(err.split()), err
    assert np.array_equal(np.load(tmp_path / "out" / "fog.npy"), fog)
    contrast = np.load(tmp_path / "out" / "contrast.npy")
    assert contrast.shape == (16, 32, 32, 3)
    # another seed in the same folder: refused with the difference named, and no "resuming" line before it
    code, _, err = cli(*args[:-2], "--seed", "3", *args[-2:])
    err = " ".join(err.split())
    assert code == 2 and "resuming" not in err and "seed 0 -> 3" in err, err
    assert cli("corrupt", "--input", tmp_path / "x.npy", "--limit", "0", "--out", tmp_path / "o2")[0] == 2


def test_corrupt_limit_folder_reads_the_same_rows_back_as_severity_0(cli, tmp_path):
    from fixtures_corrupted import synthetic
    from qact_cli.data import get_dataset

    images, labels = synthetic(40, 32, seed=2), np.arange(40) % 10
    np.save(tmp_path / "x.npy", images)
    np.save(tmp_path / "y.npy", labels)
    code, _, err = cli("corrupt", "--input", tmp_path / "x.npy", "--labels", tmp_path / "y.npy", "--corruptions", "fog",
                       "--limit", "8", "--out", tmp_path / "out")
    assert code == 0, err
    (clean, *_), = [get_dataset("cifar10c", tmp_path / "out").cells(["fog"], [0, 1])[:1]]
    x, y = clean.source.__getitems__(np.arange(len(clean.source)))
    rows = np.arange(8) * 40 // 8
    assert len(clean.source) == 8 and np.array_equal(y.numpy(), labels[rows])
    assert np.array_equal(x.permute(0, 2, 3, 1).numpy(), images[rows])
