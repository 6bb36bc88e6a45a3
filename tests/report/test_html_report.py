"""The self-contained HTML report: its content, and its live DOM in a real headless browser (Debian's
chromium; skipped with the reason where none is installed, always run by .ci/run)."""

import copy
import html
import json
import re
import time

import pytest

from fixtures_browser import needs_chromium, run_chromium

MODELS = ("lenet-relu", "lenet-qact")


@pytest.fixture(scope="module")
def report(relu_qact_results, tmp_path_factory):
    from qact_cli.report.html import write_html

    path = tmp_path_factory.mktemp("report") / "report.html"
    assert write_html(relu_qact_results, path) == path
    return path


def _cells(doc):
    return [(r["model"]["name"], c["corruption"], c["severity"]) for r in doc["results"] for c in r["cells"]]


def test_report_holds_every_section_and_no_network_reference(report, relu_qact_results):
    text = report.read_text()
    for what in ("Summary", "Severity curves", "Heat maps", "Reliability diagrams", "Models, data and versions"):
        assert what in text
    r = relu_qact_results["results"][0]
    assert r["protocol"]["data"]["fingerprint"] in text and f"torch</th><td>{r['environment']['torch']}" in text
    assert "<th>head</th><td>quantile" in text and "<th>dataset</th><td>gen:digits</td>" in text
    assert f"<th>mean</th><td>{', '.join(map(str, r['model']['mean']))}</td>" in text
    # one file that opens offline: no external script, style, image, font or frame
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)
    assert not re.search(r"@import|url\((?!#)|<link\b|<iframe\b", text)  # url(#id): a pattern inside the page
    # one heat-map cell per (model, corruption, severity) for each of accuracy and ECE, with its value on hover
    cells = re.findall(r'<td class="hm" data-model="([^"]+)" data-metric="(acc|ece)" data-corruption="([^"]+)" '
                       r'data-severity="(\d+)"[^>]*title="([^"]+)"', text)
    for metric in ("acc", "ece"):
        got = sorted((html.unescape(m), c, int(s)) for m, k, c, s, _ in cells if k == metric)
        assert got == sorted(_cells(relu_qact_results))
    fog3 = next(c for c in relu_qact_results["results"][1]["cells"] if c["corruption"] == "fog" and c["severity"] == 3)
    assert f"lenet-qact · fog severity 3: accuracy {fog3['acc']:.4f}" in text
    assert text.count('<svg class="rel"') == 2 * 6  # every severity of both models


def test_names_are_escaped_and_results_without_bins_say_why(relu_qact_results, tmp_path):
    from qact_cli.report.html import write_html

    r1, r2 = copy.deepcopy(relu_qact_results["results"])
    r1["model"]["name"] = "<b>relu</b>&co"
    for c in r2["cells"]:
        del c["ece_bins"]
    text = write_html([r1, r2], tmp_path / "sub" / "r.html").read_text()
    assert "<b>relu</b>" not in text and "&lt;b&gt;relu&lt;/b&gt;&amp;co" in text
    assert "no reliability bins in this result" in text
    assert text.count('<svg class="rel"') == 6  # only the model with bins has diagrams
    assert text.count('class="hm"') == 4 * 11  # heat maps need no bins


@needs_chromium
def test_report_in_a_headless_browser(report, relu_qact_results, tmp_path):
    t0 = time.time()
    run = run_chromium("--window-size=1280,2000", "--dump-dom", f"{report.as_uri()}#selftest")
    assert run.returncode == 0, run.stderr[-2000:]
    console = [line for line in run.stderr.splitlines() if ":CONSOLE" in line]
    assert not console, console  # no script error, no console output at all
    found = re.search(r'<pre id="selftest">(.*?)</pre>', run.stdout, re.S)
    assert found, "the page script did not run (no #selftest result in the live DOM)"
    got = json.loads(html.unescape(found.group(1)))
    assert got["errors"] == []
    assert got["models"] == list(MODELS)
    assert sorted(got["summary_rows"]) == sorted(MODELS * 2)  # every model in both summary tables
    n = len(_cells(relu_qact_results))
    assert got["heat_cells"] == 2 * n and got["curves"] == 2 * 2 and got["reliability"] == 12
    # the first toggle hides everything of lenet-relu, and showing it again restores it
    assert got["toggled"] == "lenet-relu"
    assert got["after"] == {"heat_cells": n, "curves": 2, "rows_visible": 2, "reliability": 6}
    assert got["restored"] == 2 * n
    # sorting by the clean column, ascending then descending
    asc, desc = got["sorted"]["ascending"], got["sorted"]["descending"]
    assert [float(v) for v in asc] == sorted(float(v) for v in asc) and desc == asc[::-1]

    shot = tmp_path / "shot.png"
    run = run_chromium("--window-size=1280,1600", "--hide-scrollbars", f"--screenshot={shot}", report.as_uri())
    assert run.returncode == 0 and shot.is_file(), run.stderr[-2000:]
    from PIL import Image

    img = Image.open(shot).convert("RGB")
    assert img.size == (1280, 1600)
    colours = img.getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 500, "the screenshot is (nearly) blank"
    print(f"browser checks took {time.time() - t0:.1f} s")


def test_a_compare_document_keeps_its_metrics_columns_and_title(relu_qact_results, tmp_path):
    from qact_cli.compare.documents import comparison_of
    from qact_cli.compare.table import Entry, build, document
    from qact_cli.report.html import render_html

    rs = relu_qact_results["results"]
    doc = document(build([Entry("relu", rs[0]), Entry("dino", None, skipped="skipped: no weights"), Entry("qact", rs[1])],
                         ["acc", "ece", "nll"]))
    doc["comparison"]["experiment"] = {"title": "my experiment"}
    cmp = comparison_of(doc)
    assert cmp.metrics == ["acc", "ece", "nll"] and [e.name for e in cmp.entries] == ["relu", "dino", "qact"]
    text = render_html(doc)
    assert "<title>my experiment</title>" in text and "NLL (lower is better" in text
    assert "dino: skipped: no weights" in text
