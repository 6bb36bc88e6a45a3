"""LeNet-5 layout (two 5x5 convs, two dense layers), widened as the paper's "overparametrized LeNet".

BatchNorm after every conv and dense layer (`batch_norm=True`, the default) so that test-time
normalisation (`--adapt bn`), the shift-aware baseline, has statistics to re-estimate.
"""

from __future__ import annotations

from torch import nn

from .common import Classifier, act_factory
from .registry import register_model


@register_model("lenet")
class LeNet(Classifier):
    def __init__(self, num_classes=10, act="relu", head="linear", input_size=(32, 32), widths=(20, 50), hidden=(256, 128),
                 qact_kwargs=None, in_channels=3, batch_norm=True):
        super().__init__()
        make = act_factory(act, qact_kwargs)
        c1, c2 = widths
        h1, h2 = hidden
        bn2d = nn.BatchNorm2d if batch_norm else (lambda c: nn.Identity())
        bn1d = nn.BatchNorm1d if batch_norm else (lambda c: nn.Identity())
        convs = nn.Sequential(
            nn.Conv2d(in_channels, c1, 5), bn2d(c1), make(c1), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 5), bn2d(c2), make(c2), nn.MaxPool2d(2),
            nn.Flatten(),
        )
        h, w = input_size  # the flattened size depends on it (28 for MNIST, 32 for CIFAR)
        flat = c2 * (((h - 4) // 2 - 4) // 2) * (((w - 4) // 2 - 4) // 2)
        self.body = nn.Sequential(convs, nn.Linear(flat, h1), bn1d(h1), make(h1), nn.Linear(h1, h2), bn1d(h2), make(h2))
        self._finish(h2, num_classes, head)
