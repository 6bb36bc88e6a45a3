"""Config keys of `qact compare` beyond its options: the experiment description (see experiment.py)."""

# top level of a compare config
EXPERIMENT_KEYS = {"models", "train", "title", "description"}

# what a model entry (and the shared `train:` block) may set for training
TRAIN_KEYS = {"dataset", "arch", "act", "loss", "head", "epochs", "batch_size", "lr", "augment", "placement",
              "early_stop", "context_size", "weights", "probe_res", "seed"}
# a model entry: its name, training settings, an existing checkpoint or another model's, eval overrides,
# and needs_gpu (skip it, saying so, when the run is on a CPU)
MODEL_KEYS = TRAIN_KEYS | {"name", "checkpoint", "from", "eval", "needs_gpu"}
# per-model evaluation overrides (test-time choices; the data, cells and limit stay shared)
EVAL_OVERRIDE_KEYS = {"adapt", "context", "batch_size"}
