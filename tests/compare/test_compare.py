"""`qact compare` on hand-made result JSONs: table content, highlighting, Markdown, JSON, plot, bad input."""

import json
import re

import pytest

from fixtures_results import make_result


@pytest.fixture
def results(tmp_path):
    """relu: better clean accuracy and ECE; qact: better under corruption."""
    paths = {}
    for name, doc in {"relu": make_result("relu", 0.95, 0.08), "qact": make_result("qact", 0.93, 0.04, ece0=0.05),
                      "limited": make_result("limited", 0.9, 0.05, limit=50)}.items():
        paths[name] = tmp_path / f"{name}.json"
        paths[name].write_text(json.dumps(doc))
    return paths


def test_grid_values_best_and_deltas():
    from qact_cli.compare.table import MEAN_ROW, Entry, build

    cmp = build([Entry("relu", make_result("relu", 0.95, 0.08)), Entry("qact", make_result("qact", 0.93, 0.04, ece0=0.05)),
                 Entry("dino", None, skipped="skipped: no weights at /x; see README")])
    assert cmp.rows == ["0", "1", "2", "3", "4", "5", MEAN_ROW]
    v = cmp.values["1", 1]
    assert v["acc"] == pytest.approx(0.885) and v["acc_std"] == pytest.approx(0.005)  # mean/std over fog and snow
    assert v["acc_delta"] == pytest.approx(0.885 - 0.865) and cmp.values["1", 0]["acc_delta"] is None
    assert cmp.best["0", "acc"] == {0} and cmp.best["5", "acc"] == {1}
    assert cmp.best["3", "ece"] == {0}  # lower ECE is better
    mean = cmp.values[MEAN_ROW, 1]
    assert mean["acc"] == pytest.approx(0.93 - 0.04 * 3 - 0.005)  # mean over all corrupted cells
    assert mean["ece"] == pytest.approx(0.05 + 0.03 + 0.002)
    assert ("0", 2) not in cmp.values  # the skipped model has no values


def test_ties_are_all_highlighted_and_one_model_is_not():
    from qact_cli.compare.table import Entry, build

    a = make_result("a", 0.9, 0.05)
    cmp = build([Entry("a", a), Entry("b", json.loads(json.dumps(a)))])
    assert cmp.best["2", "acc"] == {0, 1}
    assert build([Entry("a", a)]).best["2", "acc"] == set()


def test_cli_table_markdown_json_plot(cli, results, tmp_path):
    from PIL import Image

    from qact_cli.compare.plot import plot_size
    from qact_cli.eval.gates import load_result

    md, js, png = tmp_path / "out.md", tmp_path / "out.json", tmp_path / "new" / "folder" / "curves.png"
    code, out, err = cli("compare", results["relu"], results["qact"], "--markdown", md, "--json", js, "--plot", png)
    assert code == 0, err
    # the table: both models, every severity row, the mean row, differences to the first model
    assert "relu" in out and "qact" in out and "mean corruption" in out and "0 (clean)" in out
    assert "0.9500" in out and "0.8850 (+0.0200)" in out and "0.0500 (+0.0300)" in out
    # Markdown: a GitHub table, best per row in bold
    text = md.read_text()
    lines = text.splitlines()
    assert lines[2].startswith("| severity | relu acc | relu ECE | qact acc | qact ECE |")
    assert re.match(r"^\|:--\|(--:\|){4}$", lines[3])
    row0 = next(line for line in lines if line.startswith("| 0 (clean)"))
    assert "**0.9500**" in row0 and "**0.0200**" in row0 and "0.9300 (-0.0200)" in row0
    row5 = next(line for line in lines if line.startswith("| 5 "))
    assert "**0.7250** (+0.1800)" in row5 and "**0.0720**" in row5
    assert "| **mean corruption** |" in text and "difference to relu" in text
    # JSON: a multi-result document that the eval gates read back, with the grid under `comparison`
    doc = json.loads(js.read_text())
    assert doc["schema"] == "qact.eval-multi/1" and [r["model"]["name"] for r in doc["results"]] == ["relu", "qact"]
    assert len(load_result(js)) == 2
    comp = doc["comparison"]
    assert comp["schema"] == "qact.compare/1" and comp["reference"] == "relu"
    assert [c["name"] for c in comp["columns"]] == ["relu", "qact"]
    mean = comp["rows"][-1]
    assert mean["row"] == "mean corruption" and mean["best"]["acc"] == ["qact"]
    assert mean["models"]["qact"]["acc_delta"] == pytest.approx(0.1)
    # plot: a PNG of the documented size, its folder created
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size == plot_size() == (1200, 480)


def test_markdown_to_stdout_moves_the_table_to_stderr(cli, results):
    code, out, err = cli("compare", results["relu"], results["qact"], "--markdown", "-")
    assert code == 0
    assert out.startswith("**gen:digits") and "┃" not in out
    assert "┃" in err or "severity" in err


def test_protocol_mismatch_is_refused_unless_allowed(cli, results):
    code, _, err = cli("compare", results["relu"], results["limited"])
    assert code == 3
    assert "limited.json" in err and "limit None vs 50" in err and "--allow-mixed" in err
    code, out, _ = cli("compare", results["relu"], results["limited"], "--allow-mixed")
    assert code == 0 and "limited †" in out and "† limited was evaluated under another protocol: limit None vs 50" in out


def test_multi_and_compare_documents_are_items(cli, results, tmp_path):
    from qact_cli.compare.table import Entry, build, document

    multi = tmp_path / "multi.json"
    multi.write_text(json.dumps({"schema": "qact.eval-multi/1", "results": [make_result("a", 0.9, 0.05),
                                                                           make_result("b", 0.8, 0.02)]}))
    code, out, err = cli("compare", multi, results["relu"])
    assert code == 0, err
    assert all(n in out for n in ("a", "b", "relu"))
    # a compare document read back keeps its columns: declared overrides (not a mismatch) and skipped models
    prev = tmp_path / "prev.json"
    prev.write_text(json.dumps(document(build([
        Entry("x", make_result("x", 0.9, 0.05)),
        Entry("x-bn", make_result("x", 0.9, 0.05, adapt="bn"), declared={"adapt": "bn"}, note="a caveat"),
        Entry("dino", None, skipped="skipped: no weights at /w; see README")]))))
    code, out, err = cli("compare", prev)
    assert code == 0, err
    assert "x-bn: adapt bn; a caveat" in out and "dino: skipped: no weights at /w; see README" in out
    assert cli("compare", prev, results["relu"])[0] == 0  # same protocol as x; x-bn differs only as declared
    code, _, err = cli("compare", prev, results["limited"])
    assert code == 3 and "limited.json" in err


def test_same_names_get_suffixes(cli, results):
    code, out, _ = cli("compare", results["relu"], results["relu"])
    assert code == 0 and "relu#2" in out


def test_piped_output_never_truncates_numbers(cli, tmp_path):
    paths = []
    for k in range(8):
        p = tmp_path / f"model-with-a-long-name-{k}.json"
        p.write_text(json.dumps(make_result(f"model-with-a-long-name-{k}", 0.9 - 0.01 * k, 0.05)))
        paths.append(p)
    code, out, _ = cli("compare", *paths)
    assert code == 0
    assert "…" not in out
    for k in range(8):
        assert f"{0.9 - 0.01 * k:.4f}" in out and f"model-with-a-long-name-{k}" in out


def test_bad_items(cli, results, tmp_path):
    code, _, err = cli("compare", tmp_path / "missing.json")
    assert code == 3 and "missing.json" in err
    broken = tmp_path / "broken.json"
    broken.write_text('{"schema": "qact.eval/1", ')
    code, _, err = cli("compare", results["relu"], broken)
    assert code == 3 and "broken.json" in err and "not valid JSON" in err
    other = tmp_path / "other.json"
    other.write_text('{"schema": "something/2"}')
    code, _, err = cli("compare", other)
    assert code == 3 and "other.json" in err
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    code, _, err = cli("compare", text)
    assert code == 3 and "notes.txt" in err
    fake = tmp_path / "fake.pt"
    fake.write_bytes(b"PK\x03\x04garbage")
    code, _, err = cli("compare", fake, "--dataset", "digits")
    assert code == 3 and "fake.pt" in err
    code, _, err = cli("compare", results["relu"], "--plot", tmp_path)
    assert code == 3 and "folder" in err
    code, _, err = cli("compare", results["relu"], "--json", "-", "--markdown", "-")
    assert code == 2


def test_json_to_stdout_is_pure_json(cli, results):
    code, out, _ = cli("compare", results["relu"], results["qact"], "--json", "-")
    assert code == 0 and json.loads(out)["comparison"]["reference"] == "relu"
