"""ResNet18, CIFAR style: 3x3 stem, no max-pool, global average pooling.

Placement of QAct (`placement`): "all" puts the chosen activation everywhere (the paper: "replace
the usual ReLU"); "official" follows the official code's ResNet18 (adityac20/quantile_activation, `models/resnet.py`): the first
activation of every block stays ReLU, QAct only at the stem, after each residual sum, and as a 1-D
QAct on the pooled feature before the classifier.
"""

from __future__ import annotations

from torch import nn

from ..nn.activations import activation_name
from .common import Classifier, act_factory
from .registry import register_model


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride, inner_act, outer_act):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.act1 = inner_act(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.act2 = outer_act(cout)

    def forward(self, x):
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + self.shortcut(x))


@register_model("resnet18")
class ResNet18(Classifier):
    def __init__(self, num_classes=10, act="relu", head="linear", placement="all", widths=(64, 128, 256, 512),
                 blocks=(2, 2, 2, 2), qact_kwargs=None, in_channels=3, input_size=None):
        super().__init__()
        if placement not in ("all", "official"):
            raise ValueError(f"unknown placement {placement!r}; choose all or official")
        official_qact = placement == "official" and activation_name(act) == "qact"
        outer = act_factory(act, qact_kwargs)
        inner = act_factory("relu", None) if official_qact else outer
        layers, cin = [nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), outer(widths[0])], widths[0]
        for i, (w, n) in enumerate(zip(widths, blocks)):
            for j in range(n):
                layers.append(BasicBlock(cin, w, 2 if (i > 0 and j == 0) else 1, inner, outer))
                cin = w
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.body = nn.Sequential(*layers)
        pre_head = outer(cin) if official_qact else None
        self._finish(cin, num_classes, head, pre_head)
