"""Pieces shared by the architectures: the classifier head and the features/head split.

Every model is `head(features(x))`: `features` gives the embedding that the watershed loss and the
probes use, `head` maps it to logits (a quantile head returns log-probabilities).
"""

from __future__ import annotations

from torch import nn

from ..nn.activations import activation_name, make_activation
from ..nn.heads import make_head


class Classifier(nn.Module):
    """Base class: subclasses build `self.body` (image -> embedding) and call `_finish`."""

    embed_dim: int

    def _finish(self, embed_dim: int, num_classes: int, head: str, pre_head: nn.Module | None = None):
        self.embed_dim = embed_dim
        self.pre_head = pre_head or nn.Identity()
        self.head = make_head(head, embed_dim, num_classes)

    def features(self, x):
        return self.pre_head(self.body(x))

    def forward(self, x, return_features: bool = False):
        feats = self.features(x)
        logits = self.head(feats)
        return (logits, feats) if return_features else logits


def act_factory(act, qact_kwargs: dict | None):
    """A callable `num_features -> activation module` with the model's QAct settings bound. `act` is a
    registered name or factory, or any `(num_features, **options) -> nn.Module` callable."""
    kwargs = dict(qact_kwargs or {}) if activation_name(act) == "qact" else {}
    return lambda c: make_activation(act, c, **kwargs)
