"""`write_latex`: a booktabs table (models x severities, accuracy and ECE, best per column in bold) that compiles."""

import re
import shutil
import subprocess

import pytest


def _rows(tex):
    return {line.split(" & ")[0]: line.rstrip(" \\").split(" & ")[1:] for line in tex.splitlines()
            if line.startswith("lenet-")}


def test_latex_table_content(relu_qact_results, tmp_path):
    from qact_cli.report.latex import write_latex

    tex = write_latex(relu_qact_results, tmp_path / "t" / "table.tex").read_text()
    for cmd in (r"\documentclass{article}", r"\usepackage{booktabs}", r"\toprule", r"\midrule", r"\bottomrule",
                r"\end{document}", r"\caption{", r"\multicolumn{2}{c}{clean}", r"\multicolumn{2}{c}{sev.~5}"):
        assert cmd in tex
    assert re.search(r"^% protocol: gen:digits, severities 0,1,2,3,4,5, batch 256, limit 40, seed 0", tex, re.M)
    assert tex.index("% protocol:") < tex.index(r"\caption{")
    rows = _rows(tex)
    assert set(rows) == {"lenet-relu", "lenet-qact"}
    results = {r["model"]["name"]: r for r in relu_qact_results["results"]}
    for name, cells in rows.items():
        assert len(cells) == 2 * 7  # acc and ECE for severities 0-5 and the mean
        by = results[name]["summary"]["by_severity"]
        shown = [c.replace(r"\textbf{", "").rstrip("}") for c in cells]
        for s in range(6):
            assert shown[2 * s] == f"{100 * by[str(s)]['acc_mean']:.1f}"
            assert shown[2 * s + 1] == f"{100 * by[str(s)]['ece_mean']:.1f}"
        assert shown[12] == f"{100 * results[name]['summary']['mean_corruption_acc']:.1f}"
    # per column, the best value is bold (higher accuracy, lower ECE); ties are all bold
    for col in range(14):
        vals = {n: float(c[col].replace(r"\textbf{", "").rstrip("}")) for n, c in rows.items()}
        best = (max if col % 2 == 0 else min)(vals.values())
        assert {n for n, c in rows.items() if c[col].startswith(r"\textbf{")} == {n for n, v in vals.items() if v == best}


def test_latex_escapes_names():
    from qact_cli.report.latex import tex_escape

    assert tex_escape("a_b & 50% #1 {x} ~ ^ \\ †") == r"a\_b \& 50\% \#1 \{x\} \textasciitilde{} \textasciicircum{} \textbackslash{} $^\dagger$"


def test_latex_compiles(relu_qact_results, tmp_path):
    if shutil.which("pdflatex") is None:
        pytest.skip("no pdflatex on PATH (apt-get install texlive-latex-base texlive-latex-recommended)")
    from qact_cli.report.latex import write_latex

    write_latex(relu_qact_results, tmp_path / "table.tex")
    run = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "table.tex"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-2000:]
    assert (tmp_path / "table.pdf").read_bytes().startswith(b"%PDF")
    assert "Overfull" not in run.stdout  # the table fits the page (resized to the text width)
