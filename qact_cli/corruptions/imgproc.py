"""The OpenCV steps of the reference `spatter` (water mode), re-implemented batched in torch.

`cv2.Canny(img, 50, 150)` (3x3 Sobel, L1 magnitude, non-maximum suppression, hysteresis),
`cv2.distanceTransform(DIST_L2, 5)` (5x5 chamfer distances 1, 1.4, 2.1969 in 16.16 fixed point),
`cv2.blur((3, 3))` and `cv2.equalizeHist`, each emulated to the integer/rounding behaviour of OpenCV so the
water mask follows the reference step by step. Inputs are (N, H, W) tensors holding 8-bit values.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_TG22 = int(0.4142135623730950488016887242097 * (1 << 15) + 0.5)  # tan(22.5 deg) in Canny's 15-bit fixed point


def _pad(x: torch.Tensor, mode: str) -> torch.Tensor:
    """Pad (N, H, W) float32 by one pixel: "replicate" or "reflect" (= reflect-101)."""
    return F.pad(x[:, None], (1, 1, 1, 1), mode=mode)[:, 0]


def canny(img: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Edges (bool, N x H x W) of `cv2.Canny(img, low, high)` with aperture 3 and the L1 gradient norm."""
    p = _pad(img.to(torch.float32), "replicate")  # Sobel runs with BORDER_REPLICATE inside Canny
    smooth_v = p[:, :-2] + 2 * p[:, 1:-1] + p[:, 2:]
    smooth_h = p[:, :, :-2] + 2 * p[:, :, 1:-1] + p[:, :, 2:]
    gx = (smooth_v[:, :, 2:] - smooth_v[:, :, :-2]).to(torch.int32)
    gy = (smooth_h[:, 2:] - smooth_h[:, :-2]).to(torch.int32)
    mag = gx.abs() + gy.abs()
    h, w = mag.shape[-2:]
    mp = F.pad(mag, (1, 1, 1, 1))  # magnitudes outside the image count as 0

    def m(dy, dx):
        return mp[:, 1 + dy:1 + dy + h, 1 + dx:1 + dx + w]

    # OpenCV's sector test in 15-bit fixed point: |gy| < tan(22.5)|gx| horizontal, > tan(67.5)|gx| vertical
    ax, ay = gx.abs(), gy.abs() << 15
    tg22x = ax * _TG22
    horizontal = ay < tg22x
    vertical = ~horizontal & (ay > tg22x + (ax << 16))
    diagonal = ~horizontal & ~vertical
    same_sign = (gx ^ gy) >= 0  # s = +1: compare up-left and down-right, else up-right and down-left
    keep_h = (mag > m(0, -1)) & (mag >= m(0, 1))
    keep_v = (mag > m(-1, 0)) & (mag >= m(1, 0))
    keep_d = torch.where(same_sign, (mag > m(-1, -1)) & (mag > m(1, 1)), (mag > m(-1, 1)) & (mag > m(1, -1)))
    local_max = (mag > int(low)) & ((horizontal & keep_h) | (vertical & keep_v) | (diagonal & keep_d))
    edges = local_max & (mag > int(high))
    # hysteresis: weak maxima join when 8-connected to an edge; grow until nothing changes
    while True:
        p = F.pad(edges, (1, 1, 1, 1))
        rows = p[:, :, :-2] | p[:, :, 1:-1] | p[:, :, 2:]
        grown = (rows[:, :-2] | rows[:, 1:-1] | rows[:, 2:]) & local_max
        if torch.equal(grown, edges):
            return edges
        edges = grown


_HV, _DIAG, _LONG = 65536, 91750, 143976  # round(65536 * (1, 1.4f, 2.1969f))
_INF = (2**31 - 1) >> 2


def chamfer_distance(zero: torch.Tensor) -> torch.Tensor:
    """`cv2.distanceTransform(src, DIST_L2, 5)` where `zero` marks the pixels with src == 0: the two raster
    passes of OpenCV's 5x5 chamfer (1, 1.4, 2.1969 in 16.16 fixed point) one row at a time, all images at
    once. Within a row, "t[j] = min(base[j], t[j-1] + 1)" is a running minimum of base[j] - j, shifted back.
    Returns float32 distances (8192 and more where an image has no zero pixel, as OpenCV)."""
    n, h, w = zero.shape
    dev = zero.device
    t = torch.full((h + 4, n, w + 4), _INF, dtype=torch.int32, device=dev)  # rows outermost; sums < 2^31
    ramp = torch.arange(w, device=dev, dtype=torch.int32) * _HV
    near = torch.tensor([_LONG, _DIAG, _HV, _DIAG, _LONG], dtype=torch.int32, device=dev)
    zero_rows = zero.transpose(0, 1)
    inner = slice(2, w + 2)

    def from_rows(one: int, two: int) -> torch.Tensor:
        """min over the mask's neighbours in the rows `one` (adjacent) and `two` (two rows away)."""
        a = (t[one].unfold(1, 5, 1) + near).amin(-1)
        b = t[two, :, 1:w + 3].unfold(1, 3, 1)[..., ::2].amin(-1) + _LONG
        return torch.minimum(a, b)

    for r in range(2, h + 2):
        base = from_rows(r - 1, r - 2).masked_fill_(zero_rows[r - 2], 0)
        torch.add(torch.cummin(base - ramp, dim=1).values, ramp, out=t[r, :, inner])
    for r in range(h + 1, 1, -1):
        base = torch.minimum(t[r, :, inner], from_rows(r + 1, r + 2)) + ramp
        torch.sub(torch.cummin(base.flip(1), dim=1).values.flip(1), ramp, out=t[r, :, inner])
    return (t[2:h + 2, :, inner].transpose(0, 1).to(torch.float32) * (1.0 / 65536)).to(torch.float32)


def box3_sum(x: torch.Tensor) -> torch.Tensor:
    """The 3x3 sums of `cv2.blur(x, (3, 3))` (border reflect-101) in float32: exact here, since the inputs are
    8-bit values or 16.16 fixed-point distances up to 20 (sums below 2^24 units)."""
    p = _pad(x.to(torch.float32), "reflect")
    rows = p[:, :-2] + p[:, 1:-1] + p[:, 2:]
    return rows[:, :, :-2] + rows[:, :, 1:-1] + rows[:, :, 2:]


def equalize_hist(img: torch.Tensor) -> torch.Tensor:
    """`cv2.equalizeHist` per image of (N, H, W) 8-bit values (long)."""
    n = img.shape[0]
    total = img[0].numel()
    flat = img.reshape(n, -1).long()
    hist = torch.zeros(n, 256, dtype=torch.int64, device=img.device).scatter_add_(1, flat, torch.ones_like(flat))
    first = (hist > 0).long().argmax(1, keepdim=True)
    at_first = hist.gather(1, first)
    cum = hist.cumsum(1) - hist.cumsum(1).gather(1, first)  # sum over first < k' <= k
    scale = (255.0 / (total - at_first).clamp(min=1).to(torch.float32)).to(torch.float32)
    lut = torch.round(cum.to(torch.float32) * scale).clamp_(0, 255).long()
    lut = torch.where(torch.arange(256, device=img.device)[None] <= first, 0, lut)
    lut = torch.where(at_first == total, first.expand(-1, 256), lut)  # a flat image stays as it is
    return lut.gather(1, flat).reshape(img.shape)


def emboss(img: torch.Tensor) -> torch.Tensor:
    """`cv2.filter2D(img, CV_8U, [[-2,-1,0],[-1,1,1],[0,1,2]])`: integer correlation, reflect-101, saturated."""
    p = _pad(img.to(torch.float32), "reflect")
    h, w = img.shape[-2:]

    def s(dy, dx):
        return p[:, 1 + dy:1 + dy + h, 1 + dx:1 + dx + w]

    out = 2 * (s(1, 1) - s(-1, -1)) + (s(1, 0) - s(-1, 0)) + (s(0, 1) - s(0, -1)) + s(0, 0)
    return out.clamp_(0, 255)
