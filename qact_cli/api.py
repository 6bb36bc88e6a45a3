"""The Python entry points: `evaluate(model, dataset=...)`, the same evaluation as `qact eval`
(one orchestrator, one options object), and `load_model(...)`.

    import qact_cli
    result = qact_cli.evaluate(my_module, dataset="gen:digits", num_classes=10, mean=..., std=...)
    result["summary"]["mean_corruption_acc"]
"""

from __future__ import annotations

from .eval.options import EvalOptions
from .eval.run import Hooks, plan, run_jobs


def evaluate(model, dataset: str, corruptions: str | list = "common", severities: str | list | None = None,
             batch_size: int = 256, context: str = "batch", adapt: str = "none", limit: int | None = None,
             seed: int = 0, device: str = "auto", data_root: str | None = None, download: bool = False,
             workers: int | None = None, weights: str | None = None, model_kwargs: dict | str | None = None,
             num_classes: int | None = None, input_size: int | list | str | None = None, resize: str | None = None,
             mean: list | str | None = None, std: list | str | None = None, class_names: list | str | None = None,
             trust_model_file: bool = False, name: str | None = None, on_cell=None) -> dict:
    """Evaluate one model; returns the `qact.eval/1` result document.

    `model`: an `nn.Module` (give `num_classes`, and `mean`/`std`/`input_size`/`class_names` when
    they are not ImageNet's / any size / unknown), a qact checkpoint path, a spec string
    (`torchvision:resnet18`, `timm:NAME`, `pkg.module:callable`), a model card path, or a card as a
    dict (`{"model": "torchvision:resnet18", "weights": "w.safetensors", "num_classes": 10}`).
    `severities=None` is the dataset's default (0-5 on a corrupted set, 0 on a clean one), as on the
    command line. The document equals `qact eval MODEL --json`'s except `elapsed_s` and `environment`.
    """
    opts = EvalOptions.from_values(dict(dataset=dataset, data_root=data_root, download=download,
                                        corruptions=corruptions, severities=severities, batch_size=batch_size,
                                        context=context, adapt=adapt, limit=limit, seed=seed, device=device,
                                        workers=workers), "evaluate()")
    (job,), backbone = plan([model], weights=weights, model_kwargs=model_kwargs, num_classes=num_classes,
                            input_size=input_size, resize=resize, mean=mean, std=std, class_names=class_names,
                            trust_model_file=trust_model_file)
    job.name = name
    return run_jobs([job], opts, Hooks(on_cell=on_cell), backbone_weights=backbone)[0]


def load_model(model, device: str = "cpu", download: bool = False, **card):
    """MODEL (a checkpoint, a spec, a card path or dict, an nn.Module) -> (model in eval mode, meta);
    `card` holds a model card's keys (weights, num_classes, input_size, mean, std, class_names, ...)."""
    from .models.external import load_model as resolve

    return resolve(model, device=device, download=download, **card)
