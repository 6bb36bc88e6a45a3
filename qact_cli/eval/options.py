"""The evaluation options, declared once: what `qact eval`, `qact compare` (items, configs,
experiments) and `qact_cli.evaluate()` accept, with one parser for values from the command line,
from YAML and from Python keywords, and one validator (qact_cli/options/schema.py).

`EvalOptions` holds the protocol and run options; `EvalOutputs` what `qact eval` writes and checks.
The single-model flags (`--weights`, `--num-classes`, ...) are qact_cli/options/model.py's.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Mapping

from ..options.run import RunOptions
from ..options.schema import argument, check, check_value as check_field, coerce as schema_coerce, from_values, option


@dataclass
class EvalOptions(RunOptions):
    """Dataset, protocol and run options of one evaluation (defaults: those of `qact eval`).

    `severities=None` is the dataset's default (0-5 on a corrupted set, 0 on a clean one)."""

    dataset: str | None = option("--dataset", None, "digits, cifar10, cifar100, tinyimagenet (clean); cifar10c, "
                                 "cifar100c, tinyimagenetc, imagenetc, mnistc (published -C sets); npy:DIR, folder:DIR "
                                 "(your own arrays / ImageFolder tree); corrupted:DIR (a folder written by qact "
                                 "corrupt: by default the corruptions and severities it holds); gen:NAME (corruptions "
                                 "generated from NAME's test split).")
    corruptions: str = option("--corruptions", "common", "common|extra|all|NAME,NAME...")
    severities: str | None = option("--severities", None, "0-5 or 0,1,3 (0 = clean test split). Default: 0-5, or 0 "
                                    "on a clean dataset.")
    batch_size: int = option("--batch-size", 256, minimum=1)
    context: str = option("--context", "batch", "QAct context: batch (the eval batch) or stored (kept from training).",
                          choices=("batch", "stored"))
    adapt: str = option("--adapt", "none", "none|bn: re-estimate normalisation statistics on each cell first.",
                        choices=("none", "bn"))
    limit: int | None = option("--limit", None, "N evenly spaced images of each cell, in file order (the same for "
                               "every model).", minimum=1)
    tolerance: float = option("--tolerance", 0.01, "Allowed drop in accuracy / rise in ECE per severity.",
                              fraction="an absolute fraction in [0, 1], e.g. 0.01 for one point")
    fail_under: float | None = option("--fail-under", None, "Exit 1 if the mean corruption accuracy is below F.",
                                      fraction="an accuracy fraction in [0, 1], e.g. 0.7")

    # the CI gates of `qact eval` (neither compare nor evaluate() takes them)
    GATES = ("tolerance", "fail_under")
    PROTOCOL = ("dataset", "corruptions", "severities", "batch_size", "context", "adapt", "limit")

    @classmethod
    def from_values(cls, values: Mapping[str, Any], where: str = "the options") -> "EvalOptions":
        """From a mapping (YAML, keywords, CLI parameters); None means the default, unknown keys are exit 2."""
        return from_values(cls, values, where)

    def check(self) -> None:
        check(self)


@dataclass
class EvalOutputs:
    """`qact eval`'s MODELs, its outputs and its CI checks against a baseline."""

    models: list | None = argument("MODEL", "qact checkpoints, specs (torchvision:resnet18, timm:NAME, "
                                   "pkg.module:callable), model cards (.yaml).")
    json_out: str | None = option("--json", None, "Write the result JSON to PATH (- for stdout).")
    per_corruption: bool = option("--per-corruption", False, "Also print every (corruption, severity) cell.")
    baseline: str | None = option("--baseline", None, "Earlier result JSON: exit 1 on a regression.")
    allow_data_change: bool = option("--allow-data-change", False, "--baseline: accept a baseline scored on other "
                                     "data (a new dataset version).")


_FIELDS = {f.name: f for f in fields(EvalOptions)}


def coerce(name: str, value, where: str = "the options"):
    """A YAML / keyword value of the eval option `name` as its type (a usage error naming it otherwise)."""
    return schema_coerce(EvalOptions, name, value, where)


def check_value(name: str, value) -> None:
    """The one validation rule of the eval option `name` (exit 2 with the flag's name)."""
    check_field(_FIELDS[name], value)
