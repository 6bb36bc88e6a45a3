"""Activation factory: models ask for an activation by name and get a module for C channels.

The models never import QAct directly, so every architecture takes `act="relu"|"prelu"|"selu"|"qact"`
through this one function.
"""

from torch import nn

ACTIVATIONS = ("relu", "prelu", "selu", "qact")


def make_activation(name: str, num_features: int, **qact_kwargs) -> nn.Module:
    """Return the activation `name` for a layer with `num_features` channels (dense or conv)."""
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "prelu":
        return nn.PReLU(num_features)
    if name == "selu":
        return nn.SELU(inplace=True)
    if name == "qact":
        from .qact import QAct

        # in place like ReLU(inplace=True): saves one activation-sized allocation per layer in eval
        return QAct(num_features, **{"inplace": True, **qact_kwargs})
    from ..suggest import unknown

    raise ValueError(unknown("activation", name, ACTIVATIONS))
