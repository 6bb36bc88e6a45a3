"""Compatibility module: training moved to the `qact_cli.training` package.

`from qact_cli.train import TrainConfig, train, split_train_val` keeps working for code written
against earlier versions; new code imports from `qact_cli.training`.
"""

from .training import SPLIT_SEED, VAL_FRACTION, TrainConfig, split_train_val, train, validate_config

__all__ = ["SPLIT_SEED", "VAL_FRACTION", "TrainConfig", "split_train_val", "train", "validate_config"]
