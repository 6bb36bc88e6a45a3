"""Config keys of `qact compare` beyond its options: the experiment description (see experiment.py)."""

from ..eval.options import MODEL_FIELDS

# top level of a compare config
EXPERIMENT_KEYS = {"models", "train", "title", "description"}

# what a model entry (and the shared `train:` block) may set for training
TRAIN_KEYS = {"dataset", "arch", "act", "loss", "head", "epochs", "batch_size", "lr", "augment", "placement",
              "early_stop", "context_size", "weights", "probe_res", "seed"}
# a model card's keys (an entry with `checkpoint:` or `model:` other than a qact checkpoint)
CARD_KEYS = set(MODEL_FIELDS)
# a model entry: its name, training settings, an existing model (checkpoint / model, with card keys) or
# another model's, eval overrides, and needs_gpu (skip it, saying so, when the run is on a CPU)
MODEL_KEYS = TRAIN_KEYS | CARD_KEYS | {"name", "checkpoint", "model", "from", "eval", "needs_gpu"}
# per-model evaluation overrides (test-time choices; the data, cells and limit stay shared)
EVAL_OVERRIDE_KEYS = {"adapt", "context", "batch_size"}
