"""The input boundary, one table: every row is a bad (or unusual) input to `qact train|corrupt|eval|compare`
(or a library call), the exit code it must give and a fragment of its one-line message.

For every row the harness checks: no traceback on stderr, at most one `qact:` error line (holding the
fragment), no partial output (nothing new in the work folder unless the row names it as its output, no
temporary files), and every file in the work folder unchanged (sha256 before and after).
Adding a case is adding a row.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import stat
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

from fixtures_corrupted import digits_test, random_checkpoint

REPO = Path(__file__).resolve().parents[1]
NP = "gaussian_noise"  # the cheapest corruption for the fixtures


@dataclass
class Row:
    id: str
    args: list | Callable  # CLI argv (run in-process), or a callable(work dir) returning an exit code
    code: int
    fragment: str
    outputs: tuple = ()  # paths (relative to the work folder) a successful row may create; removed afterwards
    post: Callable | None = None  # extra check: post(work dir, stdout, stderr)
    subprocess: bool = False  # run `python -m qact_cli` in a child process


# ------------------------------------------------------------------------------------------------ fixtures


def _corrupt_api(images, labels, out, **kw):
    from qact_cli.corruptions.writer import write_corrupted

    return write_corrupted(images, labels, out, [NP], [1, 2, 3, 4, 5], batch_size=64, **kw)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """Every input the rows use, built once: a tiny checkpoint, arrays, result JSONs, corrupted folders."""
    w = tmp_path_factory.mktemp("bad_input")
    ckpt = random_checkpoint(w / "m.pt", 10, 32)
    x, y = digits_test(40)
    np.save(w / "i.npy", x)
    np.save(w / "l.npy", y)
    (w / "text.npy").write_text("not an array\n")
    # a baseline result on digits, and damaged copies of it
    from qact_cli.checkpoint import load_model
    from qact_cli.data import get_dataset
    from qact_cli.eval.protocol import Protocol, evaluate

    model, meta = load_model(ckpt)
    doc = evaluate(model, meta, get_dataset("digits"), Protocol("digits", [], [0], limit=20), torch.device("cpu"))
    (w / "base.json").write_text(json.dumps(doc))
    (w / "empty_summary.json").write_text(json.dumps({**doc, "summary": {}}))
    (w / "typed_summary.json").write_text(json.dumps({**doc, "summary": {"by_severity": {"0": {"acc_mean": "high", "ece_mean": 0.1}}, "mean_corruption_acc": None}}))
    edited = json.loads(json.dumps(doc))
    edited["summary"]["by_severity"]["0"]["acc_mean"] = 0.999
    (w / "edited_summary.json").write_text(json.dumps(edited))
    bad_cell = json.loads(json.dumps(doc))
    bad_cell["cells"][0]["acc"] = "0.5"
    (w / "bad_cell.json").write_text(json.dumps(bad_cell))
    (w / "notjson.json").write_text("{ nope")
    # damaged checkpoints
    raw = torch.load(ckpt, weights_only=True)
    nan = dict(raw, state_dict={k: (v.clone().fill_(float("nan")) if v.is_floating_point() else v)
                                for k, v in raw["state_dict"].items()})
    torch.save(nan, w / "nan.pt")
    torch.save(dict(raw, model=None), w / "model_none.pt")
    (w / "trunc.pt").write_bytes((w / "m.pt").read_bytes()[:500])
    # npy:DIR datasets: 0-row test split, labels -1, no train split
    for d, n, lab in (("N0", 0, 0), ("Nneg", 20, -1)):
        (w / d).mkdir()
        split = "test" if d == "N0" else "train"
        np.save(w / d / f"{split}_images.npy", np.zeros((n, 32, 32, 3), np.uint8))
        np.save(w / d / f"{split}_labels.npy", np.full(n, lab, np.int64))
    (w / "Ntest").mkdir()
    np.save(w / "Ntest" / "test_images.npy", x)
    np.save(w / "Ntest" / "test_labels.npy", y)
    # corrupted folders: labelled (A), unlabelled (U), another input (B), an input changed after corrupt (C)
    _corrupt_api(x, y, w / "A", images_path=w / "i.npy", labels_path=w / "l.npy")
    _corrupt_api(x, np.full(len(x), -1), w / "U", images_path=w / "i.npy", labelled=False)
    x2, y2 = digits_test(80)
    np.save(w / "i2.npy", x2[40:])
    np.save(w / "l2.npy", y2[40:])
    _corrupt_api(x2[40:], y2[40:], w / "B", images_path=w / "i2.npy", labels_path=w / "l2.npy")
    np.save(w / "ic.npy", x)
    _corrupt_api(x, y, w / "C", images_path=w / "ic.npy", labels_path=w / "l.npy")
    xc = x.copy()
    xc[20] = 255 - xc[20]
    np.save(w / "ic.npy", xc)
    # a baseline on A (with its data identity), for --baseline on B
    from qact_cli.eval.run import run_eval

    (w / "base_A.json").write_text(json.dumps(run_eval([str(ckpt)], "cifar10c", str(w / "A"), corruptions=NP,
                                                       severities="1-5", device="cpu")[0]))
    # image folders: a truncated JPEG, mixed sizes
    from PIL import Image

    rng = np.random.default_rng(0)
    for d in ("F", "FM"):
        for c in range(10):
            (w / d / str(c)).mkdir(parents=True)
            for i in range(2):
                Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(w / d / str(c) / f"{i}.jpg")
    for c in ("5", "7", "9"):  # a subset of the digits classes, for a model that does not know its class names
        (w / "F579" / c).mkdir(parents=True)
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(w / "F579" / c / "0.png")
    data = (w / "F/3/1.jpg").read_bytes()
    (w / "F/3/1.jpg").write_bytes(data[: len(data) // 2])
    Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(w / "FM/5/0.jpg")
    # configs
    (w / "limit_true.yaml").write_text("limit: true\n")
    (w / "latin1.yaml").write_bytes("dataset: d\xefgits\n".encode("latin-1"))
    (w / "exp.yaml").write_text("dataset: gen:digits\nout_dir: expout\nmodels:\n"
                                "  - {name: a, arch: lenet, act: relu, epochs: 1}\n"
                                "  - {name: b, arch: lenet, act: qact, epochs: 1, batch_size: 1}\n")
    (w / "exp_arch.yaml").write_text("dataset: gen:digits\nout_dir: expout\nmodels:\n"
                                     "  - {name: a, arch: lenet, epochs: 1}\n  - {name: b, arch: lenett, epochs: 1}\n")
    (w / "afile").write_text("a regular file\n")
    (w / "out" / "c.reliability.png").mkdir(parents=True)  # where --plot out/c.png puts its reliability diagrams
    nobins = json.loads(json.dumps(doc))  # a result of a qact that kept no per-bin data
    for c in nobins["cells"]:
        del c["ece_bins"]
    (w / "nobins.json").write_text(json.dumps(nobins))
    # a linear probe fitted on m.pt, another backbone, a card naming a module the model lacks
    from qact_cli.train import TrainConfig, train

    random_checkpoint(w / "m2.pt", 10, 32, seed=1)
    train(TrainConfig(dataset="digits", arch="probe", backbone=str(ckpt), out=str(w / "probe.pt"), device="cpu"))
    from safetensors.torch import save_file
    from ext_model_builders import build

    save_file(build(num_classes=10).state_dict(), str(w / "r18.safetensors"))
    (w / "badfeat.yaml").write_text("model: ext_model_builders:conv_only\nfeatures: nope\n")
    (w / "gray.yaml").write_text("model: ext_model_builders:gray_cnn\nchannels: 1\n")
    # torch.export archives: one exported in training mode, one traced for batches of 2 only
    from ext_model_builders import small_cnn

    for name, model, dims in (("train.pt2", small_cnn().train(), ({0: torch.export.Dim("batch")},)),
                              ("static.pt2", small_cnn(), None)):
        torch.export.save(torch.export.export(model, (torch.zeros(2, 3, 32, 32),), dynamic_shapes=dims), str(w / name))
    (w / "Dlocked").mkdir()
    (w / "Dlocked" / ".lock").touch()
    # a resume state saved with --act relu
    from qact_cli.checkpoint import save_checkpoint

    info = dict(raw["model"])
    save_checkpoint({"format": "qact-checkpoint", "model": info, "state_dict": {},
                     "config": {"arch": "lenet", "dataset": "digits", "act": "relu", "loss": "ce", "head": "linear",
                                "batch_size": 128, "lr": 1e-3, "seed": 0}}, w / "R.pt.state")
    # a downloads folder holding a hand-fetched archive with the wrong md5
    (w / "dl" / ".downloads").mkdir(parents=True)
    (w / "dl" / ".downloads" / "x.tar.gz").write_bytes(b"not the archive")
    return w


# ------------------------------------------------------------------------------------------------ API rows


def _raising(exc):
    """A row that makes the eval library raise `exc`: the CLI's last-resort / Ctrl-C handling."""
    def call(w, cli):
        from unittest import mock

        with mock.patch("qact_cli.eval.run.run_jobs", side_effect=exc):
            return cli(["eval", "m.pt", "--dataset", "digits"])
    return call


def _download_bad_md5(w, cli):
    from qact_cli.data import download
    from qact_cli.data.sources import Source
    from qact_cli.errors import InputError

    src = Source(name="x", urls=("http://127.0.0.1:9/x.tar.gz",), filename="x.tar.gz", md5="0" * 32,
                 archive_folder="X", folder="X")
    old = download._RETRY_DELAY_S
    download._RETRY_DELAY_S = 0
    try:
        download.download_and_extract("x", w / "dl", sources={"x": src})
    except InputError as e:
        print(f"qact: {e}", file=sys.stderr)
        return 3
    finally:
        download._RETRY_DELAY_S = old
    return 0


def _md5_kept(w, out, err):
    assert (w / "dl" / ".downloads" / "x.tar.gz.md5-mismatch").read_bytes() == b"not the archive"
    (w / "dl" / ".downloads" / "x.tar.gz.md5-mismatch").rename(w / "dl" / ".downloads" / "x.tar.gz")


def _locked(w, cli):
    fd = os.open(w / "Dlocked" / ".lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return cli(["corrupt", "--input", "i.npy", "--labels", "l.npy", "--out", "Dlocked", "--corruptions", NP,
                    "--severities", "1"])
    finally:
        os.close(fd)


def _fifo(w, cli):
    path = w / "pipe.json"
    os.mkfifo(path)
    got = []
    reader = threading.Thread(target=lambda: got.append(open(path, "rb").read()))
    reader.start()
    try:
        code = cli(["eval", "m.pt", "--dataset", "digits", "--limit", "10", "--json", "pipe.json"])
    finally:
        if reader.is_alive():  # unblock the reader if nothing was written
            try:  # without blocking: the reader may have ended since, and a blocking open would then wait forever
                os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:  # ENXIO: no reader any more
                pass
        reader.join()
    assert stat.S_ISFIFO(os.lstat(path).st_mode), "the named pipe was replaced"
    assert json.loads(got[0])["schema"] == "qact.eval/1"
    path.unlink()
    return code


def _umask(w, cli):
    old = os.umask(0o027)
    try:
        code = cli(["eval", "m.pt", "--dataset", "digits", "--limit", "10", "--json", "um.json"])
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(w / "um.json").st_mode) == 0o640
    return code


def _symlink(w, cli):
    (w / "link.json").symlink_to("target.json")
    code = cli(["eval", "m.pt", "--dataset", "digits", "--limit", "10", "--json", "link.json"])
    assert (w / "link.json").is_symlink() and json.loads((w / "target.json").read_text())["schema"] == "qact.eval/1"
    (w / "link.json").unlink()
    return code


def _dev_full_intact(w, out, err):
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode), "/dev/full was replaced"


def _pdf(w, out, err):
    assert (w / "curves.pdf").read_bytes()[:4] == b"%PDF"


def _svg(w, out, err):
    assert b"<svg" in (w / "curves.svg").read_bytes()[:2000]
    assert b"<svg" in (w / "curves.reliability.svg").read_bytes()[:2000]


def _no_bins_said(w, out, err):
    assert "no reliability bins in this result" in (w / "nb.html").read_text(encoding="utf-8")
    assert "qact: warning: " in err and "no reliability bins" in err
    assert (w / "nb.png").read_bytes()[:8] == (w / "nb.reliability.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _state_kept(w, out, err):
    assert (w / "R.pt.state").is_file()


def _no_exp_out(w, out, err):
    assert not (w / "expout").exists(), "an experiment trained before its whole config was checked"


# ------------------------------------------------------------------------------------------------ the table

E = ["eval", "m.pt", "--dataset", "digits", "--limit", "10"]
C = ["corrupt", "--input", "i.npy", "--labels", "l.npy", "--corruptions", NP, "--severities", "1"]
T = ["train", "--dataset", "digits", "--arch", "lenet", "--epochs", "1"]
EA = ["eval", "m.pt", "--dataset", "cifar10c", "--corruptions", NP]

ROWS = [
    # --- silent wrong results, now refused
    Row("corrupt-input-without-labels", ["corrupt", "--input", "i.npy", "--out", "D", "--corruptions", NP], 2, "--no-labels"),
    Row("corrupt-no-labels-with-labels", C + ["--no-labels", "--out", "D"], 2, "--no-labels goes with --input alone"),
    Row("corrupt-no-labels-ok", ["corrupt", "--input", "i.npy", "--no-labels", "--out", "D", "--corruptions", NP,
                                 "--severities", "1"], 0, "", outputs=("D",)),
    Row("eval-unlabelled-folder", EA + ["--data-root", "U", "--severities", "1-5"], 3, "--no-labels"),
    Row("eval-source-fingerprint-mismatch", EA + ["--data-root", "C", "--severities", "0"], 3, "input_fingerprint differs"),
    Row("eval-source-fingerprint-ok", EA + ["--data-root", "A", "--severities", "0,1"], 0, ""),
    Row("baseline-other-data", EA + ["--data-root", "B", "--severities", "1-5", "--baseline", "base_A.json"], 3,
        "--allow-data-change"),
    Row("baseline-other-data-allowed", EA + ["--data-root", "B", "--severities", "1-5", "--baseline", "base_A.json",
                                             "--allow-data-change", "--tolerance", "1"], 0, ""),
    Row("baseline-same-data", EA + ["--data-root", "A", "--severities", "1-5", "--baseline", "base_A.json"], 0, ""),
    Row("compare-summary-edited", ["compare", "edited_summary.json"], 3, "disagrees with its cells"),
    Row("baseline-summary-edited", E + ["--baseline", "edited_summary.json"], 3, "disagrees with its cells"),
    Row("compare-summary-empty", ["compare", "empty_summary.json"], 3, "summary.by_severity"),
    Row("baseline-summary-empty", E + ["--baseline", "empty_summary.json"], 3, "summary.by_severity"),
    Row("compare-summary-wrong-type", ["compare", "typed_summary.json"], 3, "not a number"),
    Row("baseline-summary-wrong-type", E + ["--baseline", "typed_summary.json"], 3, "not a number"),
    Row("compare-cell-wrong-type", ["compare", "bad_cell.json"], 3, "not a fraction"),
    Row("compare-not-json", ["compare", "notjson.json"], 3, "not valid JSON"),
    Row("compare-ok", ["compare", "base.json", "base_A.json", "--allow-mixed"], 0, ""),
    Row("train-context-size-0", T + ["--act", "qact", "--context-size", "0", "--out", "t.pt"], 2, "--context-size 0"),
    Row("config-limit-true", E + ["--config", "limit_true.yaml"], 2, "not true/false"),
    Row("compare-plot-pdf", ["compare", "base.json", "--plot", "curves.pdf"], 0, "",
        outputs=("curves.pdf", "curves.reliability.pdf"), post=_pdf),
    Row("compare-plot-svg", ["compare", "base.json", "--plot", "curves.svg"], 0, "",
        outputs=("curves.svg", "curves.reliability.svg"), post=_svg),
    Row("compare-plot-gif", ["compare", "base.json", "--plot", "curves.gif"], 2, "end the name with .png, .pdf or .svg"),
    Row("compare-plot-no-ext", ["compare", "base.json", "--plot", "curves"], 2, "no extension"),
    Row("eval-plot-gif", E + ["--plot", "c.gif"], 2, "end the name with .png, .pdf or .svg"),
    Row("compare-no-bins-html-plot", ["compare", "nobins.json", "--html", "nb.html", "--plot", "nb.png"], 0, "",
        outputs=("nb.html", "nb.png", "nb.reliability.png"), post=_no_bins_said),
    # --- tracebacks, now one line
    Row("eval-seed-overflow", E + ["--seed", "99999999999999999999"], 2, "--seed"),
    Row("train-seed-overflow", T + ["--seed", "99999999999999999999", "--out", "t.pt"], 2, "out of range"),
    Row("corrupt-seed-negative", C + ["--seed", "-1", "--out", "D"], 2, "out of range"),
    Row("eval-npy-empty-test-split", ["eval", "m.pt", "--dataset", "npy:N0"], 3, "0 rows"),
    Row("train-npy-negative-labels", ["train", "--dataset", "npy:Nneg", "--arch", "lenet", "--out", "t.pt"], 3, "≥ 0"),
    Row("train-npy-no-train-split", ["train", "--dataset", "npy:Ntest", "--arch", "lenet", "--out", "t.pt"], 3,
        "no 'train' split"),
    Row("eval-truncated-jpeg-workers", ["eval", "m.pt", "--dataset", "folder:F", "--workers", "2", "--batch-size", "4"],
        3, "cannot read image", subprocess=True),
    Row("eval-mixed-sizes-workers", ["eval", "m.pt", "--dataset", "folder:FM", "--workers", "2", "--batch-size", "4"],
        3, "different sizes", subprocess=True),
    Row("eval-folder-subset-unnamed-model", ["eval", "m.pt", "--dataset", "folder:F579"], 3, "10-class model"),
    Row("eval-truncated-jpeg", ["eval", "m.pt", "--dataset", "folder:F", "--workers", "0"], 3, "cannot read image"),
    Row("eval-nan-weights", ["eval", "nan.pt", "--dataset", "digits"], 3, "NaN"),
    Row("eval-model-none", ["eval", "model_none.pt", "--dataset", "digits"], 3, "'model' section"),
    Row("eval-truncated-checkpoint", ["eval", "trunc.pt", "--dataset", "digits"], 3, "truncated"),
    Row("eval-result-as-checkpoint", ["eval", "base.json", "--dataset", "digits"], 3, "is a qact result JSON"),
    Row("compare-nan-checkpoint", ["compare", "nan.pt", "--dataset", "digits", "--limit", "10"], 3, "NaN"),
    Row("config-not-utf8", E + ["--config", "latin1.yaml"], 2, "not UTF-8"),
    Row("eval-adapt-bn-tail-of-one", ["eval", "m.pt", "--dataset", "digits", "--adapt", "bn", "--limit", "257"], 0, ""),
    Row("eval-adapt-bn-batch-of-one", E[:4] + ["--adapt", "bn", "--limit", "9", "--batch-size", "4"], 0, ""),
    Row("eval-adapt-bn-one-image", E[:4] + ["--adapt", "bn", "--limit", "1"], 3, "at least 2 images"),
    Row("train-batch-size-1-bn", ["train", "--dataset", "digits", "--arch", "resnet18", "--batch-size", "1", "--out",
                                  "t.pt"], 2, "--batch-size 1"),
    Row("train-batch-size-1-qact", T + ["--act", "qact", "--batch-size", "1", "--out", "t.pt"], 2, "--batch-size ≥ 2"),
    Row("train-resume-other-act", T + ["--act", "qact", "--resume", "--out", "R.pt"], 3, "--act", post=_state_kept),
    Row("train-unknown-arch", ["train", "--dataset", "digits", "--arch", "lenett", "--out", "t.pt"], 2, "unknown --arch"),
    Row("train-backbone-not-found", ["train", "--dataset", "digits", "--backbone", "nope.pt", "--out", "t.pt"], 3,
        "`features: MODULE`"),
    # --- models from elsewhere: the model's failures are the model's (exit 3), absurd sizes refused up front
    Row("eval-model-forward-raises", ["eval", "ext_model_builders:forward_raises"] + E[2:], 3,
        "model ext_model_builders:forward_raises failed on input (10, 3, 32, 32): RuntimeError: the user's forward broke"),
    Row("eval-model-builder-raises", ["eval", "ext_model_builders:raises"] + E[2:], 3, "raised ValueError: no such variant"),
    Row("eval-gray-model-fed-rgb", ["eval", "ext_model_builders:gray_cnn"] + E[2:], 3,
        "gray_cnn failed on input (10, 3, 32, 32): RuntimeError"),
    Row("eval-model-returns-probs", ["eval", "ext_model_builders:softmax_cnn"] + E[2:], 3, "pass --outputs probs"),
    Row("eval-model-probs-declared", ["eval", "ext_model_builders:softmax_cnn", "--outputs", "probs"] + E[2:], 0, ""),
    Row("eval-outputs-bogus", ["eval", "ext_model_builders:small_cnn", "--outputs", "bogus"] + E[2:], 2,
        "unknown --outputs 'bogus'; choose one of logits, probs, log-probs"),
    Row("eval-width-vs-dataset-classes", ["eval", "ext_model_builders:five_outputs"] + E[2:], 3,
        "outputs 5 scores per image but dataset digits has 10 classes"),
    Row("eval-width-vs-num-classes", ["eval", "ext_model_builders:five_outputs", "--num-classes", "10"] + E[2:], 3,
        "num_classes is 10 (--num-classes); pass --num-classes 5"),
    Row("eval-channels-2", ["eval", "ext_model_builders:gray_cnn", "--channels", "2"] + E[2:], 2,
        "unknown --channels '2'; choose one of 1, 3"),
    Row("eval-channels-1-three-means", ["eval", "ext_model_builders:gray_cnn", "--channels", "1", "--mean",
                                        "0.5,0.5,0.5"] + E[2:], 2, "mean (--mean) must be 1 number (grey)"),
    Row("eval-card-channels-1-three-means", ["eval", "gray.yaml", "--mean", "0.5,0.5,0.5"] + E[2:], 2,
        "mean (--mean) has 3 value(s) but the model takes 1 channel(s)"),
    Row("eval-three-channels-one-mean", ["eval", "ext_model_builders:small_cnn", "--mean", "0.5"] + E[2:], 2,
        "has 1 value(s) but the model takes 3 channel(s)"),
    Row("eval-gray-model-channels-1", ["eval", "ext_model_builders:gray_cnn", "--channels", "1"] + E[2:], 0, ""),
    Row("eval-input-size-absurd", ["eval", "ext_model_builders:small_cnn", "--input-size", "100000", "--resize",
                                   "bilinear"] + E[2:], 2, "at most 4096 px a side"),
    Row("eval-export-training-mode", ["eval", "train.pt2", "--trust-model-file", "--num-classes", "10"] + E[2:], 3,
        "exported in training mode"),
    Row("eval-export-static-batch", ["eval", "static.pt2", "--trust-model-file", "--num-classes", "10"] + E[2:], 3,
        "exported for other input shapes"),
    # --- a folder written by `qact corrupt`, by its own name
    Row("eval-corrupted-folder-ok", ["eval", "m.pt", "--dataset", "corrupted:A", "--limit", "10"], 0, ""),
    Row("eval-corrupted-folder-missing", ["eval", "m.pt", "--dataset", "corrupted:nope"], 3, "corrupted folder not found"),
    Row("eval-corrupted-folder-no-manifest", ["eval", "m.pt", "--dataset", "corrupted:Ntest"], 3, "has no manifest.json"),
    Row("eval-corrupted-folder-lacks-corruption", ["eval", "m.pt", "--dataset", "corrupted:A", "--corruptions", "fog"], 2,
        "available: gaussian_noise"),
    Row("eval-corrupted-folder-unlabelled", ["eval", "m.pt", "--dataset", "corrupted:U"], 3, "--no-labels"),
    Row("train-backbone-no-features", ["train", "--dataset", "digits", "--backbone", "ext_model_builders:conv_only",
                                       "--out", "t.pt"], 3, "`features: MODULE` in a model card"),
    Row("train-backbone-card-bad-features", ["train", "--dataset", "digits", "--backbone", "badfeat.yaml", "--out",
                                             "t.pt"], 3, "features 'nope' is not a module"),
    Row("train-backbone-weights-other-classes", ["train", "--dataset", "digits", "--backbone", "torchvision:resnet18",
                                                 "--weights", "r18.safetensors", "--out", "t.pt"], 3, "num_classes: K"),
    Row("train-backbone-is-a-probe", ["train", "--dataset", "digits", "--backbone", "probe.pt", "--out", "t.pt"], 3,
        "itself a probe"),
    Row("eval-probe-other-backbone", ["eval", "probe.pt", "--dataset", "digits", "--limit", "10", "--weights", "m2.pt"],
        3, "not the backbone this probe was fitted on"),
    Row("eval-probe-own-backbone", ["eval", "probe.pt", "--dataset", "digits", "--limit", "10"], 0, ""),
    # --- files
    Row("eval-json-dev-full", E + ["--json", "/dev/full"], 3, "No space left", post=_dev_full_intact),
    Row("eval-json-symlink", _symlink, 0, "", outputs=("target.json",)),
    Row("eval-json-fifo", _fifo, 0, ""),
    Row("eval-json-umask", _umask, 0, "", outputs=("um.json",)),
    Row("eval-json-folder", E + ["--json", "A"], 3, "is a folder"),
    Row("eval-json-under-file", E + ["--json", "afile/out.json"], 3, "is a file, not a folder"),
    Row("compare-markdown-under-file", ["compare", "base.json", "--markdown", "afile/x.md"], 3, "is a file"),
    Row("compare-plot-under-file", ["compare", "base.json", "--plot", "afile/x.png"], 3, "is a file"),
    Row("eval-html-folder", E + ["--html", "A"], 3, "--html A is a folder"),
    Row("eval-html-under-file", E + ["--html", "afile/r.html"], 3, "is a file, not a folder"),
    Row("eval-html-stdout", E + ["--html", "-"], 2, "--html needs a file path"),
    Row("eval-plot-stdout", E + ["--plot", "-"], 2, "--plot needs a file path"),
    Row("eval-plot-reliability-folder", E + ["--plot", "out/c.png"], 3, "--plot out/c.reliability.png is a folder"),
    Row("compare-html-folder", ["compare", "base.json", "--html", "A"], 3, "--html A is a folder"),
    Row("compare-html-under-file", ["compare", "base.json", "--html", "afile/r.html"], 3, "is a file, not a folder"),
    Row("compare-html-stdout", ["compare", "base.json", "--html", "-"], 2, "--html needs a file path"),
    Row("compare-latex-folder", ["compare", "base.json", "--latex", "A"], 3, "--latex A is a folder"),
    Row("compare-latex-under-file", ["compare", "base.json", "--latex", "afile/t.tex"], 3, "is a file, not a folder"),
    Row("compare-latex-stdout", ["compare", "base.json", "--latex", "-"], 2, "--latex needs a file path"),
    Row("compare-plot-stdout", ["compare", "base.json", "--plot", "-"], 2, "--plot needs a file path"),
    Row("compare-plot-reliability-folder", ["compare", "base.json", "--plot", "out/c.png"], 3,
        "--plot out/c.reliability.png is a folder"),
    Row("corrupt-preview-under-file", C + ["--out", "D", "--preview", "afile/p.png"], 3, "is a file"),
    Row("corrupt-out-is-file", C + ["--out", "afile"], 3, "existing file"),
    Row("train-out-under-file", T + ["--out", "afile/t.pt"], 3, "is a file"),
    Row("train-out-is-folder", T + ["--out", "A"], 3, "is a folder"),
    Row("corrupt-locked-folder", _locked, 3, "another qact corrupt run holds"),
    Row("download-wrong-md5-kept", _download_bad_md5, 3, "checksum mismatch", outputs=("dl/.downloads/x.tar.gz.lock", "dl/.downloads/x.tar.gz.part"), post=_md5_kept),
    # --- unclear messages, now clear
    Row("corrupt-severities-reversed", C[:-1] + ["3-1", "--out", "D"], 2, "reversed"),
    Row("eval-severities-reversed", E + ["--severities", "5-0"], 2, "reversed"),
    Row("corrupt-text-npy", ["corrupt", "--input", "text.npy", "--labels", "l.npy", "--out", "D"], 3,
        "not a .npy array file"),
    Row("corrupt-labels-text-npy", ["corrupt", "--input", "i.npy", "--labels", "text.npy", "--out", "D"], 3,
        "not a .npy array file"),
    Row("experiment-bad-last-model", ["compare", "--config", "exp.yaml"], 2, "model 'b'", post=_no_exp_out),
    Row("experiment-typo-arch", ["compare", "--config", "exp_arch.yaml"], 2, "unknown --arch", post=_no_exp_out),
    # --- the last resort, Ctrl-C, usage errors
    Row("internal-error", _raising(RuntimeError("boom")), 1, "internal error: RuntimeError: boom"),
    Row("keyboard-interrupt", _raising(KeyboardInterrupt()), 130, "interrupted"),
    Row("eval-unknown-option", E + ["--no-such-flag"], 2, "--no-such-flag"),
    Row("eval-missing-checkpoint", ["eval", "nope.pt", "--dataset", "digits"], 3, "not found"),
    Row("eval-missing-dataset-flag", ["eval", "m.pt"], 2, "missing --dataset"),
    Row("eval-bad-tolerance", E + ["--tolerance", "5"], 2, "--tolerance"),
    Row("eval-baseline-missing", E + ["--baseline", "nope.json"], 3, "not found"),
    Row("corrupt-missing-out", ["corrupt", "--input", "i.npy", "--labels", "l.npy"], 2, "missing --out"),
    Row("corrupt-both-inputs", C + ["--dataset", "digits", "--out", "D"], 2, "exactly one"),
    Row("corrupt-unknown-corruption", ["corrupt", "--input", "i.npy", "--labels", "l.npy", "--corruptions", "nope",
                                       "--out", "D"], 2, "nope"),
    Row("train-missing-out", ["train", "--dataset", "digits", "--arch", "lenet"], 2, "missing --out"),
    Row("compare-missing-item", ["compare", "nope.json"], 3, "nope.json"),
    Row("eval-json-dev-full-subprocess", ["eval", "m.pt", "--dataset", "digits", "--limit", "10", "--json", "/dev/full"], 3,
        "No space left", subprocess=True, post=_dev_full_intact),
]


# ------------------------------------------------------------------------------------------------ harness


def _snapshot(w: Path) -> dict:
    snap = {}
    for p in sorted(w.rglob("*")):
        rel = str(p.relative_to(w))
        if p.is_symlink() or not p.is_file():
            snap[rel] = "dir" if p.is_dir() else "special"
        else:
            snap[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return snap


def _remove(path: Path) -> None:
    import shutil

    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@pytest.fixture
def cli_in(work, monkeypatch):
    from typer.testing import CliRunner

    from qact_cli.cli import app

    monkeypatch.chdir(work)
    monkeypatch.delenv("QACT_DEBUG", raising=False)
    runner = CliRunner()
    seen = {}

    def run(argv):
        r = runner.invoke(app, [str(a) for a in argv])
        assert r.exception is None or isinstance(r.exception, SystemExit), f"escaped: {r.exception!r}"
        seen["out"], seen["err"] = r.stdout, r.stderr
        return r.exit_code

    return run, seen


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_bad_input(row: Row, work, cli_in, capsys):
    run, seen = cli_in
    before = _snapshot(work)
    if row.subprocess:
        env = dict(os.environ, PYTHONPATH=str(REPO), QACT_DEBUG="")
        p = subprocess.run([sys.executable, "-m", "qact_cli", *map(str, row.args)], cwd=work, env=env,
                           capture_output=True, text=True, timeout=120)
        code, out, err = p.returncode, p.stdout, p.stderr
    elif callable(row.args):
        code = row.args(work, run)
        cap = capsys.readouterr()
        out, err = seen.get("out", "") + cap.out, seen.get("err", "") + cap.err
    else:
        code = run(row.args)
        out, err = seen["out"], seen["err"]
    assert "Traceback" not in err, err
    assert code == row.code, f"exit {code}, expected {row.code}; stderr: {err}"
    errors = [line for line in err.splitlines() if line.startswith(("qact: ", "Error: "))
              and not line.startswith("qact: warning")]
    print(f"{row.id}: exit {code}: {errors[0] if errors else '-'}")  # the table of outcomes, with pytest -rP
    if row.code != 0:
        assert len(errors) == 1, f"expected one error line, got: {err}"
        assert row.fragment in errors[0], f"{row.fragment!r} not in {errors[0]!r}"
    try:
        if row.post:
            row.post(work, out, err)
        after = _snapshot(work)
        created = {k for k in after if k not in before}
        allowed = {k for k in created for o in row.outputs if k == o or k.startswith(o + "/")}
        assert not created - allowed, f"left behind: {sorted(created - allowed)}"
        if row.code == 0:
            assert all((work / o).exists() for o in row.outputs), "a declared output is missing"
        changed = [k for k in before if k in after and before[k] != after[k]]
        assert not changed, f"input files changed: {changed}"
        assert not [k for k in before if k not in after], "an input file disappeared"
    finally:
        for o in row.outputs:
            if o not in before:
                _remove(work / o)
