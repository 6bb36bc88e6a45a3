"""Reproduce docs/calibration.md: quantile-head variants and loss/head ablations on digits.

Every run trains on the digits train split (qact_cli.train.train, 80:20 split, seed 0) and is
scored on gen:digits, 15 common corruptions x severities 0-5 (qact_cli.eval.run.run_eval), then
the per-severity means of acc, top-label ECE and Kumar's marginal CE (and, for runs trained with
--calibrate temperature, the same at the fitted temperature) are printed as a Markdown table.

    nice -n 10 python benchmarks/calibration_study.py --arch lenet --epochs 15 --out /tmp/calib
    nice -n 10 python benchmarks/calibration_study.py --arch resnet18 --epochs 3 --train-limit ... 

Checkpoints and result JSONs are kept in --out, so a rerun only evaluates what is missing.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from qact_cli.eval.run import run_eval
from qact_cli.train import TrainConfig, train

# name -> (act, loss, head)
RUNS = {
    "relu-ce-linear": ("relu", "ce", "linear"),
    "qact-ce-linear": ("qact", "ce", "linear"),
    "qact-ws-linear": ("qact", "watershed", "linear"),
    "qact-ce-q:odds": ("qact", "ce", "quantile:odds"),
    "qact-ws-q:odds": ("qact", "watershed", "quantile:odds"),
    "qact-ws-q:odds_nll": ("qact", "watershed", "quantile:odds_nll"),
    "qact-ws-q:direct": ("qact", "watershed", "quantile:direct"),
    "qact-ws-q:scaled": ("qact", "watershed", "quantile:scaled"),
    "qact-ws-q:scaled_nll": ("qact", "watershed", "quantile:scaled_nll"),
    "qact-ws-q:scaled3": ("qact", "watershed", "quantile:scaled3"),
    "qact-ws-q:power": ("qact", "watershed", "quantile:power"),
    "qact-ws-q:power4": ("qact", "watershed", "quantile:power4"),
    "qact-ws-q:direct_fit": ("qact", "watershed", "quantile:direct_fit"),
    "qact-ce-q:direct_fit": ("qact", "ce", "quantile:direct_fit"),
    "qact-ws-q:scaled_silverman": ("qact", "watershed", "quantile:scaled_silverman"),
}


def by_severity(doc: dict) -> dict:
    """severity -> mean over corruptions of acc, ece, ce (and calibrated ece/ce when present)."""
    rows: dict[int, list[dict]] = {}
    for cell in doc["cells"]:
        rows.setdefault(int(cell["severity"]), []).append(cell)
    out = {}
    for sev, cells in sorted(rows.items()):
        mean = lambda f: sum(f(c) for c in cells) / len(cells)  # noqa: E731
        out[sev] = {"acc": mean(lambda c: c["acc"]), "ece": mean(lambda c: c["ece"]),
                    "ce": mean(lambda c: c["ce_marginal_l2"])}
        if "calibrated" in cells[0]:
            out[sev]["ece_T"] = mean(lambda c: c["calibrated"]["ece"])
            out[sev]["ce_T"] = mean(lambda c: c["calibrated"]["ce_marginal_l2"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="lenet")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--limit", type=int, default=100, help="images per eval cell")
    ap.add_argument("--runs", default=",".join(RUNS), help="comma-separated names of RUNS")
    ap.add_argument("--calibrate", action="store_true", help="fit a temperature on validation (reported as *_T)")
    ap.add_argument("--out", default="calibration-study")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table = {}
    for name in args.runs.split(","):
        act, loss, head = RUNS[name]
        tag = f"{args.arch}-{name.replace(':', '_')}-e{args.epochs}{'' if args.batch_size == 64 else f'-b{args.batch_size}'}{'-T' if args.calibrate else ''}"
        ckpt, res = out / f"{tag}.pt", out / f"{tag}.json"
        if not res.is_file():
            t0 = time.time()
            info = train(TrainConfig(dataset="digits", arch=args.arch, out=str(ckpt), act=act, loss=loss, head=head,
                                     epochs=args.epochs, batch_size=args.batch_size, seed=0, device="cpu", workers=0,
                                     calibrate="temperature" if args.calibrate else None))
            t1 = time.time()
            (doc,) = run_eval([str(ckpt)], "gen:digits", severities="0-5", batch_size=256, limit=args.limit, seed=0,
                              device="cpu", workers=0)
            doc["study"] = {"val_acc": info["best_val_acc"], "epochs": info["epochs"], "train_s": round(t1 - t0, 1),
                            "eval_s": round(time.time() - t1, 1), "calibration": info.get("calibration")}
            res.write_text(json.dumps(doc))
        doc = json.loads(res.read_text())
        if "clean_full" not in doc["study"]:  # the whole clean test split (360 images), less noisy than --limit
            (full,) = run_eval([str(ckpt)], "gen:digits", severities="0", batch_size=256, seed=0, device="cpu", workers=0)
            doc["study"]["clean_full"] = by_severity(full)[0]
            res.write_text(json.dumps(doc))
        table[name] = (doc["study"], by_severity(doc))
        print(f"{name}: val {doc['study']['val_acc']:.4f} clean {table[name][1][0]['acc']:.4f} "
              f"ece {table[name][1][0]['ece']:.4f} ({doc['study']['train_s']} s + {doc['study']['eval_s']} s)", flush=True)
    sevs = sorted(next(iter(table.values()))[1])
    print(f"\n{args.arch}, {args.epochs} epochs, batch {args.batch_size}; gen:digits, {args.limit} images per cell, "
          "mean over the 15 corruptions; each cell: acc / top-label ECE / Kumar marginal CE\n")
    print("| run | val acc | clean acc (all 360) | clean ECE (all 360) | " + " | ".join(f"severity {s}" for s in sevs) + " |")
    print("|:--|--:|--:|--:|" + "--:|" * len(sevs))
    for name, (study, sev) in table.items():
        full = study["clean_full"]
        cells = " | ".join(f"{sev[s]['acc']:.3f} / {sev[s]['ece']:.3f} / {sev[s]['ce']:.3f}" for s in sevs)
        print(f"| {name} | {study['val_acc']:.3f} | {full['acc']:.3f} | {full['ece']:.3f} | {cells} |")
    if args.calibrate:
        print("\nAfter temperature scaling (T fitted on the validation split); each cell: ECE / Kumar marginal CE at T\n")
        print("| run | T | " + " | ".join(f"severity {s}" for s in sevs) + " |")
        print("|:--|--:|" + "--:|" * len(sevs))
        for name, (study, sev) in table.items():
            cells = " | ".join(f"{sev[s]['ece_T']:.3f} / {sev[s]['ce_T']:.3f}" for s in sevs)
            print(f"| {name} | {study['calibration']['temperature']:.3f} | {cells} |")

if __name__ == "__main__":
    main()
