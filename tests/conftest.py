import os

import numpy as np
import pytest
import torch

# One thread: the machine is small and shared by subprocesses; results are then exact across runs.
torch.set_num_threads(1)

os.environ.setdefault("QACT_DATA", os.path.join(os.path.dirname(__file__), ".no-data"))  # never the user's cache


@pytest.fixture(scope="session")
def digits_ckpt(tmp_path_factory):
    """A LeNet/ReLU checkpoint trained on digits for 2 epochs, shared by the eval tests."""
    from qact_cli.training import TrainConfig, train

    path = tmp_path_factory.mktemp("ckpt") / "lenet_relu.pt"
    train(TrainConfig(dataset="digits", arch="lenet", out=str(path), epochs=2, batch_size=32, device="cpu"))
    return path


@pytest.fixture
def cli():
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""
    from typer.testing import CliRunner

    from qact_cli.cli import app

    runner = CliRunner()

    def run(*args):
        r = runner.invoke(app, [str(a) for a in args])
        if r.exception and not isinstance(r.exception, SystemExit):
            raise r.exception
        return r.exit_code, r.stdout, r.stderr

    return run


@pytest.fixture(scope="module")
def small_digits(tmp_path_factory):
    """Shared by the probe tests: npy:DIR with 120 training and 30 test images of digits (all 10 classes, 32x32 RGB)."""
    from qact_cli.data import get_dataset

    d = tmp_path_factory.mktemp("digits_npy")
    ds = get_dataset("digits")
    for split, n in (("train", 120), ("test", 30)):
        src = ds.split(split)
        np.save(d / f"{split}_images.npy", np.asarray(src.images[:n]))
        np.save(d / f"{split}_labels.npy", np.asarray(src.labels[:n]))
    return f"npy:{d}"


@pytest.fixture(scope="session")
def relu_qact_results(tmp_path_factory):
    """The quickstart's pair in small: ReLU and QAct LeNets trained one epoch on digits, evaluated
    through the library on gen:digits (2 corruptions x severities 1-5 and clean, 40 images a cell).
    Returns the qact.eval-multi/1 document."""
    from qact_cli.eval.run import result_json, run_eval
    from qact_cli.training import TrainConfig, train

    d = tmp_path_factory.mktemp("relu_qact")
    paths = []
    for name, act, loss, head in (("lenet-relu", "relu", "ce", "linear"), ("lenet-qact", "qact", "watershed", "quantile")):
        paths.append(d / f"{name}.pt")
        train(TrainConfig(dataset="digits", arch="lenet", act=act, loss=loss, head=head, out=str(paths[-1]), epochs=1,
                          batch_size=64, device="cpu"))
    results = run_eval([str(p) for p in paths], "gen:digits", corruptions="fog,gaussian_noise", severities="0-5",
                       limit=40, device="cpu")
    return result_json(results)
