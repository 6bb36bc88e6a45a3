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


def conv_only(num_classes=10):
    """A classifier with no nn.Linear (a 1x1 conv and global pooling): its features must be named in a card."""
    return torch.nn.Sequential(torch.nn.Conv2d(3, num_classes, 1), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())


def small_cnn(num_classes=10, seed=0, in_channels=3, outputs="logits"):
    """A small seeded CNN (conv, BatchNorm with non-trivial statistics, dropout, linear). `outputs`:
    what it returns, "logits", "probs" (ends in softmax) or "log-probs" (ends in log_softmax)."""
    torch.manual_seed(seed)
    layers = [torch.nn.Conv2d(in_channels, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
              torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten(), torch.nn.Dropout(0.5), torch.nn.Linear(128, num_classes)]
    layers[1].running_mean.uniform_(-0.1, 0.1)
    layers[1].running_var.uniform_(0.5, 1.5)
    if outputs == "probs":
        layers.append(torch.nn.Softmax(dim=1))
    elif outputs == "log-probs":
        layers.append(torch.nn.LogSoftmax(dim=1))
    return torch.nn.Sequential(*layers).eval()


def softmax_cnn(num_classes=10, seed=0):
    return small_cnn(num_classes, seed, outputs="probs")


def gray_cnn(num_classes=10, seed=0):
    """A 1-channel model: fed RGB, its first convolution fails."""
    return small_cnn(num_classes, seed, in_channels=1)


class _Raises(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(1, 10)

    def forward(self, x):
        raise RuntimeError("the user's forward broke")


def forward_raises(num_classes=10):
    """A model whose forward raises: the failure is the model's, not qact's."""
    return _Raises()


def five_outputs(seed=0):
    """A model of 5 outputs whose builder takes no num_classes: on a 10-class dataset its width is wrong."""
    return small_cnn(5, seed)


def any_width(num_classes=1000, seed=0):
    """A builder whose own default is 1000 classes: without --num-classes it gets the dataset's count."""
    return small_cnn(num_classes, seed)
