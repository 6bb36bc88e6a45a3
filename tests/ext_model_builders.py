"""Model builders named as `tests.ext_model_builders:NAME` (package.module:callable) by the tests of
models from elsewhere. Not a test module itself."""

import torch
import torchvision


def build(num_classes=10, seed=0):
    """A torchvision ResNet-18 with seeded random weights (BatchNorm statistics too)."""
    torch.manual_seed(seed)
    model = torchvision.models.resnet18(num_classes=num_classes)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def not_a_module(**kwargs):
    return {"weights": 1}


def raises(**kwargs):
    raise ValueError("no such variant")
