"""The paper's training schedule and how a run records it, shared by network training
(training/loop.py) and probe fitting (probes/fit.py), which training/run.py dispatches to: it sits
below both, so that neither package imports the other's back.

The quantile-activation paper's training recipe: Adam (lr 1e-3), an 80:20 train/validation split of
the training set fixed by seed 42, ReduceLROnPlateau on validation accuracy (factor 0.1, patience
50, cooldown 10, threshold 0.01 absolute, min lr 1e-6), early stopping when validation accuracy
stops improving by 0.001, and the best epoch chosen on validation, never on the test set.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict

import numpy as np
import torch

SPLIT_SEED = 42
VAL_FRACTION = 0.2
LR = 1e-3
LR_PATIENCE = 50
MIN_GAIN = 1e-3  # the validation-accuracy gain that resets the early-stopping count
# options that do not belong in a checkpoint's record of the run (where it ran, where it wrote)
NOT_RECORDED = ("resume", "device", "out", "workers")


def split_train_val(n: int, seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """The paper's 80:20 split of the training set, fixed by `seed` (42) whatever the run's seed."""
    perm = np.random.default_rng(seed).permutation(n)
    n_val = int(round(VAL_FRACTION * n))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def split_record() -> dict:
    """The split as a checkpoint's `train` section records it."""
    return {"val_fraction": VAL_FRACTION, "seed": SPLIT_SEED}


def recorded_options(cfg) -> dict:
    """The options of a run (a TrainConfig) as its checkpoint records them (NOT_RECORDED left out)."""
    return {k: v for k, v in asdict(cfg).items() if k not in NOT_RECORDED}


def make_optimizer(params: Iterable[torch.nn.Parameter], lr: float = LR) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=lr)


def make_scheduler(opt: torch.optim.Optimizer, patience: int = LR_PATIENCE) -> torch.optim.lr_scheduler.ReduceLROnPlateau:
    """ReduceLROnPlateau on validation accuracy (step it with the accuracy, mode "max")."""
    return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.1, patience=patience, cooldown=10,
                                                      threshold=0.01, threshold_mode="abs", min_lr=1e-6)


class EarlyStopping:
    """Tracks the best validation accuracy and the epochs since it last rose by `min_gain`.

    A new best that gains less than `min_gain` is still the best epoch (its weights are kept) but
    does not reset the count: training stops after `patience` epochs without a real gain.
    """

    def __init__(self, patience: int, min_gain: float = MIN_GAIN, best_epoch: int = -1):
        self.patience, self.min_gain = patience, min_gain
        self.best, self.best_epoch, self.stale = -1.0, best_epoch, 0

    def update(self, score: float, epoch: int) -> bool:
        """Record epoch `epoch`'s (1-based) validation score; True when it is the best so far."""
        if score > self.best:
            self.stale = 0 if score > self.best + self.min_gain else self.stale + 1
            self.best, self.best_epoch = score, epoch
            return True
        self.stale += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.stale >= self.patience

    def message(self, epoch: int) -> str:
        return (f"early stop after epoch {epoch}: no {self.min_gain:g} gain in validation accuracy for "
                f"{self.patience} epochs")

    def state_dict(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch, "stale": self.stale}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_epoch, self.stale = state["best"], state["best_epoch"], state["stale"]
