"""Tables that fit the terminal: `qact compare` and `qact eval --per-corruption` run under a
pseudo-terminal 80 and 120 columns wide print no line wider than the terminal and every number of
their JSON whole; the layout chooser's rules; --metrics; adapt/context in labels, not a mismatch."""

import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest
from rich.cells import cell_len
from rich.console import Console

from fixtures_corrupted import digits_test, random_checkpoint, write_cifar_clean, write_npy_c
from fixtures_results import make_result

REPO = Path(__file__).resolve().parents[1]
ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07")


def run_in_pty(args, columns: int, cwd: Path, timeout: float = 240.0) -> tuple[int, list[str]]:
    """Run `python -m qact_cli ARGS` with stdout and stderr on a pty `columns` wide; returns (exit code, lines)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 60, columns, 0, 0))
    env = {**os.environ, "COLUMNS": str(columns), "LINES": "60", "TERM": "xterm-256color",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen([sys.executable, "-m", "qact_cli", *map(str, args)], stdin=slave, stdout=slave, stderr=slave,
                            cwd=cwd, env=env, close_fds=True)
    os.close(slave)
    chunks = []
    try:
        while True:
            ready, _, _ = select.select([master], [], [], timeout)
            if not ready:
                proc.kill()
                raise AssertionError(f"qact {' '.join(map(str, args))} printed nothing for {timeout} s")
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the pty
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
    code = proc.wait(timeout=timeout)
    text = ANSI.sub("", b"".join(chunks).decode("utf-8", "replace")).replace("\r\n", "\n").replace("\r", "\n")
    return code, text.split("\n")


def assert_fits(lines: list[str], columns: int) -> None:
    wide = [ln for ln in lines if cell_len(ln) > columns]
    assert not wide, f"{len(wide)} line(s) wider than {columns}:\n" + "\n".join(wide)
    text = "\n".join(lines)
    assert "…" not in text and "(-0." not in re.sub(r"\(-0\.\d{4}\)", "", text)  # no number cut short


def four_results(tmp_path: Path) -> list[Path]:
    """relu, relu + adapt bn, qact: one protocol (adapt is how a model is evaluated)."""
    docs = {"lenet-relu": make_result("lenet-relu", 0.99, 0.03),
            "lenet-relu-bn-adapt": make_result("lenet-relu-bn-adapt", 0.985, 0.005, adapt="bn"),
            "lenet-qact": make_result("lenet-qact", 0.945, 0.012, ece0=0.33),
            "lenet-prelu-stored": make_result("lenet-prelu-stored", 0.97, 0.02)}
    docs["lenet-prelu-stored"]["protocol"]["context"] = "stored"
    for name, doc in docs.items():  # messier numbers than the synthetic ramps, still exact
        for c in doc["cells"]:
            c["nll"], c["brier"] = round(c["acc"] * 0.371 + c["severity"] * 0.1, 6), round(0.05 + c["ece"] * 0.9, 6)
            c["ce_marginal_l2"] = round(c["ece"] * 0.43, 6)
    paths = []
    for name, doc in docs.items():
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(doc))
    return paths


@pytest.mark.parametrize("columns", [80, 120])
def test_compare_fits_the_terminal_with_every_number_whole(tmp_path, columns):
    from qact_cli.compare.table import Entry, build

    paths = four_results(tmp_path)
    code, lines = run_in_pty(["compare", *paths, "--metrics", "acc,ece,ce", "--json", tmp_path / "c.json"], columns, tmp_path)
    assert code == 0, "\n".join(lines)
    assert_fits(lines, columns)
    text = "\n".join(lines)
    cmp = build([Entry(p.stem, json.loads(p.read_text())) for p in paths], ["acc", "ece", "ce"])
    for (row, i), v in cmp.values.items():
        for m in ("acc", "ece", "ce"):
            assert f"{v[m]:.4f}" in text, (row, i, m)
            if v[f"{m}_delta"] is not None:
                assert f"{v[f'{m}_delta']:+.4f}" in text, (row, i, m)
    # adapt and context are labels, not a protocol mismatch
    assert "+adapt bn" in text and "+context stored" in text and "†" not in text
    assert json.loads((tmp_path / "c.json").read_text())["comparison"]["metrics"] == ["acc", "ece", "ce"]


@pytest.fixture(scope="module")
def cifar10c(tmp_path_factory):
    """A CIFAR-10-C folder with the 15 benchmark corruptions of 16 digits, and its clean split."""
    from qact_cli.corruptions import COMMON

    root = tmp_path_factory.mktemp("c10c")
    x, y = digits_test(16)
    write_npy_c(root, x, y, corruptions=tuple(COMMON))
    write_cifar_clean(root, x, y)
    return root


@pytest.mark.parametrize("columns", [80, 120])
def test_eval_per_corruption_fits_the_terminal_with_every_number_whole(tmp_path, cifar10c, columns):
    ckpt = random_checkpoint(tmp_path / "m.pt", 10, 32)
    code, lines = run_in_pty(["eval", ckpt, "--dataset", "cifar10c", "--data-root", cifar10c, "--limit", "12",
                              "--per-corruption", "--device", "cpu", "--json", tmp_path / "r.json"], columns, tmp_path)
    assert code == 0, "\n".join(lines)
    assert_fits(lines, columns)
    text = "\n".join(lines)
    doc = json.loads((tmp_path / "r.json").read_text())
    for s, row in doc["summary"]["by_severity"].items():
        for key in ("acc_mean", "acc_std", "ece_mean", "ece_std"):
            assert f"{row[key]:.4f}" in text, (s, key)
    assert f"{doc['summary']['mean_corruption_acc']:.4f}" in text
    grid = text[text.index("per cell"):]
    for cell in doc["cells"]:
        assert f"{cell['acc']:.4f}" in grid and f"{cell['ece']:.4f}" in grid, cell
    assert "limit None" not in text and "limit 12" in text
    assert f"on cifar10c ({cifar10c})" in " ".join(ln.strip() for ln in lines)  # a data root of one's own is named


# ---------------------------------------------------------------------------------------------- the chooser


def _cmp(n_models=3, metrics=("acc", "ece")):
    from qact_cli.compare.table import Entry, build

    return build([Entry(f"model-{k}", make_result(f"model-{k}", 0.9 - 0.01 * k, 0.03)) for k in range(n_models)], list(metrics))


def _terminal(width: int) -> Console:
    return Console(width=width, force_terminal=True, color_system=None, record=True)


def test_chooser_keeps_side_by_side_when_it_fits_and_switches_to_per_metric_tables():
    from qact_cli.compare.table import layouts
    from qact_cli.ui import choose_layout, whole_width

    cmp = _cmp(3)
    wide, per_metric = layouts(cmp)
    w = whole_width(_terminal(80), wide[0])
    assert choose_layout(_terminal(w), [wide, per_metric]) == 0
    assert choose_layout(_terminal(w - 1), [wide, per_metric]) == 1  # one column short: no squeezing, another layout
    # per-metric tables fit 80 columns for any number of models (their rows grow, not their width)
    assert all(whole_width(_terminal(80), t) <= 80 for t in layouts(_cmp(8))[1])
    # piped output (not a terminal) always gets the full side-by-side form
    assert choose_layout(Console(width=40, force_terminal=False), [wide, per_metric]) == 0


def test_narrowest_layout_wider_than_the_terminal_is_printed_whole():
    from qact_cli.compare.table import layouts
    from qact_cli.ui import print_layouts

    console = _terminal(30)
    print_layouts(console, layouts(_cmp(2)))
    out = console.export_text()
    assert "…" not in out
    cmp = _cmp(2)
    for (row, i), v in cmp.values.items():
        assert f"{v['acc']:.4f}" in out and f"{v['ece']:.4f}" in out


def test_whole_width_counts_numbers_full_and_labels_at_their_longest_word():
    from rich.table import Table

    from qact_cli.ui import whole_width

    t = Table()
    t.add_column("label")
    t.add_column("n", no_wrap=True)
    t.add_row("a fairly long label", "0.1234 (+0.0100)")
    # label wraps to "fairly" (6) + padding 2; the number keeps 16 + 2; borders 3
    assert whole_width(_terminal(200), t) == 6 + 2 + 16 + 2 + 3


def test_eval_tables_fall_back_to_stacked_summary_and_one_grid_per_metric():
    from qact_cli.eval.report import grid_table, print_table, summary_table

    doc = make_result("relu", 0.95, 0.05, corruptions=("gaussian_noise", "elastic_transform", "jpeg_compression"))
    for width, stacked in ((80, True), (200, False)):
        console = _terminal(width)
        print_table(console, summary_table(doc))
        print_table(console, grid_table(doc))
        out = console.export_text()
        assert max(cell_len(ln) for ln in out.splitlines()) <= width
        assert ("0.8000 / 0.0500" in out) is not stacked  # the combined acc / ECE grid only where it fits
        assert ("accuracy per cell" in out) is stacked and "0.8000" in out and "0.0700" in out
        assert "all images" in out and "limit None" not in out


def test_metrics_flag_values_best_and_markdown():
    from qact_cli.compare.table import markdown, parse_metrics
    from qact_cli.errors import UsageError

    assert parse_metrics(None) == ["acc", "ece"] and parse_metrics("nll, ce,nll") == ["nll", "ce"]
    with pytest.raises(UsageError, match="did you mean 'brier'"):
        parse_metrics("acc,breir")
    cmp = _cmp(2, ("acc", "ce", "nll", "brier"))
    doc = make_result("model-0", 0.9, 0.03)
    ce1 = [c["ce_marginal_l2"] for c in doc["cells"] if c["severity"] == 1]
    assert cmp.values["1", 0]["ce"] == pytest.approx(sum(ce1) / len(ce1))
    assert cmp.best["1", "nll"] == {0, 1}  # equal NLL: both best (lower is better, ties all highlighted)
    md = markdown(cmp)
    assert "| severity | model-0 acc | model-0 CE-L2 | model-0 NLL | model-0 Brier |" in md


def test_adapt_and_context_are_labels_but_data_and_limit_still_need_allow_mixed():
    from qact_cli.compare.table import Entry, build, check_protocols, column_label
    from qact_cli.errors import InputError

    relu, bn = make_result("relu", 0.9, 0.03), make_result("relu", 0.9, 0.02, adapt="bn")
    entries = [Entry("relu", relu), Entry("relu-bn", bn)]
    check_protocols(entries)  # no --allow-mixed needed
    assert [column_label(e) for e in entries] == ["relu", "relu-bn +adapt bn"]
    assert build(entries).values["5", 1]["acc_delta"] == pytest.approx(0.05)
    for other in (make_result("x", 0.9, 0.03, limit=50), make_result("x", 0.9, 0.03, dataset="gen:cifar10"),
                  make_result("x", 0.9, 0.03, severities=(0, 1, 2))):
        with pytest.raises(InputError, match="--allow-mixed"):
            check_protocols([Entry("relu", relu), Entry("x", other)])


def test_title_names_a_data_root_that_is_not_the_default(tmp_path):
    from qact_cli.compare.table import Entry, build, title
    from qact_cli.eval.report import named_root

    assert named_root(None) is None and named_root(str(tmp_path)) == str(tmp_path)
    cmp = build([Entry("a", make_result("a", 0.9, 0.03, dataset="cifar10c"))], data_root=named_root(str(tmp_path)))
    assert title(cmp).startswith(f"cifar10c ({tmp_path}):")


def test_markdown_and_plot_follow_metrics(cli, tmp_path):
    from PIL import Image

    from qact_cli.compare.plot import plot_size

    paths = four_results(tmp_path)[:2]
    md, png = tmp_path / "c.md", tmp_path / "c.png"
    code, out, err = cli("compare", *paths, "--metrics", "acc,ece,ce,nll,brier", "--markdown", md, "--plot", png)
    assert code == 0, err
    header = md.read_text().splitlines()[2]
    assert header.startswith("| severity | lenet-relu acc | lenet-relu ECE | lenet-relu CE-L2 | lenet-relu NLL | lenet-relu Brier |")
    assert "lenet-relu-bn-adapt +adapt bn Brier" in header
    with Image.open(png) as im:
        assert im.size == plot_size(5) and plot_size(5)[0] > plot_size(2)[0]
    # piped: the wide form, one line per row, every metric's header present
    assert "CE-L2" in out and "NLL" in out and "Brier" in out and "(-0.0050)" in out
