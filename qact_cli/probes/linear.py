"""`--head linear`: DINOv2's logistic-regression probe (`dinov2/eval/log_regression.py`) with C
chosen on the validation split; see fit.py for the protocol and C_SELECT for the choice of rule."""

from __future__ import annotations

import copy
import warnings
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..errors import InputError, UsageError
from ..models.common import make_head
from ..suggest import unknown

C_COARSE = [10.0**p for p in range(-6, 6)]  # every decade of DINOv2's 10^-6..10^5 sweep
C_REFINE = (-0.75, -0.5, -0.25, 0.25, 0.5, 0.75)  # decades around the best coarse C: DINOv2's 0.25 step
C_RANGE = (1e-6, 1e5)
C_PATIENCE = 3  # stop walking up the decades after this many without a better validation accuracy
LOGREG_MAX_ITER = 1000
SMALL_PROBLEM = 4_000_000  # features x samples below which the fit runs on one thread
LOGREG_TOL = 1e-6  # DINOv2 (cuML) uses 1e-12; scikit-learn's L-BFGS then always runs to max_iter
# C by validation log-loss, not DINOv2's accuracy: on a small validation split accuracy is flat over
# decades of C and its argmax can sit deep in the over-regularised range, whose probabilities are near
# uniform. Measured (sample_configs/paper_protocol_digits.yaml, ReLU LeNet, 287 validation images): by
# accuracy C = 5.6e-5 (0.993 vs 0.990 for every C up to 0.1) gave clean accuracy 1.000 with top-label
# ECE 0.85. Calibration is half of what the paper's protocol measures, so the proper scoring rule decides.
C_SELECT = "nll"


def _logreg(C: float, x: np.ndarray, y: np.ndarray, start=None):
    """L-BFGS logistic regression at C; `start`: a fitted estimator whose solution starts the solver."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    if start is None:
        clf = LogisticRegression(C=C, solver="lbfgs", max_iter=LOGREG_MAX_ITER, tol=LOGREG_TOL, warm_start=True)
    else:  # warm start (scikit-learn reads coef_/intercept_ of the estimator it fits)
        clf = copy.deepcopy(start).set_params(C=C, warm_start=True)
    # On small problems OpenMP/BLAS threads only cost: measured 1.3 ms vs 15 ms an L-BFGS iteration
    # (1150 x 32, two busy cores). Large ones (CIFAR: 40k x 384) keep every thread.
    with warnings.catch_warnings(), threadpool_limits(limits=1 if x.size < SMALL_PROBLEM else None):
        warnings.simplefilter("ignore", ConvergenceWarning)  # recorded per C instead (n_iter == max_iter)
        clf.fit(x, y)
    return clf


def _linear_head_from(clf, in_features: int, num_classes: int) -> nn.Module:
    """A LinearHead whose logits are `clf.decision_function` (so softmax = `predict_proba`), with
    rows for every class: a binary fit's single score w·x+b becomes logits (0, w·x+b), and a class
    absent from the training split gets a logit of -1e4 (probability ~0)."""
    coef = torch.as_tensor(clf.coef_, dtype=torch.float64)
    bias = torch.as_tensor(clf.intercept_, dtype=torch.float64)
    if len(clf.classes_) == 2:
        coef, bias = torch.cat([torch.zeros_like(coef), coef]), torch.cat([torch.zeros_like(bias), bias])
    weight = torch.zeros(num_classes, in_features, dtype=torch.float64)
    b = torch.full((num_classes,), -1e4, dtype=torch.float64)
    rows = torch.as_tensor(np.asarray(clf.classes_, dtype=np.int64))
    weight[rows], b[rows] = coef, bias
    head = make_head("linear", in_features, num_classes)
    with torch.no_grad():
        head.fc.weight.copy_(weight.float())
        head.fc.bias.copy_(b.float())
    return head


def _val_nll(clf, x: np.ndarray, y: np.ndarray) -> float:
    """Mean negative log-likelihood of the labels (a class never seen in training: probability 1e-12)."""
    proba = clf.predict_proba(x)
    col = {int(c): i for i, c in enumerate(clf.classes_)}
    p = np.array([proba[i, col[int(t)]] if int(t) in col else 0.0 for i, t in enumerate(y)])
    return float(-np.log(np.clip(p, 1e-12, 1.0)).mean())


def fit_linear(x_tr: torch.Tensor, y_tr: np.ndarray, x_va: torch.Tensor, y_va: np.ndarray, num_classes: int,
               log: Callable[[str], None] = lambda s: None, select: str = C_SELECT) -> tuple[nn.Module, dict]:
    """Logistic regression with C picked on the validation split; returns (LinearHead, record).

    `select="nll"`: the lowest validation log-loss; `"acc"`: DINOv2's rule, the highest validation
    accuracy, ties to the smaller C (see C_SELECT for why nll is the default)."""
    if select not in ("nll", "acc"):
        raise UsageError(unknown("C selection", select, ("nll", "acc")))
    xtr, xva = x_tr.double().numpy(), x_va.double().numpy()
    if len(np.unique(y_tr)) < 2:
        raise InputError("the training split holds a single class; a classifier needs at least two")
    tried: dict[float, tuple[float, int, float]] = {}
    fits: dict[float, object] = {}

    def trial(C: float, start=None) -> None:
        if C in tried:
            return
        clf = _logreg(C, xtr, y_tr, start)
        acc = float((clf.predict(xva) == y_va).mean())
        tried[C] = (acc, int(np.max(clf.n_iter_)), _val_nll(clf, xva, y_va))
        fits[C] = clf

    def best() -> float:
        if select == "nll":
            return min(sorted(tried), key=lambda c: tried[c][2])
        return max(sorted(tried), key=lambda c: tried[c][0])  # ties to the smaller C, as DINOv2

    # Each fit starts from the solution at the neighbouring C (a regularisation path): about half
    # the L-BFGS iterations of cold starts, and the same optimum wherever the solver converges.
    previous, stale = None, 0
    for C in sorted(C_COARSE):
        trial(C, previous)
        stale = 0 if best() == C else stale + 1
        if stale >= C_PATIENCE:  # larger C only weakens the regularisation further, at the highest cost
            break
        previous = fits[C]
    centre = best()
    for d in C_REFINE:
        C = float(10.0 ** (np.log10(centre) + d))
        if C_RANGE[0] <= C <= C_RANGE[1]:
            trial(C, fits[centre])
    C = best()
    log(f"logistic regression: C = {C:.3g} (by validation {select}), validation accuracy {tried[C][0]:.4f}, "
        f"log-loss {tried[C][2]:.4f} ({len(tried)} values of C tried)")
    sweep = [{"C": c, "val_acc": a, "val_nll": nll, "n_iter": it, "converged": it < LOGREG_MAX_ITER}
             for c, (a, it, nll) in sorted(tried.items())]
    head = _linear_head_from(fits[C], x_tr.shape[1], num_classes)
    record = {"solver": "lbfgs", "C": C, "select": select, "max_iter": LOGREG_MAX_ITER, "tol": LOGREG_TOL,
              "standardize": False, "refit_on_train_val": False, "sweep": sweep, "val_acc": tried[C][0],
              "val_nll": tried[C][2]}
    return head, record
