"""Opt-in C kernels for the heaviest corruption passes (`QACT_KERNEL=native`; the switch, build cache and loader
are qact_cli/native.py). One C source and one Python wrapper module per family, beside each other. A wrapper
returns None where its kernel does not apply (not selected, not on the CPU, no compiler), and the corruption
then runs its default torch path; where it applies it gives the default path's bytes (the table-driven and
integer passes) or stays within the same +-1 grey level of the reference (float filters, whose sums run in
another order)."""

from __future__ import annotations

from torch import Tensor

from ... import native


def selected(*tensors: Tensor) -> bool:
    """Whether the native kernels are selected and these tensors are where they run (the CPU)."""
    return native.kernel() == "native" and all(t.device.type == "cpu" for t in tensors)
