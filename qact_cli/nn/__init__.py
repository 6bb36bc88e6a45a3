"""Neural-network pieces: the quantile activation, its losses and heads, test-time adaptation."""

from .activations import ACTIVATIONS, make_activation
from .adapt import adapted
from .heads import LinearHead, QuantileHead
from .losses import watershed_loss
from .qact import CONTEXTS, QAct, set_context

__all__ = ["ACTIVATIONS", "CONTEXTS", "LinearHead", "QAct", "QuantileHead", "adapted", "make_activation",
           "set_context", "watershed_loss"]
