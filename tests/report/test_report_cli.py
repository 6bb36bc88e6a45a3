"""The reports through the command line: `qact compare ... --html --latex --plot` on the ReLU/QAct pair
and `qact eval ... --html --plot` on a fresh evaluation, down to the files (and, where chromium is
installed, the CLI's report in a real browser)."""

import html
import json
import re

from fixtures_browser import needs_chromium, run_chromium

PNG = b"\x89PNG\r\n\x1a\n"


def _png_size(path):
    from PIL import Image

    data = path.read_bytes()
    assert data[:8] == PNG, f"{path} is not a PNG"
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        return img.size


def _heat_cells(text):
    return re.findall(r'<td class="hm" data-model="([^"]+)" data-metric="(acc|ece)" data-corruption="([^"]+)" '
                      r'data-severity="(\d+)"', text)


def _compare_report(cli, relu_qact_results, tmp_path):
    items = []
    for r in relu_qact_results["results"]:
        items.append(tmp_path / f"{r['model']['name']}.json")
        items[-1].write_text(json.dumps(r))
    code, out, err = cli("compare", *items, "--html", tmp_path / "r.html", "--latex", tmp_path / "t.tex",
                         "--plot", tmp_path / "c.png")
    assert code == 0, err
    return err


def test_compare_writes_the_html_report_the_latex_table_and_both_plots(cli, relu_qact_results, tmp_path):
    err = _compare_report(cli, relu_qact_results, tmp_path)
    assert "r.html" in err and "t.tex" in err and "c.reliability.png" in err
    text = (tmp_path / "r.html").read_text(encoding="utf-8")
    results = relu_qact_results["results"]
    names = [r["model"]["name"] for r in results]
    for name in names:
        assert f'data-model="{name}"' in text
    cells = _heat_cells(text)
    n = sum(len(r["cells"]) for r in results)
    assert len(cells) == 2 * n  # accuracy and ECE, one cell per (model, corruption, severity)
    assert sorted({html.unescape(m) for m, *_ in cells}) == sorted(names)
    tex = (tmp_path / "t.tex").read_text(encoding="utf-8")
    assert r"\toprule" in tex and r"\bottomrule" in tex and all(name in tex for name in names)
    w, h = _png_size(tmp_path / "c.png")
    rw, rh = _png_size(tmp_path / "c.reliability.png")
    assert w > 600 and rh > h  # two models, one row of diagrams each, taller than the curves


def test_eval_writes_the_html_report_and_both_plots(cli, tmp_path):
    from fixtures_corrupted import random_checkpoint

    ckpt = random_checkpoint(tmp_path / "m.pt", 10, 32)
    code, out, err = cli("eval", ckpt, "--dataset", "gen:digits", "--corruptions", "fog,gaussian_noise",
                         "--severities", "0,1,5", "--limit", "20", "--device", "cpu", "--html", tmp_path / "e.html",
                         "--plot", tmp_path / "e.png")
    assert code == 0, err
    text = (tmp_path / "e.html").read_text(encoding="utf-8")
    assert len(_heat_cells(text)) == 2 * (1 + 2 * 2)  # clean + 2 corruptions x 2 severities, accuracy and ECE
    assert text.count('<svg class="rel"') == 3  # one reliability diagram per severity
    _png_size(tmp_path / "e.png")
    _png_size(tmp_path / "e.reliability.png")


@needs_chromium
def test_the_cli_report_runs_in_a_headless_browser(cli, relu_qact_results, tmp_path):
    _compare_report(cli, relu_qact_results, tmp_path)
    run = run_chromium("--window-size=1280,2000", "--dump-dom", f"{(tmp_path / 'r.html').as_uri()}#selftest")
    assert run.returncode == 0, run.stderr[-2000:]
    assert not [line for line in run.stderr.splitlines() if ":CONSOLE" in line]
    found = re.search(r'<pre id="selftest">(.*?)</pre>', run.stdout, re.S)
    assert found, "the page script did not run"
    got = json.loads(html.unescape(found.group(1)))
    n = sum(len(r["cells"]) for r in relu_qact_results["results"])
    assert got["errors"] == [] and got["models"] == [r["model"]["name"] for r in relu_qact_results["results"]]
    assert got["heat_cells"] == 2 * n and got["after"]["heat_cells"] == n
