"""Classifier heads with their training loss: `logits = head(features)`, `loss = head.loss(logits, y)`.

`softmax(head(features))` is the predicted probability vector for both heads.

QuantileHead is the paper's "quantile classifier" (Challa et al., arXiv 2405.11573, "Last layer"),
which the official code does not contain; what follows is our reading of it (INFERRED):
  - a linear score s_k per class, turned into a one-vs-rest quantile q_k = QAct(s_k): the grounded
    CDF of the score in its context (the batch, or a stored context in eval), so 0 (the decision
    boundary) maps to 1/2. The grounding gives the negative and the positive side half the mass
    each, which for 10% positives is the paper's 0.9 / 0.1 weighting of positives and negatives;
  - the K quantiles are turned into one distribution, returned as log p, and trained one-vs-rest
    with binary cross-entropy (positives weighted 0.9, negatives 0.1) -- how, is the `variant`.
A quantile is a rank, so a typical negative sits near q = 1/4 and a typical positive near 3/4 however
well the scores separate: read as odds or used directly, the quantiles give p_y around 1/2 and the
head is under-confident by ~0.3 (docs/calibration.md). The default variant "direct_fit" trains the
network on q / sum q (which measured the most accurate) and fits one sharpness a of p ~ q^a by NLL,
by SGD during training and then exactly on the training split (training/loop.py `refit_sharpness`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..registry import Registry, UnknownName
from ..suggest import unknown
from .qact import QAct

_EPS = 1e-6
_SCALE_RATE = 10.0


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
    """The quantile classifier: linear scores -> QAct per class -> log-probabilities (see module doc).

    `variant` (a name of VARIANTS) picks how the K one-vs-rest quantiles become one distribution and
    which loss trains them; a checkpoint's head name "quantile" is the legacy "odds" variant and
    "quantile:<variant>" names the others (models/common.py), so old checkpoints load as they were.
    """

    def __init__(self, in_features: int, num_classes: int, pos_weight: float = 0.9, neg_weight: float = 0.1,
                 variant: str = "odds", **qact_kwargs):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"QuantileHead needs at least 2 classes, got {num_classes}")
        if variant not in VARIANTS:
            raise ValueError(f"unknown quantile head variant {variant!r}; choose one of {', '.join(VARIANTS)}")
        self.in_features, self.num_classes, self.variant = in_features, num_classes, variant
        self.pos_weight, self.neg_weight = pos_weight, neg_weight
        self.fc = nn.Linear(in_features, num_classes)
        self._couple, self._loss, variant_qact, self.scale0 = VARIANTS[variant]
        qact_kwargs = {**variant_qact, **qact_kwargs}
        qact_kwargs.setdefault("wrap_bn", False)  # the grounding at 0 is the decision boundary
        self.quantile = QAct(num_classes, **qact_kwargs)
        if self._couple in (_scaled_odds, _power):
            # one learned sharpness of the odds, scale0 * exp(_SCALE_RATE * log_scale), starting at scale0;
            # the rate lets Adam's ~lr-sized steps move it by a factor of e in ~100 steps
            self.log_scale = nn.Parameter(torch.zeros(()))

    @property
    def refits_sharpness(self) -> bool:
        """Whether training ends by refitting the sharpness a exactly on the training split
        (calibration.py `fit_sharpness`): the variants whose a is fitted by NLL with the quantiles fixed."""
        return self.variant in POST_HOC_SHARPNESS

    @property
    def sharpness(self) -> float:
        """The sharpness a of the scaled odds or of p ~ q^a."""
        return float(self.scale0 * (_SCALE_RATE * self.log_scale.detach()).exp())

    def set_sharpness(self, a: float) -> None:
        """Store a in `log_scale` (a = scale0 * exp(_SCALE_RATE * log_scale)), so checkpoints carry it."""
        with torch.no_grad():
            self.log_scale.fill_(float(torch.log(torch.tensor(a / self.scale0, dtype=torch.float64))) / _SCALE_RATE)

    def quantiles(self, features: Tensor) -> Tensor:
        """The K one-vs-rest quantiles q_k = QAct(s_k) in (0, 1)."""
        return self.quantile(self.fc(features)).clamp(_EPS, 1 - _EPS)

    def forward(self, features: Tensor) -> Tensor:
        return self._couple(self, self.quantiles(features))

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        return self._loss(self, output, target)


def _odds(head: QuantileHead, q: Tensor) -> Tensor:
    """p_k proportional to the odds q_k / (1 - q_k): K independent one-vs-rest classifiers, one true class."""
    return torch.log_softmax(torch.log(q) - torch.log1p(-q), dim=1)


def _scaled_odds(head: QuantileHead, q: Tensor) -> Tensor:
    """p_k proportional to (q_k / (1 - q_k))^a with a = exp(log_scale) learned: a rank in its context
    cannot come near 0 or 1 (a typical negative sits at the quantile 1/4), so the plain odds cap the
    confidence; `a` lets the loss set how sharp the coupled distribution is."""
    return torch.log_softmax(head.scale0 * (_SCALE_RATE * head.log_scale).exp() * (torch.log(q) - torch.log1p(-q)), dim=1)


def _direct(head: QuantileHead, q: Tensor) -> Tensor:
    """The quantiles used directly: p_k = q_k / sum_j q_j."""
    return torch.log(q) - torch.log(q.sum(1, keepdim=True))


def _power(head: QuantileHead, q: Tensor) -> Tensor:
    """The quantiles used directly, sharpened: p_k proportional to q_k^a, a = scale0 * exp(_SCALE_RATE * log_scale)
    learned (a = 1 is "direct")."""
    return torch.log_softmax(head.scale0 * (_SCALE_RATE * head.log_scale).exp() * torch.log(q), dim=1)


def _direct_fit_loss(head: QuantileHead, output: Tensor, target: Tensor) -> Tensor:
    """"direct_fit": the network is trained exactly as "direct" (weighted BCE on q / sum q), and only the
    sharpness a of p ~ q^a is fitted, by NLL on the same batch with the quantiles held fixed. Since
    output = a log q - logsumexp, softmax(output / a) = q / sum q and a (output / a) recovers the rest."""
    a = head.scale0 * (_SCALE_RATE * head.log_scale).exp()
    direct = torch.log_softmax(output / a.detach(), dim=1)
    sharpened = torch.log_softmax(a * (output / a).detach(), dim=1)
    return _weighted_bce(head, direct, target) + F.nll_loss(sharpened, target)


def _weighted_bce(head: QuantileHead, output: Tensor, target: Tensor) -> Tensor:
    """One-vs-rest BCE on the probabilities, -(0.9 log p_y + 0.1 sum_{k != y} log(1 - p_k)), batch mean."""
    log_p = output.clamp_max(-_EPS)
    log_not = torch.log(-torch.expm1(log_p))  # log(1 - p), stable for p near 1
    onehot = F.one_hot(target, head.num_classes).to(log_p.dtype)
    per = head.pos_weight * onehot * log_p + head.neg_weight * (1 - onehot) * log_not
    return -per.sum(1).mean()


def _nll(head: QuantileHead, output: Tensor, target: Tensor) -> Tensor:
    """Negative log-likelihood of the coupled distribution (a proper scoring rule: calibrated on the
    training data at its minimum, which the 0.9/0.1-weighted BCE is not: it over-rewards p_y)."""
    return F.nll_loss(output, target)


# variant -> (quantiles -> log-probabilities, loss on those log-probabilities, options of the head's QAct,
# starting sharpness of the scaled odds); measured in docs/calibration.md
VARIANTS = {
    "odds": (_odds, _weighted_bce, {}, 1.0),  # the first reading (checkpoints with head "quantile")
    "odds_nll": (_odds, _nll, {}, 1.0),
    "direct": (_direct, _weighted_bce, {}, 1.0),
    "scaled": (_scaled_odds, _weighted_bce, {}, 1.0),
    "scaled_nll": (_scaled_odds, _nll, {}, 1.0),
    # starts at the sharpness the "scaled" runs end near (docs/calibration.md), so it needs not be learned first
    "scaled3": (_scaled_odds, _weighted_bce, {}, 3.0),
    "power": (_power, _weighted_bce, {}, 1.0),
    "power4": (_power, _weighted_bce, {}, 4.0),
    "direct_fit": (_power, _direct_fit_loss, {}, 4.0),
    # the KDE bandwidth of the gradient follows the scores' spread instead of a fixed 0.5 (score units)
    "scaled_silverman": (_scaled_odds, _weighted_bce, {"bandwidth": "silverman"}, 1.0),
}
# variants whose sharpness is refitted by NLL on the training split once training ends (the SGD fit
# during training cannot converge in a few dozen steps: docs/calibration.md)
POST_HOC_SHARPNESS = frozenset({"direct_fit"})
DEFAULT_VARIANT = "direct_fit"  # what `--head quantile` trains (recorded as "quantile:<variant>"); docs/calibration.md

# head name -> `(in_features, num_classes, variant) -> nn.Module`; a name may carry a variant, "quantile:odds"
HEADS = Registry("--head")
HEADS.add("linear", lambda in_features, num_classes, variant=None: LinearHead(in_features, num_classes))
# "quantile" alone is the first reading ("odds"), so checkpoints written before variants load as they were
HEADS.add("quantile", lambda in_features, num_classes, variant=None: QuantileHead(in_features, num_classes,
                                                                                  variant=variant or "odds"))


def resolve_head(head: str) -> str:
    """`--head quantile` trains the default variant and records it ("quantile:<variant>"), so that
    checkpoints from before variants (head "quantile") keep loading as the first reading."""
    return f"quantile:{DEFAULT_VARIANT}" if head == "quantile" else head


def split_head(name: str) -> tuple[str, str | None]:
    """"quantile:direct_fit" -> ("quantile", "direct_fit"); an unknown head or variant is exit 2."""
    base, _, variant = str(name).partition(":")
    HEADS.get(base)
    if variant and (base != "quantile" or variant not in VARIANTS):
        raise UnknownName(unknown("quantile head variant" if base == "quantile" else f"{base} head variant",
                                  variant, VARIANTS if base == "quantile" else ()))
    return base, variant or None


def make_head(name: str, in_features: int, num_classes: int) -> nn.Module:
    """The head registered as `name` ("linear", "quantile", "quantile:<variant>")."""
    base, variant = split_head(name)
    return HEADS.get(base)(in_features, num_classes, variant)
