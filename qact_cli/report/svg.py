"""Inline SVG for the HTML report, written directly (a few rectangles, lines and labels per chart):
no chart library, nothing fetched, and every mark carries its value in a <title> tooltip and the
model it belongs to in `data-model`, so the report's toggles can hide it.

Every piece of text from a result goes through `markupsafe.escape`; the functions return `Markup`.
"""

from __future__ import annotations

from markupsafe import Markup, escape

from ..compare.table import METRICS, MEAN_ROW, Comparison, column_label
from ..eval.metrics import ece_from_bins

# colour-blind-safe line colours (Okabe & Ito)
LINE_COLORS = ("#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#f0e442", "#000000")
# heat-map scale from good to bad (ColorBrewer RdYlGn, reversed)
_GOOD_TO_BAD = ((26, 152, 80), (145, 207, 96), (217, 239, 139), (254, 224, 139), (252, 141, 89), (215, 48, 39))


def heat_color(badness: float) -> str:
    """#rrggbb for `badness` in [0, 1] (0 green, 1 red), interpolated between the scale's stops."""
    t = min(1.0, max(0.0, float(badness))) * (len(_GOOD_TO_BAD) - 1)
    k = min(int(t), len(_GOOD_TO_BAD) - 2)
    a, b = _GOOD_TO_BAD[k], _GOOD_TO_BAD[k + 1]
    f = t - k
    return "#" + "".join(f"{round(x + (y - x) * f):02x}" for x, y in zip(a, b))


def _f(v: float) -> str:
    return f"{v:.1f}"


def curves_svg(cmp: Comparison, key: str, width: int = 460, height: int = 290) -> Markup:
    """One metric's mean over corruptions against severity, a polyline and dots per model, the band
    of ± the std over corruptions shaded."""
    left, right, top, bottom = 52, 12, 28, 40
    sevs = [int(r) for r in cmp.rows if r != MEAN_ROW]
    points = {i: [(s, cmp.values[str(s), i][key], cmp.values[str(s), i].get(f"{key}_std") or 0.0)
                  for s in sevs if (str(s), i) in cmp.values and cmp.values[str(s), i].get(key) is not None]
              for i in cmp.evaluated}
    vals = [v + d * sign for pts in points.values() for _, v, d in pts for sign in (-1, 1)] or [0.0, 1.0]
    lo, hi = (max(0.0, min(vals)), min(1.0, max(vals))) if key == "acc" else (0.0, max(vals))
    lo, hi = (lo - 0.05, hi + 0.05) if hi - lo < 1e-9 else (lo - 0.03 * (hi - lo), hi + 0.03 * (hi - lo))
    lo = max(0.0, lo) if key in ("acc", "ece") else lo
    hi = min(1.0, hi) if key == "acc" else hi
    s0, s1 = (min(sevs), max(sevs)) if sevs else (0, 1)
    s1 = s1 if s1 > s0 else s0 + 1

    def x(s):
        return left + (s - s0) / (s1 - s0) * (width - left - right)

    def y(v):  # a band reaching past the axis (an ECE below 0, an accuracy above 1) is cut at its edge
        return top + (hi - min(hi, max(lo, v))) / (hi - lo) * (height - top - bottom)

    label = METRICS[key].label
    out = [f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
           f'aria-label="{escape(label)} against severity">',
           f'<text x="{width / 2}" y="16" class="ttl">{escape(label)} (mean ± std over corruptions)</text>']
    for k in range(5):
        v = lo + (hi - lo) * k / 4
        out.append(f'<line x1="{left}" x2="{width - right}" y1="{_f(y(v))}" y2="{_f(y(v))}" class="grid"/>'
                   f'<text x="{left - 6}" y="{_f(y(v) + 4)}" class="tick" text-anchor="end">{v:.2f}</text>')
    for s in sevs:
        out.append(f'<text x="{_f(x(s))}" y="{height - bottom + 16}" class="tick" text-anchor="middle">{s}</text>')
    out.append(f'<text x="{(left + width - right) / 2}" y="{height - 6}" class="tick" text-anchor="middle">'
               'severity (0 = clean)</text>')
    for n, i in enumerate(cmp.evaluated):
        pts = points[i]
        if not pts:
            continue
        name = column_label(cmp.entries[i])
        color = LINE_COLORS[n % len(LINE_COLORS)]
        band = [f"{_f(x(s))},{_f(y(v + d))}" for s, v, d in pts] + [f"{_f(x(s))},{_f(y(v - d))}" for s, v, d in reversed(pts)]
        line = " ".join(f"{_f(x(s))},{_f(y(v))}" for s, v, _ in pts)
        dots = "".join(f'<circle cx="{_f(x(s))}" cy="{_f(y(v))}" r="3.5" fill="{color}"><title>{escape(name)}, '
                       f'severity {s}: {label} {v:.4f} ± {d:.4f}</title></circle>' for s, v, d in pts)
        out.append(f'<g data-model="{escape(cmp.entries[i].name)}"><polygon points="{" ".join(band)}" fill="{color}" '
                   f'fill-opacity="0.13"/><polyline points="{line}" fill="none" stroke="{color}" stroke-width="2"/>'
                   f'{dots}</g>')
    out.append("</svg>")
    return Markup("".join(out))


def reliability_svg(bins: dict, title: str, size: int = 210) -> Markup:
    """A reliability diagram: per bin, accuracy (bar) against the diagonal with the gap to the bin's
    mean confidence shaded, the ECE in the title, and the share of samples per bin underneath."""
    left, top, hist = 34, 34, 46
    width, height = left + size + 10, top + size + 14 + hist + 22
    nb = len(bins["count"])
    n = sum(bins["count"])
    w = size / nb

    def y(v):
        return top + (1 - v) * size

    out = [f'<svg class="rel" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
           f'aria-label="reliability diagram">',
           f'<text x="{left + size / 2}" y="13" class="ttl">{escape(title)}</text>',
           f'<text x="{left + size / 2}" y="27" class="sub">ECE {ece_from_bins(bins):.4f}</text>',
           f'<rect x="{left}" y="{top}" width="{size}" height="{size}" class="frame"/>']
    for k in range(0, 5):
        v = k / 4
        out.append(f'<text x="{left - 4}" y="{_f(y(v) + 3)}" class="tick" text-anchor="end">{v:g}</text>')
    top_share = max(bins["count"]) / n if n else 1.0
    for m in range(nb):
        lo_edge, hi_edge = m / nb, (m + 1) / nb
        k = bins["count"][m]
        hx = left + m * w
        hh = (k / n) / top_share * hist if n else 0
        hist_y = top + size + 14 + hist - hh
        out.append(f'<rect x="{_f(hx)}" y="{_f(hist_y)}" width="{_f(w - 1)}" height="{_f(hh)}" class="hist">'
                   f'<title>confidence ({lo_edge:.3f}, {hi_edge:.3f}]: {k} of {n} samples ({k / n:.1%})</title></rect>')
        if not k:
            continue
        a, c = bins["acc"][m], bins["conf"][m]
        tip = (f"confidence ({lo_edge:.3f}, {hi_edge:.3f}]: {k} samples, mean confidence {c:.4f}, accuracy {a:.4f}, "
               f"{'over' if c > a else 'under'}-confident by {abs(c - a):.4f}")
        out.append(f'<rect x="{_f(hx)}" y="{_f(y(a))}" width="{_f(w - 1)}" height="{_f(a * size)}" class="bar">'
                   f'<title>{tip}</title></rect>'
                   f'<rect x="{_f(hx)}" y="{_f(y(max(a, c)))}" width="{_f(w - 1)}" height="{_f(abs(c - a) * size)}" '
                   f'class="gap"><title>{tip}</title></rect>')
    out.append(f'<line x1="{left}" y1="{top + size}" x2="{left + size}" y2="{top}" class="diag"/>')
    base = top + size + 14 + hist
    out.append(f'<line x1="{left}" x2="{left + size}" y1="{base}" y2="{base}" class="grid"/>'
               f'<text x="{left - 4}" y="{top + size + 24}" class="tick" text-anchor="end">share</text>'
               f'<text x="{left}" y="{base + 14}" class="tick">0</text>'
               f'<text x="{left + size}" y="{base + 14}" class="tick" text-anchor="end">1</text>'
               f'<text x="{left + size / 2}" y="{base + 14}" class="tick" text-anchor="middle">confidence</text></svg>')
    return Markup("".join(out))
