"""Weights files of models from elsewhere, built offline (torchvision with weights=None: nothing downloaded)."""

import torch
import torchvision


def resnet18_state_dict(path, num_classes: int = 10):
    """Save a seeded torchvision resnet18's state dict with `num_classes` outputs to `path`; returns `path`."""
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18(weights=None, num_classes=num_classes).state_dict(), path)
    return path
