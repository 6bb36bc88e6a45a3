"""The grounded CDF written for reading, not speed: one channel, float64, sort based.

This is the definition the fast tables in `table.py` approximate (paper, eq. 3 and Algorithm 1 with
linear interpolation between quantiles); the tests and benchmarks/bench_qact.py measure the layer
against it.
"""

from __future__ import annotations

import numpy as np

SENTINEL = 100.0


def exact_cdf(context: np.ndarray, x: np.ndarray, sentinel: float = SENTINEL) -> np.ndarray:
    """The grounded CDF of the 1-D `context` at `x`, in float64.

    Piecewise linear through the knots (-c, 0), (a_r, r/(2(m+1))), (0, 1/2), (b_j, 1/2 + j/(2(p+1))),
    (c, 1), where a are the m sorted negatives, b the p sorted values >= 0 and c the sentinel:
    negatives and non-negatives each carry half of the mass, 0 maps to 1/2. Right-continuous at ties
    (x on a tie takes the top of the tie group); 0 below -c and 1 from c on.
    """
    neg, pos = np.sort(context[context < 0]), np.sort(context[context >= 0])
    m, p = len(neg), len(pos)
    knot_x = np.concatenate([[-sentinel], neg, [0.0], pos, [sentinel]])
    knot_y = np.concatenate([[0.0], 0.5 * np.arange(1, m + 1) / (m + 1), [0.5],
                             0.5 + 0.5 * np.arange(1, p + 1) / (p + 1), [1.0]])
    r = np.searchsorted(knot_x, x, side="right")  # knot_x[r-1] <= x < knot_x[r]: the top of a tie group
    inside = (r >= 1) & (r < len(knot_x))
    r = np.clip(r, 1, len(knot_x) - 1)
    x0, x1, y0, y1 = knot_x[r - 1], knot_x[r], knot_y[r - 1], knot_y[r]
    y = y0 + (x - x0) / np.maximum(x1 - x0, 1e-300) * (y1 - y0)
    return np.where(inside, y, np.where(x < -sentinel, 0.0, 1.0))
