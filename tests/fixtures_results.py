"""Synthetic result documents (qact.eval/1) shared by the compare and table tests."""

from qact_cli.eval.metrics import summarize


def make_result(name, base_acc, drop, ece0=0.02, dataset="gen:digits", limit=None, adapt="none",
                corruptions=("fog", "snow"), severities=(0, 1, 2, 3, 4, 5)):
    """A qact.eval/1 document whose accuracy falls by `drop` per severity (corruption k is 0.01·k lower)."""
    cells = []
    for s in severities:
        for k, c in enumerate(corruptions if s else ["clean"]):
            cells.append({"corruption": c, "severity": s, "n": 100, "acc": round(base_acc - drop * s - 0.01 * k, 6),
                          "ece": round(ece0 + 0.01 * s + 0.004 * k, 6), "ce_marginal_l2": 0.02, "nll": 0.5, "brier": 0.3})
    return {"schema": "qact.eval/1", "qact_version": "0.1.0",
            "model": {"name": name, "checkpoint": f"{name}.pt", "sha256": "0" * 64, "arch": "lenet", "act": "relu",
                      "head": "linear", "num_classes": 10},
            "dataset": dataset,
            "protocol": {"corruptions": list(corruptions), "severities": list(severities), "batch_size": 256,
                         "context": "batch", "adapt": adapt, "limit": limit, "seed": 0},
            "metrics": {"ece": "top-label L1, 15 equal-width bins"}, "cells": cells,
            "summary": summarize(cells, dataset=dataset), "elapsed_s": 1.0, "environment": {"device": "cpu"}}
