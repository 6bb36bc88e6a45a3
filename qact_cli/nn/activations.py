"""Activation registry: models ask for an activation and get a module for C channels.

The models never import QAct directly: every architecture takes `act` — a registered name
("relu", "prelu", "selu", "qact"), a registered factory, or any callable
`(num_features, **options) -> nn.Module` (a class such as `nn.PReLU` or your own) — through
`make_activation`. New activations register with `@register_activation("name")`.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ..registry import Registry

ActivationFactory = Callable[..., nn.Module]  # (num_features, **options) -> module

ACTIVATIONS: Registry[ActivationFactory] = Registry("activation")


def register_activation(name: str) -> Callable[[ActivationFactory], ActivationFactory]:
    """Decorator: `@register_activation("gelu")` on a `(num_features, **options) -> nn.Module` callable."""
    return ACTIVATIONS.register(name)


@register_activation("relu")
def relu(num_features: int) -> nn.Module:
    return nn.ReLU(inplace=True)


@register_activation("prelu")
def prelu(num_features: int) -> nn.Module:
    return nn.PReLU(num_features)


@register_activation("selu")
def selu(num_features: int) -> nn.Module:
    return nn.SELU(inplace=True)


@register_activation("qact")
def qact(num_features: int, **options) -> nn.Module:
    from .qact import QAct  # on first use: the table builder and kernels are not needed by the other activations

    # in place like ReLU(inplace=True): saves one activation-sized allocation per layer in eval
    return QAct(num_features, **{"inplace": True, **options})


def get_activation(name_or_factory: str | ActivationFactory) -> ActivationFactory:
    """The factory for a registered name; a callable passes through. Unknown names raise
    UnknownName (a UsageError and a ValueError) with a did-you-mean."""
    return ACTIVATIONS.get(name_or_factory)


def activation_name(act: str | ActivationFactory) -> str | None:
    """The registered name of `act` (a name or a registered factory), None for a user's callable."""
    return ACTIVATIONS.name_of(act)


def make_activation(name_or_factory: str | ActivationFactory, num_features: int, **options) -> nn.Module:
    """Return the activation for a layer with `num_features` channels (dense or conv)."""
    return get_activation(name_or_factory)(num_features, **options)
