"""CI gates: compare with a baseline result (`--baseline`, `--tolerance`) and `--fail-under`.

A regression (exit 1) is a severity whose mean accuracy fell, or whose mean ECE rose, by more than
the tolerance (absolute fractions). Results evaluated under another protocol are not comparable:
that is an input error (exit 3), checked before the evaluation starts (`check_baseline_protocol`)
and again on the finished results; comparability.py says what a protocol difference is.

The model itself may change: a new checkpoint, other weights of the same spec, another spec, other
preprocessing (input size, resize, mean, std) are what a regression check compares. What is a
protocol difference is what changes the meaning of the numbers: the data and cells, the test-time
choices, and the model's number of classes (the probability space that ECE, NLL and Brier are
computed over, and the chance level of the accuracy).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..errors import InputError, UsageError
from .comparability import protocol_differences
from .metrics import summarize
from .options import check_value

_EPS = 1e-9  # a change of exactly the tolerance passes, whatever the float rounding of the difference


def check_options(tolerance: float, fail_under: float | None) -> None:
    """Both are fractions in [0, 1] (a 1 for "one percentage point" would pass everything)."""
    check_value("tolerance", tolerance)
    check_value("fail_under", fail_under)


def load_result(path: str | Path) -> list[dict]:
    """A result JSON (single or multi) as a list of single results; bad files are exit 3."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"result file not found: {path}; write one with `qact eval ... --json {path}`")
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"{path} is not valid JSON ({e}); regenerate it with `qact eval --json`") from None
    schema = doc.get("schema") if isinstance(doc, dict) else None
    if schema == "qact.eval/1":
        results = [doc]
    elif schema == "qact.eval-multi/1" and isinstance(doc.get("results"), list):
        results = doc["results"]
    else:
        raise InputError(f"{path} is not a qact result (schema {schema!r}); expected qact.eval/1 or qact.eval-multi/1")
    for r in results:
        if not isinstance(r, dict) or not all(k in r for k in ("protocol", "summary", "cells", "model", "dataset")):
            raise InputError(f"{path}: a result lacks protocol/summary/cells; regenerate it with `qact eval --json`")
        check_result(r, path)
    return results


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


_SUMMARY_TOL = 1e-6  # the summary is written from the cells with full float precision


def check_result(r: dict, path) -> None:
    """Types, ranges, and the summary recomputed from the cells: a damaged or hand-edited result is exit 3,
    never a number trusted by a gate."""
    def bad(what: str) -> InputError:
        return InputError(f"{path}: {what}; the result is damaged or edited, regenerate it with `qact eval --json`")

    if not isinstance(r["model"], dict) or not isinstance(r["protocol"], dict) or not isinstance(r["dataset"], str):
        raise bad("'model' and 'protocol' must be objects and 'dataset' a string")
    cells = r["cells"]
    if not isinstance(cells, list) or not cells:
        raise bad("'cells' must be a non-empty list")
    for c in cells:
        if not isinstance(c, dict) or not isinstance(c.get("corruption"), str) or isinstance(c.get("severity"), bool) \
                or not isinstance(c.get("severity"), int):
            raise bad(f"cell {c!r:.80} lacks a corruption name or an integer severity")
        for k in ("acc", "ece"):
            if not _num(c.get(k)) or not 0 <= c[k] <= 1:
                raise bad(f"cell {c['corruption']} severity {c['severity']}: {k} {c.get(k)!r} is not a fraction in [0, 1]")
    summary = r["summary"]
    by = summary.get("by_severity") if isinstance(summary, dict) else None
    if not isinstance(by, dict) or not by:
        raise bad("'summary.by_severity' is missing or empty")
    want = summarize(cells, dataset=r["dataset"])
    if set(by) != set(want["by_severity"]):
        raise bad(f"summary severities {sorted(by)} do not match the cells' {sorted(want['by_severity'])}")
    for sev, row in want["by_severity"].items():
        got = by[sev]
        for k in ("acc_mean", "ece_mean"):
            if not isinstance(got, dict) or not _num(got.get(k)):
                raise bad(f"summary severity {sev}: {k} is missing or not a number")
            if abs(got[k] - row[k]) > _SUMMARY_TOL:
                raise bad(f"summary severity {sev}: {k} {got[k]} disagrees with its cells ({row[k]:.6f})")
    mca, want_mca = summary.get("mean_corruption_acc"), want["mean_corruption_acc"]
    if (mca is None) != (want_mca is None) or (mca is not None and (not _num(mca) or abs(mca - want_mca) > _SUMMARY_TOL)):
        raise bad(f"summary mean_corruption_acc {mca!r} disagrees with its cells ({want_mca})")


def _mismatch(path, diffs: list[str]) -> InputError:
    return InputError(f"{path} was evaluated under another protocol ({'; '.join(diffs)}); "
                      "re-run the baseline with the same options")


def check_baseline_protocol(baseline_path, dataset: str, protocol: dict) -> None:
    """Fail fast (exit 3) when no result in the baseline file shares this protocol."""
    baselines = load_result(baseline_path)
    planned = {"dataset": dataset, "protocol": protocol}
    diffs = [protocol_differences(planned, b) for b in baselines]
    if all(diffs):
        raise _mismatch(baseline_path, diffs[0])


def regressions(current: dict, baseline: dict, tolerance: float) -> list[str]:
    """Rows whose mean accuracy fell, or mean ECE rose, by more than `tolerance` (absolute fractions)."""
    rows = []
    cur, base = current["summary"]["by_severity"], baseline["summary"]["by_severity"]
    for s in sorted(set(cur) & set(base), key=int):
        d_acc = cur[s]["acc_mean"] - base[s]["acc_mean"]
        d_ece = cur[s]["ece_mean"] - base[s]["ece_mean"]
        if d_acc < -tolerance - _EPS:
            rows.append(f"severity {s}: accuracy {base[s]['acc_mean']:.4f} -> {cur[s]['acc_mean']:.4f} ({d_acc:+.4f})")
        if d_ece > tolerance + _EPS:
            rows.append(f"severity {s}: ECE {base[s]['ece_mean']:.4f} -> {cur[s]['ece_mean']:.4f} ({d_ece:+.4f})")
    return rows


def pick_baseline(baselines: list[dict], current: dict, path) -> dict:
    if len(baselines) == 1:
        return baselines[0]
    name = current["model"].get("name")
    for b in baselines:
        if b["model"].get("name") == name:
            return b
    raise InputError(f"{path} holds {len(baselines)} results and none is named {name!r}; pass a single-model baseline")


def check_same_data(current: dict, baseline: dict, path) -> None:
    """Both results scored the same images (protocol.data, a content fingerprint); a baseline without one
    (written by an older qact) cannot be checked and passes."""
    a, b = current["protocol"].get("data"), baseline["protocol"].get("data")
    if isinstance(a, dict) and isinstance(b, dict) and a.get("fingerprint") != b.get("fingerprint"):
        raise InputError(f"{path} was scored on other data (fingerprint {b.get('fingerprint')}, {b.get('n_images')} images; "
                         f"now {a.get('fingerprint')}, {a.get('n_images')}); evaluate the baseline on the same files, or "
                         "pass --allow-data-change for a new dataset version")


def check_gates(results: list[dict], baseline_path=None, tolerance: float = 0.01, fail_under: float | None = None,
                allow_data_change: bool = False) -> list[str]:
    """Returns the failure lines (empty when every gate passes). Protocol or data mismatch raises (exit 3)."""
    check_options(tolerance, fail_under)
    failures = []
    baselines = load_result(baseline_path) if baseline_path else None
    for r in results:
        name = r["model"].get("name", r["model"]["arch"])
        if baselines is not None:
            b = pick_baseline(baselines, r, baseline_path)
            diffs = protocol_differences(r, b)
            if diffs:
                raise _mismatch(baseline_path, diffs)
            if not allow_data_change:
                check_same_data(r, b, baseline_path)
            failures += [f"{name}: {line}" for line in regressions(r, b, tolerance)]
        if fail_under is not None:
            mca = r["summary"].get("mean_corruption_acc")
            if mca is None:
                raise UsageError("--fail-under needs corrupted cells (severities ≥ 1) to compute the mean corruption accuracy")
            if mca < fail_under:
                failures.append(f"{name}: mean corruption accuracy {mca:.4f} < --fail-under {fail_under}")
    return failures
