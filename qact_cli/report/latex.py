"""`--latex FILE`: a booktabs table of result documents, models x severities, accuracy and ECE in
percent (as robustness and calibration papers print them), the best value per column in bold at the
shown precision, the protocol as comments above the caption. The file is a whole document that
compiles as is (article, booktabs, graphicx); the table between its `begin{table}` and `end{table}`
can be pasted into a paper.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable, Mapping

from .. import __version__
from ..compare.documents import comparison_of
from ..compare.table import MEAN_ROW, MIXED_MARK, Comparison, column_label, notes
from ..utils import write_text_atomic

METRIC_KEYS = ("acc", "ece")
DECIMALS = 1  # percent with one decimal
_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
            "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", MIXED_MARK: r"$^\dagger$"}


def tex_escape(text: str) -> str:
    """`text` as LaTeX source that prints it (specials escaped, anything non-ASCII but the dagger dropped
    to '?' so that pdflatex's default input encoding never fails)."""
    out = re.sub("|".join(re.escape(k) for k in _SPECIAL), lambda m: _SPECIAL[m.group(0)], str(text))
    return "".join(c if ord(c) < 128 else "?" for c in out)


def _comment(text: str) -> str:
    return "% " + " ".join(str(text).split())


def _best(cmp: Comparison, row: str, key: str) -> set[int]:
    """Entries holding the best value of the column at the shown precision (ties all bold)."""
    shown = {i: round(100 * cmp.values[row, i][key], DECIMALS) for i in cmp.evaluated
             if (row, i) in cmp.values and cmp.values[row, i].get(key) is not None}
    if len(shown) < 2:
        return set()
    top = (max if key == "acc" else min)(shown.values())
    return {i for i, v in shown.items() if v == top}


def render_latex(documents: Mapping | Iterable[Mapping]) -> str:
    """The LaTeX document of `documents` (one or several, as `eval` and `compare` produce them)."""
    cmp = comparison_of(documents, metrics=METRIC_KEYS)
    rows = cmp.rows
    heads = ["clean" if r == "0" else ("mean" if r == MEAN_ROW else f"sev.~{r}") for r in rows]
    ncols = 2 * len(rows)
    best = {(r, k): _best(cmp, r, k) for r in rows for k in METRIC_KEYS}
    body = []
    for i in cmp.evaluated:
        cells = [tex_escape(column_label(cmp.entries[i]))]
        for r in rows:
            for k in METRIC_KEYS:
                v = cmp.values.get((r, i), {}).get(k)
                num = "--" if v is None else f"{100 * v:.{DECIMALS}f}"
                cells.append(rf"\textbf{{{num}}}" if i in best[r, k] else num)
        body.append(" & ".join(cells) + r" \\")
    ref = cmp.entries[cmp.reference].result if cmp.reference is not None else {}
    n_corr = len((ref.get("protocol") or {}).get("corruptions") or [])
    over = f", mean over {n_corr} corruptions" if n_corr else ""
    caption = (f"Accuracy (\\%, higher is better) and top-label ECE (\\%, 15 equal-width bins, lower is better) "
               f"on {tex_escape(ref.get('dataset', '?'))} per severity{over}; clean: the uncorrupted test set; "
               "mean: over all corrupted cells. Best per column in bold.")
    skipped = [_comment(f"not evaluated: {e.name}: {e.skipped}") for e in cmp.entries if e.result is None]
    lines = [
        _comment(f"qact {__version__}: robustness table (booktabs); the table environment can be pasted into a paper"),
        r"\documentclass{article}",
        r"\usepackage[margin=2cm]{geometry}",
        r"\usepackage{booktabs}",
        r"\usepackage{graphicx}",
        r"\begin{document}",
        r"\begin{table}[t]",
        r"\centering",
        # the protocol and the per-model notes (not the terminal table's legend: no differences are shown here)
        *[_comment(line) for line in notes(cmp) if line and not line.startswith("mean corruption:")],
        *skipped,
        rf"\caption{{{caption}}}",
        r"\label{tab:qact-robustness}",
        r"\resizebox{\textwidth}{!}{%",
        rf"\begin{{tabular}}{{l*{{{ncols}}}{{r}}}}",
        r"\toprule",
        " & " + " & ".join(rf"\multicolumn{{2}}{{c}}{{{h}}}" for h in heads) + r" \\",
        " ".join(rf"\cmidrule(lr){{{2 + 2 * k}-{3 + 2 * k}}}" for k in range(len(rows))),
        "model & " + " & ".join(["acc & ECE"] * len(rows)) + r" \\",
        r"\midrule",
        *body,
        r"\bottomrule",
        r"\end{tabular}}",
        r"\end{table}",
        r"\end{document}",
    ]
    return "\n".join(lines) + "\n"


def write_latex(documents: Mapping | Iterable[Mapping], path: str | Path) -> Path:
    """`compare --latex FILE`: write `render_latex(documents)` to `path` (temp name, then renamed)."""
    path = Path(path)
    write_text_atomic(path, render_latex(documents))
    return path
