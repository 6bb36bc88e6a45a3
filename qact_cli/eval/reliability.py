"""Reliability data of a result: the cells' `ece_bins` (docs/reference.md, "Result JSON"), checked,
and pooled per severity for reliability diagrams (Guo et al. 2017, Figure 1: accuracy against
confidence per bin, the confidence histogram under it).

A result written before qact kept the bins has none: `no_bins_reason` says so in words that the
plot and the HTML report show in place of the diagram; every other output works as before.
"""

from __future__ import annotations

import math
from typing import Mapping

from ..errors import UsageError
from ..suggest import unknown
from .metrics import pool_bins

N_BINS = 15


def _fraction(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and -1e-9 <= v <= 1 + 1e-9


def cell_bins(cell: Mapping) -> dict | None:
    """The cell's `ece_bins` when present and well formed (15 bins, counts adding up to `n`, fractions
    where a bin holds samples), else None."""
    b = cell.get("ece_bins")
    if not isinstance(b, Mapping) or not all(isinstance(b.get(k), list) and len(b[k]) == N_BINS
                                             for k in ("count", "conf", "acc")):
        return None
    counts = b["count"]
    if not all(isinstance(k, int) and not isinstance(k, bool) and k >= 0 for k in counts) or sum(counts) == 0:
        return None
    if cell.get("n") is not None and sum(counts) != cell["n"]:
        return None
    if not all(_fraction(b["conf"][m]) and _fraction(b["acc"][m]) for m in range(N_BINS) if counts[m]):
        return None
    return {"count": list(counts), "conf": list(b["conf"]), "acc": list(b["acc"])}


def no_bins_reason(result: Mapping) -> str | None:
    """None when every cell has usable bins; else why the reliability diagrams cannot be drawn."""
    cells = result.get("cells") or []
    missing = [c for c in cells if cell_bins(c) is None]
    if not missing:
        return None
    if all("ece_bins" not in c for c in missing):
        return (f"no reliability bins in this result (written by qact {result.get('qact_version', '?')} before "
                "cells kept them); re-run `qact eval --json` to draw reliability diagrams")
    c = missing[0]
    return (f"the reliability bins of cell {c.get('corruption')} severity {c.get('severity')} are damaged "
            "(15 bins whose counts add up to n expected); re-run `qact eval --json`")


def severity_bins(result: Mapping, corruption: str | None = None) -> dict[int, dict]:
    """{severity: bins} for every severity of `result`, ascending: the bins of all its cells pooled
    (counts summed, confidence and accuracy count-weighted), or only `corruption`'s cell (severity 0
    is always the clean cell). Empty when the result has no usable bins (see `no_bins_reason`)."""
    if corruption is not None and corruption not in corruptions_of(result):
        raise UsageError(unknown("corruption", corruption, corruptions_of(result)))
    if no_bins_reason(result) is not None:
        return {}
    by: dict[int, list[dict]] = {}
    for c in result["cells"]:
        sev = int(c["severity"])
        if corruption is None or c["corruption"] == corruption or sev == 0:
            by.setdefault(sev, []).append(cell_bins(c))
    return {s: pool_bins(by[s]) for s in sorted(by)}


def corruptions_of(result: Mapping) -> list[str]:
    return list(dict.fromkeys(c["corruption"] for c in result.get("cells", []) if int(c["severity"]) >= 1))

