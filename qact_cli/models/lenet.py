"""LeNet-5 layout (two 5x5 convs, two dense layers), widened as the paper's "overparametrized LeNet"."""

from __future__ import annotations

import torch
from torch import nn

from .common import Classifier, act_factory


class LeNet(Classifier):
    def __init__(self, num_classes=10, act="relu", head="linear", input_size=(32, 32), widths=(20, 50), hidden=(256, 128),
                 qact_kwargs=None, in_channels=3):
        super().__init__()
        make = act_factory(act, qact_kwargs)
        c1, c2 = widths
        convs = nn.Sequential(
            nn.Conv2d(in_channels, c1, 5), make(c1), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 5), make(c2), nn.MaxPool2d(2),
            nn.Flatten(),
        )
        with torch.no_grad():  # flattened size depends on the input size (28 for MNIST, 32 for CIFAR)
            flat = convs[0:1](torch.zeros(1, in_channels, *input_size))
            flat = nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(c1, c2, 5), nn.MaxPool2d(2))(flat).numel()
        h1, h2 = hidden
        self.body = nn.Sequential(convs, nn.Linear(flat, h1), make(h1), nn.Linear(h1, h2), make(h2))
        self._finish(h2, num_classes, head)
