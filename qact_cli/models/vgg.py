"""VGG11 with BatchNorm, CIFAR style (a 512-d embedding after global pooling, one linear head)."""

from __future__ import annotations

from torch import nn

from .common import Classifier, act_factory
from .registry import register_model

VGG11 = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


@register_model("vgg11")
class VGG(Classifier):
    def __init__(self, num_classes=10, act="relu", head="linear", cfg=VGG11, qact_kwargs=None, in_channels=3, input_size=None):
        super().__init__()
        make, layers, cin = act_factory(act, qact_kwargs), [], in_channels
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, ceil_mode=True))  # ceil: small inputs never shrink to 0
            else:
                layers += [nn.Conv2d(cin, v, 3, padding=1, bias=False), nn.BatchNorm2d(v), make(v)]
                cin = v
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.body = nn.Sequential(*layers)
        self._finish(cin, num_classes, head)
