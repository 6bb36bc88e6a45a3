"""Neural-network pieces: the quantile activation, its losses and heads, test-time adaptation, and the
global-batch synchronisation of BatchNorm and QAct context for data-parallel training."""

from .activations import ACTIVATIONS, make_activation
from .adapt import adapted
from .heads import LinearHead, QuantileHead
from .losses import watershed_loss
from .qact import CONTEXTS, QAct, set_context, set_context_sync
from .sync import SyncBatchNorm1d, SyncBatchNorm2d, SyncBatchNorm3d, convert_sync_batchnorm

__all__ = ["ACTIVATIONS", "CONTEXTS", "LinearHead", "QAct", "QuantileHead", "SyncBatchNorm1d", "SyncBatchNorm2d",
           "SyncBatchNorm3d", "adapted", "convert_sync_batchnorm", "make_activation", "set_context",
           "set_context_sync", "watershed_loss"]
