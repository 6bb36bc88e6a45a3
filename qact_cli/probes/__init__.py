"""Probes: a classifier fitted on a frozen backbone's features (Challa et al., arXiv 2405.11573,
"Last layer"), above `models/`, which it uses to find its backbones.

backbones      what a frozen backbone is (DINOv2, a qact network, a model from elsewhere) and its identity
model          the probe network `qact eval` runs; importing it registers the dinov2_* and probe model
               families, so that `models.load_checkpoint` rebuilds probe checkpoints
feature_cache  DINOv2 features on disk, keyed by weights, data and preprocessing
features       the training features a probe is fitted on
linear         `--head linear`: logistic regression with C chosen on the validation split
quantile_head  `--head quantile`: the paper's quantile classifier on fixed features
fit            `qact train --backbone SPEC`: features, head, checkpoint
"""

from .model import ProbeModel, build_probe, dinov2_weights_available

__all__ = ["ProbeModel", "build_probe", "dinov2_weights_available"]
