"""Config keys of `qact compare` beyond its options: the experiment description (see experiment.py)."""

from ..options.model import MODEL_FIELDS
from ..options.train import EXPERIMENT_TRAIN_KEYS

# top level of a compare config
EXPERIMENT_KEYS = {"models", "train", "title", "description"}

# what a model entry (and the shared `train:` block) may set for training
TRAIN_KEYS = set(EXPERIMENT_TRAIN_KEYS)
# a model entry: its name, training settings, an existing model (checkpoint / model, with the single-model
# options as keys) or another model's, eval overrides, and needs_gpu (skip it, saying so, when the run is on a CPU)
MODEL_KEYS = TRAIN_KEYS | set(MODEL_FIELDS) | {"name", "checkpoint", "model", "from", "eval", "needs_gpu"}
# per-model evaluation overrides (test-time choices; the data, cells and limit stay shared)
EVAL_OVERRIDE_KEYS = {"adapt", "context", "batch_size"}
