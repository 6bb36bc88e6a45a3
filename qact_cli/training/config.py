"""`TrainConfig`: the options of one `qact train` run, and every check of them before anything is read
(a network's options in `validate_config`, a probe's in `check_probe_config`)."""

from __future__ import annotations

from ..errors import UsageError
from ..models import get_model_family
from ..nn.activations import ACTIVATIONS
from ..nn.heads import split_head
from ..options.train import TrainConfig  # noqa: F401 (declared with its flags, torch-free)
from ..probes.backbones import backbone_spec, is_dinov2
from ..probes.model import DEFAULT_RES
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
        check_probe_config(cfg)
    if cfg.calibrate not in (None, "none", "temperature"):
        raise UsageError(unknown("--calibrate", cfg.calibrate, ("temperature",)))
    if not family.frozen_backbone:  # a probe checks its own --act and --head (check_probe_config)
        ACTIVATIONS.get(cfg.act, "--act")
        split_head(cfg.head)
    size = (cfg.qact or {}).get("context_size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise UsageError(f"--context-size {size!r}: expected a positive number of context samples per channel")


def probe_res(cfg: TrainConfig) -> int:
    """DINOv2's input resolution (`--probe-res`), a positive multiple of the patch size 14."""
    res = getattr(cfg, "probe_res", None) or DEFAULT_RES
    if int(res) <= 0 or int(res) % 14:
        raise UsageError(f"--probe-res must be a positive multiple of 14 (the patch size), got {res}")
    return int(res)


def check_probe_config(cfg: TrainConfig) -> None:
    """The options a probe takes (exit 2 otherwise); checked before anything is loaded."""
    if cfg.arch == "probe" and not cfg.backbone:
        raise UsageError("--arch probe fits a probe on a frozen backbone: give it with --backbone SPEC")
    if cfg.backbone and cfg.arch not in ("", "probe", cfg.backbone):
        raise UsageError(f"give --backbone or --arch, not both (--arch {cfg.arch}, --backbone {cfg.backbone})")
    if cfg.head.split(":", 1)[0] not in ("linear", "quantile"):  # quantile:VARIANT (nn/heads.py)
        raise UsageError(unknown("--head", cfg.head, ("linear", "quantile")))
    if cfg.loss != "ce":
        raise UsageError("--loss watershed trains an embedding; a frozen backbone's embedding is fixed (use --loss ce)")
    if cfg.act not in ("relu", "none"):
        raise UsageError(f"--act {cfg.act} does not apply to a frozen backbone (its activations are fixed); "
                         "use --head quantile for the paper's quantile classifier on its features")
    if cfg.augment:
        raise UsageError("--augment does not apply to a probe: features of the training images are computed once")
    if is_dinov2(backbone_spec(cfg)):
        probe_res(cfg)
