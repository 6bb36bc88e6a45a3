"""The Python entry points: `evaluate(model, dataset=...)`, the same evaluation as `qact eval`
(one orchestrator, one options object), and `load_model(...)`.

    import qact_cli
    result = qact_cli.evaluate(my_module, dataset="gen:digits", num_classes=10, mean=..., std=...)
    result["summary"]["mean_corruption_acc"]
"""

from __future__ import annotations

import inspect
from contextlib import contextmanager

from .errors import UsageError
from .eval.options import EvalOptions
from .eval.run import Hooks, plan, run_jobs
from .options.model import MODEL_FIELDS
from .options.schema import keywords

# evaluate()'s option keywords: the eval options (the CI gates aside) and the single-model options
EVAL_KEYWORDS = tuple(keywords(EvalOptions, leave_out=("dataset", *EvalOptions.GATES)))
KEYWORDS = EVAL_KEYWORDS + MODEL_FIELDS


def evaluate(model, dataset: str, *, name: str | None = None, on_cell=None, **options) -> dict:
    """Evaluate one model; returns the `qact.eval/1` result document.

    `model`: an `nn.Module` (give `mean`/`std`/`input_size`/`class_names` when they are not
    ImageNet's / any size / unknown), a qact checkpoint path, a spec string
    (`torchvision:resnet18`, `timm:NAME`, `pkg.module:callable`), a model card path, or a card as a
    dict (`{"model": "torchvision:resnet18", "weights": "w.safetensors", "num_classes": 10}`).
    `options`: the options of `qact eval` as keywords (`corruptions`, `severities`, `batch_size`,
    `context`, `adapt`, `limit`, `seed`, `device`, `data_root`, `download`, `workers`, and the
    single-model `weights`, `model_kwargs`, `num_classes`, `input_size`, `resize`, `mean`, `std`,
    `class_names`, `outputs`, `channels`, `trust_model_file`), with the same defaults; lists are
    accepted where the command line takes `a,b,c`. `severities=None` is the dataset's default (0-5 on a corrupted set, 0 on a
    clean one), as on the command line. The document equals `qact eval MODEL --json`'s except
    `elapsed_s` and `environment`. Without `num_classes` the count is the dataset's, checked against
    the model's output width on the first batch. An `nn.Module` is returned to the caller as it came:
    each submodule's train/eval mode, and its device when it was on one, are restored afterwards,
    also when the evaluation fails.
    """
    unknown = sorted(set(options) - set(KEYWORDS))
    if unknown:
        raise UsageError(f"evaluate(): unknown keyword {unknown[0]!r}; valid: {', '.join(KEYWORDS)}")
    opts = EvalOptions.from_values({"dataset": dataset, **{k: options[k] for k in EVAL_KEYWORDS if k in options}},
                                   "evaluate()")
    (job,), backbone = plan([model], **{k: options[k] for k in MODEL_FIELDS if k in options})
    job.name = name
    with _kept_as_given(model):
        return run_jobs([job], opts, Hooks(on_cell=on_cell), backbone_weights=backbone)[0]


@contextmanager
def _kept_as_given(model):
    """The caller's module leaves as it came, also on error: each submodule's train/eval mode, and its
    device when all its parameters and buffers were on one (the evaluation moves it to `device`)."""
    import torch

    if not isinstance(model, torch.nn.Module):
        yield
        return
    modes = [(m, m.training) for m in model.modules()]
    devices = {t.device for t in [*model.parameters(), *model.buffers()]}
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training  # as nn.Module.train sets it (an exported program refuses .train())
        if len(devices) == 1:
            model.to(devices.pop())


def _signature() -> inspect.Signature:
    """evaluate()'s signature as help() and IDEs show it: every option keyword with its default."""
    from .options.model import ModelOptions

    params = list(inspect.signature(evaluate).parameters.values())[:-1]
    for schema, names in ((EvalOptions, EVAL_KEYWORDS), (ModelOptions, MODEL_FIELDS)):
        defaults = schema()
        params += [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=getattr(defaults, n)) for n in names]
    return inspect.Signature(params)


evaluate.__signature__ = _signature()


def load_model(model, device: str = "cpu", download: bool = False, **card):
    """MODEL (a checkpoint, a spec, a card path or dict, an nn.Module) -> (model in eval mode, meta);
    `card` holds a model card's keys (weights, num_classes, input_size, mean, std, class_names, ...)."""
    from .models.external import load_model as resolve

    return resolve(model, device=device, download=download, **card)
