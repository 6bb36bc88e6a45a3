"""`TrainConfig`: the options of one `qact train` run, each field declared once with its flag
(qact_cli/training/config.py checks them; a compare experiment's `train:` keys are these too)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .schema import option


def _qact_options(context_size: int | None) -> dict:
    return {"context_size": context_size} if context_size is not None else {}


@dataclass
class TrainConfig:
    dataset: str = option("--dataset", help="digits, cifar10, cifar100, tinyimagenet, npy:DIR, folder:DIR.",
                          cli_default="")
    arch: str = option("--arch", help="lenet, resnet18, vgg11, densenet, dinov2_vits14.", cli_default="")
    out: str = option("--out", help="Checkpoint to write (the best on validation).", cli_default="")
    data_root: str | None = None
    download: bool = False
    act: str = option("--act", "relu", "relu|qact|prelu|selu.")
    loss: str = option("--loss", "ce", "ce|watershed (watershed adds the paper's loss on the embedding).")
    head: str = option("--head", "linear", "linear|quantile (the paper's quantile classifier)|quantile:VARIANT "
                       "(docs/calibration.md).")
    epochs: int = option("--epochs", 30)
    batch_size: int = option("--batch-size", 128)
    lr: float = option("--lr", 1e-3)  # schedule.LR (the paper's Adam rate; a test keeps them equal)
    seed: int = 0
    device: str = "auto"
    resume: bool = option("--resume", False, "Continue an interrupted run from its last epoch.")
    augment: bool = option("--augment/--no-augment", False, "Random crop (pad 4) and horizontal flip.")
    placement: str = option("--placement", "all", "QAct placement in resnet18: all|official.")
    early_stop: int = option("--early-stop", 10, "Stop after N epochs without a 0.001 validation gain.")
    lr_patience: int = 50  # schedule.LR_PATIENCE
    workers: int | None = None  # None: make_loader's default (up to 4 for image folders)
    backbone: str | None = option("--backbone", None, "Fit a probe (--head) on this frozen backbone: a qact "
                                  "checkpoint, dinov2_vits14|vitb14|vitl14, a spec (torchvision:NAME, ...) or a "
                                  "model card.")  # a probe (arch "probe") on this frozen backbone
    weights: str | None = option("--weights", None, "Frozen backbone weights: PATH|random for dinov2_*, the weights "
                                 "file of a --backbone spec.")  # frozen backbones only
    probe_res: int = option("--probe-res", 224, "dinov2_* only: input resolution, a multiple of 14 (112 is ~4x "
                            "faster on CPU).")
    sync_context: bool = option("--sync-context/--no-sync-context", True, "Under torchrun: QAct context and "
                                "BatchNorm statistics from the global batch (all processes) or from each process's "
                                "share.")
    # extra QAct options (context_size, n_quantiles, ...); the command line sets context_size
    qact: dict = option("--context-size", help="QAct: context sample size per channel.", factory=dict,
                        param="context_size", cli_type=int | None, cli_default=None, to_field=_qact_options)
    calibrate: str | None = option("--calibrate", None, "temperature: fit one temperature on the validation split "
                                   "after training (Guo et al. 2017); eval reports calibrated metrics beside the "
                                   "raw ones.")  # calibration.py


# the order `qact train --help` lists them in
TRAIN_FLAGS = ("dataset", "arch", "backbone", "out", "act", "loss", "head", "calibrate", "epochs", "batch_size", "lr",
               "weights", "probe_res", "resume", "placement", "augment", "early_stop", "qact", "sync_context")
# what an experiment's `train:` block (compare config) may set: the model's own settings
EXPERIMENT_TRAIN_KEYS = frozenset({"dataset", "arch", "act", "loss", "head", "epochs", "batch_size", "lr", "augment",
                                   "placement", "early_stop", "context_size", "weights", "probe_res", "seed",
                                   "backbone"})
