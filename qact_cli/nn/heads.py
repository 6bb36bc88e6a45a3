"""Classifier heads with their training loss: `logits = head(features)`, `loss = head.loss(logits, y)`.

`softmax(head(features))` is the predicted probability vector for both heads (what evaluation scores).

QuantileHead is the paper's "Quantile Classifier" (arXiv 2405.11573, experimental setup), which the
official code does not contain; what follows is our reading of it (INFERRED):
  - a linear score s_k per class, turned into a one-vs-rest probability q_k = QAct(s_k): the
    grounded CDF of the score in its context (the batch, or a stored context in eval), so 0 maps to
    1/2 and the output adapts to the context distribution;
  - the K one-vs-rest probabilities are coupled into one distribution p_k proportional to the odds
    q_k / (1 - q_k) (exactly one class is true, classifiers independent), returned as log p;
  - the training loss is one-vs-rest binary cross-entropy on p, positives weighted 0.9 and negatives
    0.1, which balances the 1 : K-1 imbalance of one-vs-rest targets for K = 10.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .qact import QAct

_EPS = 1e-6


class LinearHead(nn.Module):
    """A linear classifier trained with cross-entropy; forward returns logits."""

    def __init__(self, in_features: int, num_classes: int):
        super().__init__()
        self.in_features, self.num_classes = in_features, num_classes
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, features: Tensor) -> Tensor:
        return self.fc(features)

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(output, target)


class QuantileHead(nn.Module):
    """The quantile classifier: linear scores -> QAct per class -> log-probabilities (see module doc)."""

    def __init__(self, in_features: int, num_classes: int, pos_weight: float = 0.9, neg_weight: float = 0.1,
                 **qact_kwargs):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"QuantileHead needs at least 2 classes, got {num_classes}")
        self.in_features, self.num_classes = in_features, num_classes
        self.pos_weight, self.neg_weight = pos_weight, neg_weight
        self.fc = nn.Linear(in_features, num_classes)
        qact_kwargs.setdefault("wrap_bn", False)  # the grounding at 0 is the decision boundary
        self.quantile = QAct(num_classes, **qact_kwargs)

    def forward(self, features: Tensor) -> Tensor:
        q = self.quantile(self.fc(features)).clamp(_EPS, 1 - _EPS)
        return torch.log_softmax(torch.log(q) - torch.log1p(-q), dim=1)

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        """One-vs-rest BCE on the probabilities, -(0.9 log p_y + 0.1 sum_{k != y} log(1 - p_k)), batch mean."""
        log_p = output.clamp_max(-_EPS)
        log_not = torch.log(-torch.expm1(log_p))  # log(1 - p), stable for p near 1
        onehot = F.one_hot(target, self.num_classes).to(log_p.dtype)
        per = self.pos_weight * onehot * log_p + self.neg_weight * (1 - onehot) * log_not
        return -per.sum(1).mean()
