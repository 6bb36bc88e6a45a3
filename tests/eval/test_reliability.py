"""Per-bin ECE data in every cell (`ece_bins`), its pooling, and the reliability diagrams of `--plot`."""

import copy
import json
import warnings

import pytest
import torch

from qact_cli.eval.metrics import ece_bin_sums, ece_from_bins, ece_top_label, pool_bins, reliability_bins


def _probs(n, k=10, seed=0, sharp=3.0):
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(sharp * torch.randn(n, k, generator=g), 1), torch.randint(0, k, (n,), generator=g)


def test_every_cell_ece_is_recomputed_from_its_bins(relu_qact_results):
    cells = [c for r in relu_qact_results["results"] for c in r["cells"]]
    assert len(cells) == 2 * (1 + 2 * 5)
    for c in cells:
        b = c["ece_bins"]
        assert len(b["count"]) == len(b["conf"]) == len(b["acc"]) == 15
        assert sum(b["count"]) == c["n"]
        assert abs(ece_from_bins(b) - c["ece"]) <= 1e-9
        for m, (k, conf, acc) in enumerate(zip(b["count"], b["conf"], b["acc"])):
            if k == 0:
                assert conf is None and acc is None
            else:  # a bin's mean confidence lies in its own interval
                assert m / 15 - 1e-12 <= conf <= (m + 1) / 15 + 1e-12 and 0 <= acc <= 1
        # the bins' accuracy reproduces the cell's accuracy
        assert sum(k * a for k, a in zip(b["count"], b["acc"]) if k) / c["n"] == pytest.approx(c["acc"], abs=1e-12)
    # the JSON round trip keeps them exact
    again = json.loads(json.dumps(relu_qact_results))
    assert again["results"][0]["cells"] == relu_qact_results["results"][0]["cells"]


def test_bin_sums_stream_over_batches_and_match_ece():
    probs, labels = _probs(1000)
    whole = ece_bin_sums(probs, labels)
    parts = ece_bin_sums(probs[:377], labels[:377]) + ece_bin_sums(probs[377:], labels[377:])
    assert torch.allclose(whole, parts, rtol=0, atol=1e-9)
    assert whole[0].sum() == 1000
    assert ece_from_bins(reliability_bins(whole)) == pytest.approx(ece_top_label(probs, labels), abs=1e-12)
    # a bin holds the confidences in (m/15, (m+1)/15]: an edge value goes to the lower bin
    edge = torch.tensor([[2 / 15, 13 / 15]], dtype=torch.float64).flip(1)
    assert reliability_bins(ece_bin_sums(edge, torch.tensor([0])))["count"][12] == 1


def test_pooled_bins_are_the_bins_of_all_samples_together():
    (p1, y1), (p2, y2) = _probs(300, seed=1), _probs(500, seed=2, sharp=6.0)
    a, b = (reliability_bins(ece_bin_sums(p, y)) for p, y in ((p1, y1), (p2, y2)))
    both = reliability_bins(ece_bin_sums(torch.cat([p1, p2]), torch.cat([y1, y2])))
    pooled = pool_bins([a, b])
    assert pooled["count"] == both["count"]
    for key in ("conf", "acc"):
        assert all((x is None and y is None) or x == pytest.approx(y, abs=1e-12) for x, y in zip(pooled[key], both[key]))
    assert ece_from_bins(pooled) == pytest.approx(ece_top_label(torch.cat([p1, p2]), torch.cat([y1, y2])), abs=1e-12)


def _without_bins(doc):
    old = copy.deepcopy(doc)
    for c in old["cells"]:
        del c["ece_bins"]
    return old


def test_results_with_and_without_bins_load(relu_qact_results, tmp_path):
    from qact_cli.eval.gates import load_result

    new, old = tmp_path / "new.json", tmp_path / "old.json"
    new.write_text(json.dumps(relu_qact_results))
    old.write_text(json.dumps(_without_bins(relu_qact_results["results"][0])))
    assert "ece_bins" in load_result(new)[0]["cells"][0]
    assert "ece_bins" not in load_result(old)[0]["cells"][0]


def test_missing_or_damaged_bins_are_named(relu_qact_results):
    from qact_cli.eval.reliability import cell_bins, no_bins_reason, severity_bins

    r = relu_qact_results["results"][0]
    assert no_bins_reason(r) is None
    assert sorted(severity_bins(r)) == [0, 1, 2, 3, 4, 5]
    old = _without_bins(r)
    assert "no reliability bins" in no_bins_reason(old) and "qact eval --json" in no_bins_reason(old)
    assert severity_bins(old) == {}
    bad = copy.deepcopy(r)
    bad["cells"][3]["ece_bins"]["count"][0] += 1  # counts no longer add up to n
    assert cell_bins(bad["cells"][3]) is None and "damaged" in no_bins_reason(bad)


def test_severity_bins_pool_corruptions_or_pick_one(relu_qact_results):
    from qact_cli.errors import UsageError
    from qact_cli.eval.reliability import severity_bins

    r = relu_qact_results["results"][1]
    pooled, fog = severity_bins(r), severity_bins(r, "fog")
    assert sum(pooled[3]["count"]) == 80 and sum(fog[3]["count"]) == 40 and sum(fog[0]["count"]) == 40
    cell = next(c for c in r["cells"] if c["corruption"] == "fog" and c["severity"] == 3)
    assert ece_from_bins(fog[3]) == pytest.approx(cell["ece"], abs=1e-12)
    with pytest.raises(UsageError, match="snow"):
        severity_bins(r, "snow")


@pytest.mark.parametrize("ext", ["png", "pdf", "svg"])
def test_plot_writes_curves_and_reliability_diagrams(relu_qact_results, tmp_path, ext):
    from qact_cli.compare.documents import comparison_of
    from qact_cli.compare.plot import plot_paths, write_plots

    path = tmp_path / f"curves.{ext}"
    written = write_plots(comparison_of(relu_qact_results), path)
    assert written == plot_paths(path) == [path, tmp_path / f"curves.reliability.{ext}"]
    head = {"png": b"\x89PNG", "pdf": b"%PDF", "svg": b"<?xml"}[ext]
    for p in written:
        assert p.read_bytes().startswith(head)
    if ext == "svg":
        svg = written[1].read_text()
        assert "<!-- lenet-relu -->" in svg and "<!-- lenet-qact -->" in svg  # matplotlib keeps each title line
        assert svg.count("<!-- clean, ECE 0.") == 2 and svg.count("<!-- severity 5 (2 corruptions pooled), ECE 0.") == 2


def test_reliability_panels_for_all_severities_and_one_corruption(relu_qact_results, tmp_path):
    from qact_cli.compare.documents import comparison_of
    from qact_cli.compare.reliability import plot_reliability

    svg = plot_reliability(comparison_of(relu_qact_results), tmp_path / "r.svg", severities="all", corruption="fog").read_text()
    for s in range(1, 6):
        assert svg.count(f"<!-- severity {s} (fog), ECE 0.") == 2  # both models


def test_a_result_without_bins_still_plots_and_says_why(relu_qact_results, tmp_path):
    from qact_cli.compare.documents import comparison_of
    from qact_cli.compare.plot import write_plots

    docs = [relu_qact_results["results"][0], _without_bins(relu_qact_results["results"][1])]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        curves, rel = write_plots(comparison_of(docs), tmp_path / "p.svg")
    assert any("lenet-qact: no reliability bins" in str(w.message) for w in caught)
    assert "lenet-qact" in curves.read_text()  # the curves are drawn for both models
    text = rel.read_text()
    assert "no reliability bins" in text and "<!-- lenet-qact -->" in text
    assert text.count(", ECE 0.") == 2  # lenet-relu's clean and severity 5 panels only


def test_plot_paths_refuse_an_unknown_format(tmp_path):
    from qact_cli.compare.plot import plot_paths
    from qact_cli.errors import UsageError

    with pytest.raises(UsageError, match=r"\.png, \.pdf or \.svg"):
        plot_paths(tmp_path / "curves.gif")
