"""`train(cfg)`: the one entry point of training. It checks every option (config.py), then trains a
network (loop.py) or fits a probe on a frozen backbone (probes/fit.py)."""

from __future__ import annotations

from collections.abc import Callable

from .. import distributed
from ..errors import UsageError
from ..models import get_model_family
from ..probes.fit import train_probe
from .config import TrainConfig, validate_config
from .loop import train_network


def train(cfg: TrainConfig, on_epoch: Callable[[dict], None] | None = None,
          on_step: Callable[[int, int, float], None] | None = None, log: Callable[[str], None] = lambda s: None) -> dict:
    """Train and write the best checkpoint to `cfg.out`. Returns the checkpoint's `train` section."""
    validate_config(cfg)
    if get_model_family(cfg.arch, "--arch").frozen_backbone:
        if distributed.launched():
            raise UsageError("a frozen-backbone probe (--backbone, dinov2_*) trains in one process; run it without torchrun")
        return train_probe(cfg, log=log)
    return train_network(cfg, on_epoch=on_epoch, on_step=on_step, log=log)
