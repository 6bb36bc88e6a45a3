"""Data-parallel runs on torch.distributed: `torchrun --nproc-per-node N -m qact_cli train|eval ...`.

Everything here is a no-op in a single process, so the library calls these helpers unconditionally.

- `setup(device)` joins the process group that torchrun describes in its environment variables
  (NCCL on CUDA, gloo on CPU), with a timeout (`$QACT_DIST_TIMEOUT`, seconds) so that a lost rank
  ends the run with a message instead of a hang.
- Training: `prepare_training` turns BatchNorm layers into `SyncBatchNorm*d` (global-batch
  statistics, on CPU too), switches QAct layers to global-batch context and wraps the model in
  DistributedDataParallel; `train_loader` shards each epoch with a DistributedSampler.
  The layers' synchronisation itself lives in `qact_cli.nn.sync` (BatchNorm statistics, QAct context
  samples gathered from every rank), which this module uses and which never imports it.
- Evaluation: `predict_sharded` has each rank predict the batches b with b % world == rank of a
  cell, formed exactly as in one process (a batch never mixes cells, and `--context batch` sees the
  same batches), reseeded per batch (`seed_batches`) so that random draws match too, and hands every
  rank all predictions in file order; the metrics are then computed from the same numbers a single
  process would have, and only rank 0 writes. `local_batches` shards a validation loader likewise.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
from datetime import timedelta
from typing import Callable, Iterable, Iterator, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from .errors import InputError, QactError, UsageError, first_line
from .nn import convert_sync_batchnorm, set_context_sync
from .utils import select_device

T = TypeVar("T")
TIMEOUT_ENV = "QACT_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 600.0

_device: torch.device | None = None
_broken = False  # a collective failed: skip destroy_process_group at exit (it can block on a dead peer)


class DistributedError(QactError):
    """Another process of a distributed run failed or stopped answering (exit 3)."""

    exit_code = 3


# --------------------------------------------------------------------------------------- process group
def launched() -> bool:
    """True when started by torchrun (or any launcher) with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def backend() -> str | None:
    return str(dist.get_backend()) if active() else None


def timeout_s() -> float:
    raw = os.environ.get(TIMEOUT_ENV, "")
    try:
        value = float(raw) if raw else DEFAULT_TIMEOUT_S
    except ValueError:
        raise UsageError(f"${TIMEOUT_ENV}={raw!r} is not a number of seconds") from None
    if not value > 0:
        raise UsageError(f"${TIMEOUT_ENV} must be > 0 seconds, got {raw}")
    return value


def setup(device: str = "auto") -> torch.device:
    """Select this process's device and, under torchrun, join the process group (idempotent).

    Each rank uses `cuda:LOCAL_RANK` on GPUs (NCCL) or the CPU (gloo)."""
    global _device
    if _device is not None:
        return _device
    if not launched():
        return select_device(device)
    for var in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        if var not in os.environ:
            raise UsageError(f"WORLD_SIZE is set but {var} is not; launch distributed runs with "
                             "`torchrun --nproc-per-node N -m qact_cli ...`")
    dev = select_device(device)
    local = int(os.environ["LOCAL_RANK"])
    if dev.type == "cuda":
        if dev.index is not None and device not in ("auto", "cuda"):
            raise UsageError(f"--device {device}: under torchrun each process uses cuda:LOCAL_RANK; pass --device cuda")
        if local >= torch.cuda.device_count():
            raise UsageError(f"{os.environ.get('LOCAL_WORLD_SIZE', local + 1)} processes per node but only "
                             f"{torch.cuda.device_count()} GPU(s); lower --nproc-per-node")
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
        backend = "nccl"
    elif dev.type == "cpu":
        backend = "gloo"
    else:
        raise UsageError(f"distributed runs need CUDA (NCCL) or the CPU (gloo), not {dev.type}; pass --device cpu or cuda")
    if not dist.is_initialized():
        try:
            dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s()),
                                    **({"device_id": dev} if backend == "nccl" else {}))
        except (RuntimeError, ValueError) as e:
            raise DistributedError(f"rank {os.environ['RANK']}: cannot join the process group at "
                                   f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']} ({first_line(e)}); "
                                   "check the torchrun rendezvous options") from None
        atexit.register(teardown)
    _device = dev
    return dev


def teardown() -> None:
    global _device
    _device = None
    if dist.is_available() and dist.is_initialized() and not _broken:
        with contextlib.suppress(Exception):
            dist.destroy_process_group()


def _is_comm_error(e: BaseException) -> bool:
    if isinstance(e, getattr(dist, "DistError", ())):
        return True
    text = str(e)
    return isinstance(e, RuntimeError) and any(w in text for w in ("gloo", "Gloo", "NCCL", "Connection closed", "timed out",
                                                                     "Timed out", "Connection reset", "ProcessGroup"))


@contextlib.contextmanager
def guard(what: str) -> Iterator[None]:
    """Turn a failed collective (a peer crashed, or stopped answering for $QACT_DIST_TIMEOUT seconds) into
    one DistributedError line; single-process errors pass through untouched."""
    global _broken
    try:
        yield
    except Exception as e:
        if not (active() and _is_comm_error(e)):
            raise
        _broken = True
        raise DistributedError(f"rank {rank()}: {what} stopped because another process failed or stopped answering "
                               f"({first_line(e)}); see that process's own message above (timeout {timeout_s():g}s, "
                               f"${TIMEOUT_ENV})") from None


def _comm_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def barrier() -> None:
    if active():
        dist.barrier()


def main_first(fn: Callable[[], T]) -> T:
    """Run `fn` (e.g. a dataset download) on each node's local rank 0 first, then on the other ranks.

    A failure on the first rank is re-raised after the barrier, so the other ranks never wait for it."""
    if not active():
        return fn()
    first = int(os.environ.get("LOCAL_RANK", rank())) == 0
    err = None
    if first:
        try:
            value = fn()
        except Exception as e:  # re-raised after the barrier, so the other ranks do not wait on a dead process
            err = e
    barrier()
    if err is not None:
        raise err
    return value if first else fn()


def from_main(fn: Callable[[], T]) -> T:
    """Run `fn` on rank 0 only and hand its result (or its QactError) to every rank."""
    if not active():
        return fn()
    box: list = [None]
    if is_main():
        try:
            box[0] = ("ok", fn())
        except QactError as e:
            box[0] = ("error", type(e).__name__, e.exit_code, str(e))
    dist.broadcast_object_list(box, src=0, device=_comm_device())
    if box[0][0] == "error":
        _, name, code, message = box[0]
        from . import errors

        cls = getattr(errors, name, None) or (DistributedError if name == "DistributedError" else QactError)
        err = cls(message)
        err.exit_code = code
        raise err
    return box[0][1]


def sum_over_ranks(*values: float) -> tuple[float, ...]:
    if not active():
        return values
    t = torch.tensor(values, dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t)
    return tuple(t.tolist())


def rank_seed(seed: int) -> int:
    """A per-rank seed for per-sample randomness (augmentation); rank 0 keeps `seed`."""
    return seed + 7919 * rank()


def describe(sync_context: bool) -> dict | None:
    """What a checkpoint records about the run's distribution (None for a single process)."""
    if not active():
        return None
    return {"world_size": world_size(), "backend": backend(), "sync_context": bool(sync_context),
            "sync_batchnorm": bool(sync_context), "context": "global batch" if sync_context else "per-rank batch"}


# --------------------------------------------------------------------------------------- training
def local_batch_size(batch_size: int, min_local: int = 1) -> int:
    """`--batch-size` is the global batch; each of the W ranks takes batch_size / W of it."""
    w = world_size()
    if batch_size % w or batch_size // w < min_local:
        lo = max(w * min_local, w * -(-batch_size // w))
        raise UsageError(f"--batch-size {batch_size} is the global batch and must split evenly over the {w} processes"
                         + (f" into shares of at least {min_local}" if min_local > 1 else "")
                         + f"; use a multiple of {w} (e.g. {lo})")
    return batch_size // w


def _batch_as_is(batch):
    return batch


def train_loader(source, batch_size: int, seed: int, workers: int | None = None) -> torch.utils.data.DataLoader:
    """This rank's share of one epoch: a DistributedSampler shuffled with `seed`, batches of
    batch_size / W. Every rank gets the same number of batches (the sampler pads by repeating)."""
    from torch.utils.data import DataLoader, DistributedSampler

    from .data.base import loader_workers

    if len(source) < world_size():
        raise InputError(f"only {len(source)} training images for {world_size()} processes; use fewer processes")
    local = local_batch_size(batch_size)
    sampler = DistributedSampler(source, num_replicas=world_size(), rank=rank(), shuffle=True, seed=seed)
    # drop a last batch of one on every rank alike: a per-rank QAct or BatchNorm context needs two samples
    return DataLoader(source, batch_size=local, sampler=sampler, num_workers=loader_workers(source, workers),
                      collate_fn=_batch_as_is,
                      drop_last=sampler.num_samples % local == 1 and sampler.num_samples > 1)


def prepare_training(model: nn.Module, device: torch.device, sync_context: bool = True) -> nn.Module:
    """The module to call in the training step: `model` itself in one process; else `model` with global-batch
    BatchNorm/QAct statistics (unless `sync_context` is False) wrapped in DistributedDataParallel."""
    if not active():
        return model
    from torch.nn.parallel import DistributedDataParallel

    if sync_context:
        convert_sync_batchnorm(model)
    set_context_sync(model, sync_context)
    model.to(device)
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


# --------------------------------------------------------------------------------------- evaluation
def shard_indices(n: int, batch_size: int, rank_: int, world: int) -> np.ndarray:
    """Indices of the batches b ≡ rank (mod world) of a file-order pass with `batch_size` (b counts from 0)."""
    idx = np.arange(n, dtype=np.int64)
    return idx[(idx // batch_size) % world == rank_]


def shard_source(source, batch_size: int):
    """This rank's batches of `source`, as a source whose consecutive batches of `batch_size` are exactly
    those batches (every batch but the last is full, and the last is the last one of some rank)."""
    if not active():
        return source
    return source.subset(shard_indices(len(source), batch_size, rank(), world_size()))


def local_batches(loader):
    """The batches of a file-order loader that this rank computes (all of them in one process)."""
    if not active():
        return loader
    from .data import make_loader

    return make_loader(shard_source(loader.dataset, loader.batch_size), loader.batch_size, workers=loader.num_workers)


def predict_sharded(predict: Callable[[object, Iterable[int]], tuple[torch.Tensor, torch.Tensor]], source,
                    batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`predict(part, batch_ids)` -> (probs (N_part, K), labels (N_part,)) over `part`'s batches of `batch_size`
    in order, whose places in the whole pass are `batch_ids` (see `seed_batches`).

    One process: `predict(source, 0..B-1)`. Under a process group each rank predicts its share of the
    batches (`shard_source`; possibly none) and every rank gets all predictions back in file order. The
    global RNG is left as it was, so what follows (the next cell's adaptation) is the same on every rank."""
    n_batches = -(-len(source) // batch_size)
    with torch.random.fork_rng(devices=[torch.cuda.current_device()] if torch.cuda.is_initialized() else []):
        if not active():
            return predict(source, range(n_batches))
        part = shard_source(source, batch_size)
        probs, labels = predict(part, range(rank(), n_batches, world_size())) if len(part) else (None, None)
    return gather_predictions(probs, labels, len(source), batch_size)


def seed_batches(batches: Iterable[T], key, batch_ids: Iterable[int]) -> Iterator[T]:
    """Yield `batches`, reseeding torch's RNG before each from (`key`, its batch id): random draws made while
    a batch is processed (QAct's context sample) then depend on the batch's place in its cell only, not on
    which batches this process saw before, so sharded and single-process runs draw the same numbers."""
    for batch, b in zip(batches, batch_ids, strict=True):
        digest = hashlib.blake2b(f"{key!r}/{b}".encode(), digest_size=8).digest()
        seed = int.from_bytes(digest, "little") & (2**63 - 1)
        # not torch.manual_seed: before CUDA is initialised it queues a lazy seeding call (with a captured
        # stack) on every batch; seed the generators that are actually in use instead
        torch.default_generator.manual_seed(seed)
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.manual_seed_all(seed)
        yield batch


def gather_predictions(probs: torch.Tensor | None, labels: torch.Tensor | None, n: int,
                       batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every rank's (probs (N_r, K), labels (N_r,)) for its shard of an n-image pass with `batch_size`
    (None for an empty shard), put back in file order on every rank: (n, K), (n,)."""
    comm = _comm_device()
    w = world_size()
    p = probs.float() if probs is not None else torch.zeros(0, 0)
    y = labels.long() if labels is not None else torch.zeros(0, dtype=torch.long)
    shape = torch.tensor([p.shape[0], p.shape[1]], dtype=torch.int64, device=comm)
    shapes = [torch.empty_like(shape) for _ in range(w)]
    dist.all_gather(shapes, shape)
    rows = [int(s_[0]) for s_ in shapes]
    k, m = max(int(s_[1]) for s_ in shapes), max(rows)
    p_pad = torch.zeros(m, k, dtype=torch.float32, device=comm)
    y_pad = torch.zeros(m, dtype=torch.int64, device=comm)
    if len(p):  # an empty shard (more ranks than batches) sends padding only
        p_pad[: p.shape[0]] = p.to(comm)
        y_pad[: y.shape[0]] = y.to(comm)
    p_all = [torch.empty_like(p_pad) for _ in range(w)]
    y_all = [torch.empty_like(y_pad) for _ in range(w)]
    dist.all_gather(p_all, p_pad)
    dist.all_gather(y_all, y_pad)
    out_p, out_y = torch.empty(n, k), torch.empty(n, dtype=torch.int64)
    for r in range(w):
        idx = torch.from_numpy(shard_indices(n, batch_size, r, w))
        if len(idx) != rows[r]:
            raise DistributedError(f"rank {r} predicted {rows[r]} images where its share is {len(idx)}; "
                                   "the ranks disagree on the data (is the dataset the same on every node?)")
        out_p[idx] = p_all[r][: rows[r]].cpu()
        out_y[idx] = y_all[r][: rows[r]].cpu()
    return out_p, out_y
