"""Quantile activation (QAct, Challa et al., arXiv 2405.11573): y = F(z), the grounded CDF of z in its context.

table      the context sample and the per-channel tables of the grounded CDF and its KDE density
lookup     the kernels that read the tables (forward and backward)
module     the QAct layer and the model-wide switches set_context / set_context_sync
reference  the grounded CDF in readable float64, the definition the tables approximate
native     the opt-in compiled CPU kernels (QACT_KERNEL=native, set_kernel); wrapped: training's
           BatchNorm -> QAct -> BatchNorm on them

docs/qact-layer.md describes the design and its measured cost.
"""

from .lookup import table_lookup
from .module import CONTEXTS, OUTPUTS, QAct, set_context, set_context_sync
from .native import set_kernel
from .table import (BANDWIDTH_RULES, DEFAULT_CONTEXT_SIZE, DEFAULT_TABLE_SIZE, REFINE, Table, grounded_table,
                    sample_context)

__all__ = ["BANDWIDTH_RULES", "CONTEXTS", "DEFAULT_CONTEXT_SIZE", "DEFAULT_TABLE_SIZE", "OUTPUTS", "QAct", "REFINE",
           "Table", "grounded_table", "has_qact", "sample_context", "set_context", "set_context_sync", "set_kernel", "table_lookup"]


def has_qact(model) -> bool:
    """Whether `model` holds a QAct layer (its outputs then depend on the batch: the context)."""
    return any(isinstance(m, QAct) for m in model.modules())
