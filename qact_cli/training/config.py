"""`TrainConfig`: the options of one `qact train` run, and their checks before anything is read."""

from __future__ import annotations

from ..errors import UsageError
from ..models import get_model_family
from ..nn.heads import split_head
from ..nn.activations import ACTIVATIONS
from ..options.train import TrainConfig  # noqa: F401 (declared with its flags, torch-free)
from ..suggest import unknown


def validate_config(cfg: TrainConfig) -> None:
    """Option checks that need no data: an experiment checks every model's config before training one."""
    if cfg.loss not in ("ce", "watershed"):
        raise UsageError(unknown("--loss", cfg.loss, ("ce", "watershed")))
    if cfg.epochs < 1 or cfg.batch_size < 1 or not cfg.lr > 0:
        raise UsageError("--epochs and --batch-size must be ≥ 1 and --lr > 0")
    if cfg.act == "qact" and cfg.batch_size < 2:
        raise UsageError("--act qact needs --batch-size ≥ 2: the batch is the activation's context")
    family = get_model_family(cfg.arch, "--arch")
    if family.frozen_backbone or cfg.backbone:  # a probe checks its own options
        from .probe import check_config

        check_config(cfg)
    if cfg.calibrate not in (None, "none", "temperature"):
        raise UsageError(unknown("--calibrate", cfg.calibrate, ("temperature",)))
    if cfg.calibrate == "temperature" and family.frozen_backbone:
        raise UsageError("--calibrate is not available for frozen-backbone probes yet; leave it out")
    if not family.frozen_backbone:  # a probe checks its own --act and --head (models/probe.py)
        ACTIVATIONS.get(cfg.act, "--act")
        split_head(cfg.head)
    size = (cfg.qact or {}).get("context_size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise UsageError(f"--context-size {size!r}: expected a positive number of context samples per channel")
