"""DenseNet-BC (Huang et al.), CIFAR style. depth=100, growth=12 gives ~0.8 M parameters, the
paper's "DenseNet (1M)". Pre-activation layers: BN -> act -> 1x1 conv -> BN -> act -> 3x3 conv."""

from __future__ import annotations

import torch
from torch import nn

from .common import Classifier, act_factory
from .registry import register_model


class DenseLayer(nn.Module):
    def __init__(self, cin, growth, make):
        super().__init__()
        inner = 4 * growth
        self.net = nn.Sequential(
            nn.BatchNorm2d(cin), make(cin), nn.Conv2d(cin, inner, 1, bias=False),
            nn.BatchNorm2d(inner), make(inner), nn.Conv2d(inner, growth, 3, padding=1, bias=False),
        )

    def forward(self, x):
        return torch.cat([x, self.net(x)], 1)


@register_model("densenet")
class DenseNet(Classifier):
    def __init__(self, num_classes=10, act="relu", head="linear", depth=100, growth=12, reduction=0.5, qact_kwargs=None,
                 in_channels=3, input_size=None):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError("DenseNet-BC depth must be 6k+4 (e.g. 40, 100)")
        make, n = act_factory(act, qact_kwargs), (depth - 4) // 6
        c = 2 * growth
        layers = [nn.Conv2d(in_channels, c, 3, padding=1, bias=False)]
        for stage in range(3):
            for _ in range(n):
                layers.append(DenseLayer(c, growth, make))
                c += growth
            if stage < 2:
                out = int(c * reduction)
                layers += [nn.BatchNorm2d(c), make(c), nn.Conv2d(c, out, 1, bias=False), nn.AvgPool2d(2, ceil_mode=True)]
                c = out
        layers += [nn.BatchNorm2d(c), make(c), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.body = nn.Sequential(*layers)
        self._finish(c, num_classes, head)
