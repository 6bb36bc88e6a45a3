"""Data-parallel runs (qact_cli/distributed.py): two CPU processes on gloo, spawned with torch.multiprocessing.

One spawn runs every two-process check (process start-up dominates the cost): context and statistics
synchronisation, sharded prediction, errors handed from rank 0, distributed evaluation equal to
single-process evaluation, distributed training with checkpoint and --resume interchange, and a rank
that dies mid-run.
"""

from __future__ import annotations

import json
import os
import socket
import time

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from qact_cli import distributed as D
from qact_cli.checkpoint import load_model, read_checkpoint
from qact_cli.errors import InputError, UsageError
from qact_cli.nn import set_context_sync
from qact_cli.nn import sync as S

WORLD = 2
EVAL = dict(corruptions="gaussian_noise,contrast", severities="0,1,3", batch_size=8, context="batch", device="cpu")


# --------------------------------------------------------------------------------------- one process
@pytest.mark.parametrize("n,bs,world", [(10, 3, 2), (9, 3, 2), (5, 8, 2), (1, 4, 3), (17, 4, 3), (12, 4, 8)])
def test_shards_are_whole_single_process_batches(n, bs, world):
    shards = [D.shard_indices(n, bs, r, world) for r in range(world)]
    assert np.array_equal(np.sort(np.concatenate(shards)), np.arange(n))  # each image exactly once
    single = [list(range(s, min(s + bs, n))) for s in range(0, n, bs)]
    for r, idx in enumerate(shards):
        # consecutive chunks of `bs` inside a rank's shard are exactly the single-process batches r, r+W, ...
        chunks = [idx[s:s + bs].tolist() for s in range(0, len(idx), bs)]
        assert chunks == single[r::world]


def test_single_process_is_untouched():
    assert not D.active() and D.world_size() == 1 and D.is_main() and D.describe(True) is None
    q = nn.Linear(2, 2)
    q.sync_context = True
    s = torch.randn(3, 5)
    assert S.sync_context(q, s) is s
    seen = []
    probs, labels = D.predict_sharded(lambda part, ids: seen.append((part, list(ids))) or (torch.ones(3, 2), torch.zeros(3)),
                                      source := list(range(7)), 3)
    assert seen == [(source, [0, 1, 2])] and probs.shape == (3, 2)
    assert D.from_main(lambda: 5) == 5 and D.main_first(lambda: 6) == 6 and D.sum_over_ranks(1.0, 2.0) == (1.0, 2.0)


def test_seed_batches_depends_on_the_batch_place_only():
    def draws(ids):
        return [torch.rand(1).item() for _ in D.seed_batches(range(len(ids)), ("k", 0), ids)]

    all_ = draws([0, 1, 2, 3])
    assert draws([1, 3]) == [all_[1], all_[3]]
    assert draws([0, 1]) != [torch.rand(1).item() for _ in D.seed_batches(range(2), ("other", 0), [0, 1])]


def test_convert_sync_batchnorm_keeps_type_parameters_and_state():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Sequential(nn.Flatten(), nn.BatchNorm1d(4 * 36)))
    net.train()(torch.randn(5, 3, 8, 8))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    weight = net[1].weight
    S.convert_sync_batchnorm(net)
    assert type(net[1]) is S.SyncBatchNorm2d and isinstance(net[1], nn.BatchNorm2d) and net[1].weight is weight
    assert isinstance(net[2][1], S.SyncBatchNorm1d)
    assert net.state_dict().keys() == before.keys()
    assert all(torch.equal(net.state_dict()[k], v) for k, v in before.items())
    x = torch.randn(6, 3, 8, 8)
    ref = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Sequential(nn.Flatten(), nn.BatchNorm1d(4 * 36)))
    ref.load_state_dict(before)
    torch.testing.assert_close(net.eval()(x), ref.eval()(x))


def test_no_sync_context_option_is_recorded(tmp_path, cli):
    code, _, err = cli("train", "--dataset", _write_npy_dataset(tmp_path), "--arch", "lenet", "--epochs", "1",
                       "--batch-size", "16", "--device", "cpu", "--no-sync-context", "--out", tmp_path / "m.pt")
    assert code == 0, err
    train = read_checkpoint(tmp_path / "m.pt")["train"]
    assert train["config"]["sync_context"] is False and train["distributed"] is None


def test_batch_size_must_split_over_ranks(monkeypatch):
    monkeypatch.setattr(D, "world_size", lambda: 4)
    assert D.local_batch_size(32) == 8
    with pytest.raises(UsageError, match="multiple of 4"):
        D.local_batch_size(30)
    with pytest.raises(UsageError, match=r"shares of at least 2; use a multiple of 4 \(e.g. 8\)"):
        D.local_batch_size(4, min_local=2)


# --------------------------------------------------------------------------------------- two processes
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_npy_dataset(root) -> str:
    """A tiny 3-class 16x16 dataset in the npy: layout (class = brightest third of the image)."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 60), ("test", 21)):
        y = np.arange(n) % 3
        x = rng.integers(0, 80, (n, 16, 16, 3), dtype=np.uint8)
        for c in range(3):
            x[y == c, :, 5 * c:5 * c + 6] += 150
        np.save(root / f"{split}_images.npy", x)
        np.save(root / f"{split}_labels.npy", y)
    return f"npy:{root}"


def _train_cfg(dataset, out, epochs, **kw):
    from qact_cli.training import TrainConfig

    return TrainConfig(dataset=dataset, arch="lenet", act="qact", out=str(out), epochs=epochs, batch_size=16,
                       device="cpu", qact={"context_size": 256}, **kw)


def _stop_after_first_epoch(row):
    raise KeyboardInterrupt  # leaves <out>.state behind, as an interrupted run does


def _check_context_and_statistics(r):
    from qact_cli.nn.qact import QAct

    # a per-channel sample of unequal width on each rank: every rank gets all of them, in rank order
    mine = torch.full((3, 2 + r), float(r))
    got = S.all_gather_context(mine)
    assert torch.equal(got, torch.cat([torch.zeros(3, 2), torch.ones(3, 3)], 1))

    # QAct (wrapped in BatchNorms) in training on half a batch each == one process on the whole batch
    torch.manual_seed(0)
    x = torch.randn(8, 3) * torch.tensor([1.0, 2.0, 0.5]) + 0.3
    w = torch.randn(8, 3)
    layer = QAct(3, context_size=2048)
    ref = QAct(3, context_size=2048)
    ref.load_state_dict(layer.state_dict())
    xf = x.clone().requires_grad_()
    out_ref = ref.train()(xf)
    (out_ref * w).sum().backward()
    S.convert_sync_batchnorm(layer)
    assert set_context_sync(layer, True) == 1
    xr = x[4 * r:4 * r + 4].clone().requires_grad_()
    out = layer.train()(xr)
    (out * w[4 * r:4 * r + 4]).sum().backward()
    torch.testing.assert_close(out, out_ref[4 * r:4 * r + 4], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(xr.grad, xf.grad[4 * r:4 * r + 4], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(layer.bn_in.running_mean, ref.bn_in.running_mean)
    torch.testing.assert_close(layer.bn_in.running_var, ref.bn_in.running_var)
    set_context_sync(layer, False)  # per-rank context: only this rank's half
    assert not torch.allclose(layer.train()(xr.detach()), out_ref[4 * r:4 * r + 4], atol=1e-3)

    # BatchNorm2d over the global batch, gradient included
    bn, bn_ref = S.convert_sync_batchnorm(nn.BatchNorm2d(2)), nn.BatchNorm2d(2)
    xb = torch.randn(6, 2, 3, 3) * 3 + 5
    xbf = xb.clone().requires_grad_()
    yb_ref = bn_ref(xbf)
    (yb_ref ** 3).sum().backward()
    xbr = xb[3 * r:3 * r + 3].clone().requires_grad_()
    yb = bn(xbr)
    (yb ** 3).sum().backward()
    torch.testing.assert_close(yb, yb_ref[3 * r:3 * r + 3], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(xbr.grad, xbf.grad[3 * r:3 * r + 3], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(bn.running_var, bn_ref.running_var)


def _labelled(labels):
    from qact_cli.data.base import ArraySource

    return ArraySource(np.zeros((len(labels), 2, 2, 3), np.uint8), np.asarray(labels), num_classes=100)


def _check_sharding_and_errors(r):
    # 5 images in batches of 2: rank 0 predicts batches 0 and 2, rank 1 batch 1; all get all, in order
    def predict(part, ids):
        y = torch.from_numpy(np.asarray(part.labels))
        assert len(y) == len(part) and list(ids) == ([0, 2] if r == 0 else [1])[: len(list(ids))]
        return torch.stack([y.float(), -y.float()], 1), y

    probs, labels = D.predict_sharded(predict, _labelled([10, 11, 12, 13, 14]), 2)
    assert probs[:, 0].tolist() == [10, 11, 12, 13, 14] and labels.tolist() == [10, 11, 12, 13, 14]
    # more ranks than batches: rank 1 has nothing to predict and still receives the result
    probs, labels = D.predict_sharded(predict, _labelled([7]), 4)
    assert probs.tolist() == [[7.0, -7.0]] and labels.tolist() == [7]

    def fail():
        raise InputError("bad file /x")

    with pytest.raises(InputError, match="bad file /x"):  # raised on rank 0, raised on every rank
        D.from_main(fail)
    assert D.from_main(lambda: {"rank": D.rank()}) == {"rank": 0}


def _worker(r, port, tmp, dataset, reference, r18_reference):
    os.environ.update(RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE=str(WORLD), LOCAL_WORLD_SIZE=str(WORLD),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), QACT_DIST_TIMEOUT="60")
    torch.set_num_threads(1)
    from pathlib import Path

    from qact_cli.eval.run import run_eval
    from qact_cli.training import train

    tmp = Path(tmp)
    assert D.setup("cpu") == torch.device("cpu") and D.active() and D.rank() == r
    _check_context_and_statistics(r)
    _check_sharding_and_errors(r)

    # evaluation of a single-process checkpoint, sharded over two ranks, == one process (QAct, batch context)
    (res,) = run_eval([str(tmp / "a.pt")], dataset=f"gen:{dataset}", **EVAL)
    assert json.dumps(res["cells"]) == json.dumps(reference["cells"])
    assert json.dumps(res["summary"]) == json.dumps(reference["summary"])
    # the command: rank 0 alone prints the table and writes the JSON, which records the run's shape
    from typer.testing import CliRunner

    from qact_cli.cli import app

    args = ["eval", str(tmp / "a.pt"), "--dataset", f"gen:{dataset}", "--json", str(tmp / "dist.json"),
            "--html", str(tmp / "dist.html"), "--plot", str(tmp / "dist.svg")]
    args += [f"--{k.replace('_', '-')}={v}" for k, v in EVAL.items()]
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 0, out.output
    assert ("mean corruption acc" in out.stdout) == (r == 0) and (r == 0 or out.stdout == "")
    assert ("dist.html" in out.stderr) == (r == 0)  # the reports too: rank 0 writes them and says so
    D.barrier()
    assert all((tmp / f).is_file() for f in ("dist.html", "dist.svg", "dist.reliability.svg"))
    doc = json.loads((tmp / "dist.json").read_text())
    assert json.dumps(doc["cells"]) == json.dumps(reference["cells"])
    assert doc["environment"]["distributed"] == {"world_size": 2, "backend": "gloo"}
    # compare with a checkpoint and a spec item runs the same sharded evaluation; rank 0 alone prints and writes
    args = ["compare", str(tmp / "a.pt"), str(tmp / "dist.json"), "torchvision:resnet18", "--weights",
            str(tmp / "r18.safetensors"), "--num-classes", "3", "--dataset", f"gen:{dataset}", "--json",
            str(tmp / "cmp.json")] + [f"--{k.replace('_', '-')}={v}" for k, v in EVAL.items()]
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 0, out.output
    assert (out.stdout != "") == (r == 0)
    D.barrier()
    cmp = json.loads((tmp / "cmp.json").read_text())["results"]
    assert json.dumps(cmp[0]["cells"]) == json.dumps(reference["cells"]) == json.dumps(cmp[1]["cells"])
    assert json.dumps(cmp[2]["cells"]) == json.dumps(r18_reference["cells"])

    # --resume of a single-process run's state under two processes
    info = train(_train_cfg(dataset, tmp / "a.pt", 2, resume=True))
    assert info["epochs"] == 2 and info["distributed"]["world_size"] == WORLD and info["distributed"]["sync_context"]
    assert not (tmp / "a.pt.state").exists()  # removed by rank 0 once the run finished

    # a distributed run, interrupted after its first epoch, resumed by one process in the parent
    with pytest.raises(KeyboardInterrupt):
        train(_train_cfg(dataset, tmp / "b.pt", 2, sync_context=False), on_epoch=_stop_after_first_epoch)
    D.barrier()
    assert (tmp / "b.pt.state").is_file()

    # a rank that dies: the other stops at once with one clear error, no hang
    if r == 1:
        os._exit(0)
    t0 = time.time()
    with pytest.raises(D.DistributedError, match="another process failed or stopped answering"):
        with D.guard("training"):
            for _ in range(1000):
                dist.all_reduce(torch.ones(1))
    assert time.time() - t0 < 30


def test_two_processes(tmp_path):
    from qact_cli.eval.run import run_eval
    from qact_cli.training import train

    torch.set_num_threads(1)
    dataset = _write_npy_dataset(tmp_path)
    # one process: a QAct LeNet interrupted after epoch 1 (its checkpoint and state are left), evaluated
    with pytest.raises(KeyboardInterrupt):
        train(_train_cfg(dataset, tmp_path / "a.pt", 2), on_epoch=_stop_after_first_epoch)
    (reference,) = run_eval([str(tmp_path / "a.pt")], dataset=f"gen:{dataset}", **EVAL)
    # a model from elsewhere: a torchvision spec with seeded weights in a .safetensors file
    import torchvision
    from safetensors.torch import save_file

    import qact_cli

    torch.manual_seed(0)
    save_file(torchvision.models.resnet18(num_classes=3).state_dict(), str(tmp_path / "r18.safetensors"))
    r18_reference = qact_cli.evaluate("torchvision:resnet18", dataset=f"gen:{dataset}",
                                      weights=str(tmp_path / "r18.safetensors"), num_classes=3, **EVAL)

    mp.spawn(_worker, args=(_free_port(), str(tmp_path), dataset, reference, r18_reference), nprocs=WORLD, join=True)

    # the checkpoint of the distributed run loads in one process, in the same format
    model, meta = load_model(tmp_path / "a.pt")
    assert meta["train"]["distributed"] == {"world_size": 2, "backend": "gloo", "sync_context": True,
                                            "sync_batchnorm": True, "context": "global batch"}
    assert len(meta["train"]["history"]) == 2 and not any("module." in k for k in read_checkpoint(tmp_path / "a.pt")["state_dict"])
    # and the distributed run's state resumes in one process
    info = train(_train_cfg(dataset, tmp_path / "b.pt", 2, resume=True))
    assert info["epochs"] == 2 and info["distributed"] is None
    load_model(tmp_path / "b.pt")
