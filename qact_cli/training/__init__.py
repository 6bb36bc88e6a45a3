"""Training: the network training loop (loop.py), the paper's protocol shared with probe fitting
(protocol.py: split, optimizer, scheduler, early stopping), the run's options (config.py) and the
resume state (state.py)."""

from .config import TrainConfig, validate_config
from .loop import accuracy, batch_loss, model_info, train
from .protocol import SPLIT_SEED, VAL_FRACTION, EarlyStopping, make_optimizer, make_scheduler, split_train_val

__all__ = ["SPLIT_SEED", "VAL_FRACTION", "EarlyStopping", "TrainConfig", "accuracy", "batch_loss", "make_optimizer",
           "make_scheduler", "model_info", "split_train_val", "train", "validate_config"]
