"""The report outputs of `qact eval` and `qact compare` (docs/report.md), declared once for both."""

from __future__ import annotations

from dataclasses import dataclass

from .schema import option


@dataclass
class ReportOutputs:
    """A self-contained HTML page, a LaTeX table and plots of the results (every path checked before any work)."""

    html: str | None = option("--html", None, "Write a self-contained HTML report (tables, heat maps, curves, "
                              "reliability diagrams; opens offline) to FILE.")
    latex: str | None = option("--latex", None, "Write a booktabs table (models x severities, accuracy and ECE) as a "
                               "LaTeX document to FILE.")
    plot: str | None = option("--plot", None, "Write accuracy/ECE-vs-severity curves to FILE (.png, .pdf or .svg) "
                              "and reliability diagrams to FILE.reliability.EXT (the folder is created).")


EVAL_REPORTS = ("html", "plot")  # eval writes one document: no LaTeX comparison table
COMPARE_REPORTS = ("html", "latex", "plot")
