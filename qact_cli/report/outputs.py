"""The report outputs of `qact eval` and `qact compare` (`--html`, `--latex`, `--plot`): their paths
checked before any work, then written from the result documents (docs/report.md)."""

from __future__ import annotations

from typing import Mapping

from ..errors import UsageError
from ..utils import check_output_file


def check_report_outputs(html: str | None = None, latex: str | None = None, plot: str | None = None) -> None:
    """Before any evaluation or training: each path a writable file (`--plot`: the curves and the
    reliability diagrams beside them, in a known image format); none of them is stdout."""
    from ..compare.plot import plot_paths

    for flag, path, what in (("--html", html, "an .html file"), ("--latex", latex, "a .tex file"),
                             ("--plot", plot, "an image file (.png, .pdf or .svg)")):
        if path == "-":
            raise UsageError(f"{flag} needs a file path ({what}), not -")
    check_output_file(html, "--html")
    check_output_file(latex, "--latex")
    if plot:
        check_output_file(plot, "--plot")  # a folder is exit 3 whatever its name, before its extension is read
        for p in plot_paths(plot):
            check_output_file(p, "--plot")


def write_reports(documents: Mapping | list[Mapping], cmp=None, html: str | None = None, latex: str | None = None,
                  plot: str | None = None) -> list[str]:
    """Write the asked-for reports of `documents`; `cmp` (the comparison shown, with its `--metrics`)
    draws the plots, else the documents' own. Returns the files written."""
    written = []
    if html:
        from .html import write_html

        written.append(str(write_html(documents, html)))
    if latex:
        from .latex import write_latex

        written.append(str(write_latex(documents, latex)))
    if plot:
        from ..compare.documents import comparison_of
        from ..compare.plot import write_plots

        written += [str(p) for p in write_plots(cmp if cmp is not None else comparison_of(documents), plot)]
    return written
