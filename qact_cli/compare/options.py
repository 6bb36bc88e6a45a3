"""`qact compare`'s own options (its ITEMs and outputs), each declared once; it also takes the eval
protocol options (qact_cli/eval/options.py) and the single-model flags (qact_cli/options/model.py)."""

from __future__ import annotations

from dataclasses import dataclass

from ..options.schema import argument, option


@dataclass
class CompareOutputs:
    items: list | None = argument("ITEM", "Result JSONs or models (checkpoints, specs, cards: evaluated first).")
    json: str | None = option("--json", None, "Write the combined document (qact.eval-multi/1 with a 'comparison' "
                              "key; - for stdout).")
    markdown: str | None = option("--markdown", None, "Write a GitHub-flavoured table (- for stdout).")
    metrics: str | None = option("--metrics", None, "Metrics to show: acc,ece,ce,nll,brier (ce: Kumar et al.'s "
                                 "marginal calibration error, the paper's). Default: acc,ece.")
    allow_mixed: bool = option("--allow-mixed", False, "Compare results from different protocols (marked †).")
    out_dir: str | None = option("--out-dir", None, "Experiment folder: checkpoints/, results/, "
                                 "compare.{json,md,html,png} (quickstart: ./qact-quickstart).")

    OUTPUTS = ("json", "markdown")  # then the reports (qact_cli/options/report.py), then SHOWN
    SHOWN = ("metrics", "allow_mixed", "out_dir")
