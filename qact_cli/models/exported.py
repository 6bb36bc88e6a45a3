"""`torch.export` programs at test time.

The module of an exported program (`torch.export.load(path).module()`) refuses `.eval()` and
`.train()`: its graph was traced in the mode the model was in when it was exported, and every
BatchNorm and Dropout in it carries that mode as an explicit `training`/`train` argument of its
aten op. A program exported in training mode would normalise each batch by its own statistics and
drop activations at random, so it is refused with one line instead of being scored as if it were
the model; one exported after `model.eval()` already runs as at test time.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import InputError

_MODE_ARGS = ("training", "train")  # the schema names of the mode argument of batch_norm, dropout, rrelu, rnn ops


def training_ops(module: nn.Module) -> list[str]:
    """The aten ops of an exported graph that run in training mode (`training=True` / `train=True`), in graph order."""
    graph = getattr(module, "graph", None)
    found: list[str] = []
    for node in getattr(graph, "nodes", ()):
        schema = getattr(node.target, "_schema", None) if node.op == "call_function" else None
        if schema is None:
            continue
        for i, arg in enumerate(schema.arguments):
            if arg.name in _MODE_ARGS:
                value = node.kwargs.get(arg.name, node.args[i] if i < len(node.args) else arg.default_value)
                if value is True:
                    found.append(schema.name.split("::")[-1])  # aten::batch_norm -> batch_norm
    return found


def check_exported_mode(module: nn.Module, where: str) -> None:
    """Refuse (exit 3) an exported program traced in training mode; `where` names the archive or model."""
    ops = training_ops(module)
    if ops:
        names = ", ".join(dict.fromkeys(ops))
        raise InputError(f"{where} was exported in training mode ({names} with training=True: batch statistics, "
                         "random dropout); export it after model.eval() so that it runs as at test time")


def eval_mode(model: nn.Module, where: str = "model") -> nn.Module:
    """`model.eval()`, or for a `torch.export` module (which cannot switch mode) the check that it was
    exported in eval mode."""
    try:
        return model.eval()
    except NotImplementedError:
        if not isinstance(model, torch.fx.GraphModule):
            raise
        check_exported_mode(model, where)
        return model
