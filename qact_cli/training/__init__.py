"""Training: one entry point, `train(cfg)` (run.py), which checks the run's options (config.py) and
trains a network (loop.py, with the resume state of state.py) or fits a probe (probes/fit.py); both
follow the paper's schedule (qact_cli/schedule.py: split, optimizer, scheduler, early stopping)."""

from .config import TrainConfig, validate_config
from .loop import accuracy, batch_loss, model_info
from .run import train
from ..schedule import SPLIT_SEED, VAL_FRACTION, EarlyStopping, make_optimizer, make_scheduler, split_train_val

__all__ = ["SPLIT_SEED", "VAL_FRACTION", "EarlyStopping", "TrainConfig", "accuracy", "batch_loss", "make_optimizer",
           "make_scheduler", "model_info", "split_train_val", "train", "validate_config"]
