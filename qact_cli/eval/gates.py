"""CI gates: compare with a baseline result (`--baseline`, `--tolerance`) and `--fail-under`.

A regression (exit 1) is a severity whose mean accuracy fell, or whose mean ECE rose, by more than
the tolerance (absolute fractions). Results evaluated under another protocol are not comparable:
that is an input error (exit 3), checked before the evaluation starts (`check_baseline_protocol`)
and again on the finished results.

The model itself may change: a new checkpoint, other weights of the same spec, another spec, other
preprocessing (input size, resize, mean, std) are what a regression check compares. What is a
protocol difference is what changes the meaning of the numbers: the data and cells, the test-time
choices, and the model's number of classes (the probability space that ECE, NLL and Brier are
computed over, and the chance level of the accuracy).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import InputError, UsageError

# protocol fields that must match for two results to be comparable (interface §1, eval --baseline)
PROTOCOL_KEYS = ("corruptions", "severities", "batch_size", "context", "adapt", "limit")
_EPS = 1e-9  # a change of exactly the tolerance passes, whatever the float rounding of the difference


def check_options(tolerance: float, fail_under: float | None) -> None:
    """Both are fractions in [0, 1] (a 1 for "one percentage point" would pass everything)."""
    from .options import check_value

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
        if not all(k in r for k in ("protocol", "summary", "cells", "model", "dataset")):
            raise InputError(f"{path}: a result lacks protocol/summary/cells; regenerate it with `qact eval --json`")
    return results


def protocol_differences(a: dict, b: dict) -> list[str]:
    """What differs between the protocols of results `a` and `b` (empty: comparable)."""
    diffs = []
    if a["dataset"] != b["dataset"]:
        diffs.append(f"dataset {a['dataset']} vs {b['dataset']}")
    # the seed decides the images only where they are generated (gen:NAME)
    keys = PROTOCOL_KEYS + (("seed",) if str(a["dataset"]).startswith("gen:") else ())
    for k in keys:
        if a["protocol"].get(k) != b["protocol"].get(k):
            diffs.append(f"{k} {a['protocol'].get(k)} vs {b['protocol'].get(k)}")
    ka, kb = (r.get("model", {}).get("num_classes") for r in (a, b))
    if ka is not None and kb is not None and ka != kb:
        diffs.append(f"model classes {ka} vs {kb}")
    return diffs


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


def check_gates(results: list[dict], baseline_path=None, tolerance: float = 0.01, fail_under: float | None = None) -> list[str]:
    """Returns the failure lines (empty when every gate passes). Protocol mismatch raises (exit 3)."""
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
            failures += [f"{name}: {line}" for line in regressions(r, b, tolerance)]
        if fail_under is not None:
            mca = r["summary"].get("mean_corruption_acc")
            if mca is None:
                raise UsageError("--fail-under needs corrupted cells (severities ≥ 1) to compute the mean corruption accuracy")
            if mca < fail_under:
                failures.append(f"{name}: mean corruption accuracy {mca:.4f} < --fail-under {fail_under}")
    return failures
