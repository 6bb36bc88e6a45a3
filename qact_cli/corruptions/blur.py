"""Blur family: defocus_blur, glass_blur, motion_blur, zoom_blur, gaussian_blur (Hendrycks' make_imagenet_c.py /
make_cifar_c.py, functions of the same names; docs/corruption-fidelity.md, "Per corruption")."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from .base import register, to_uint8, truncate_u8, unit, unit_to_uint8
from .filters import (correlate2d, device_constant, fold_index, gaussian_filter, gaussian_weights, pad_axis,
                      motion_blur as _motion, motion_taps, zoom_blur_average)
from .native import blur as native_blur
from .rng import ImageStreams


def _cv2_gaussian_kernel(ksize: int, sigma: float) -> np.ndarray:
    """cv2.getGaussianKernel(ksize, sigma, CV_32F): float32 taps normalised in float32."""
    x = np.arange(ksize) - (ksize - 1) * 0.5
    t = np.exp(-0.5 / (sigma * sigma) * x * x).astype(np.float32)
    return (t * np.float32(1.0 / float(t.astype(np.float64).sum()))).astype(np.float32)


@lru_cache(maxsize=32)
def disk_kernel(radius: float, alias_blur: float) -> np.ndarray:
    """The reference `disk()`: a normalised 0/1 disk (17x17 up to radius 8, else (2r+1)^2), anti-aliased
    by cv2.GaussianBlur (3x3, or 5x5 above radius 8; border reflect-101), all in float32."""
    if radius <= 8:
        grid, ksize = np.arange(-8, 8 + 1), 3
    else:
        grid, ksize = np.arange(-radius, radius + 1), 5
    xx, yy = np.meshgrid(grid, grid)
    disk = np.array(xx**2 + yy**2 <= radius**2, dtype=np.float32)
    disk /= np.sum(disk)
    g = _cv2_gaussian_kernel(ksize, alias_blur)
    r, n = ksize // 2, disk.shape[0]
    idx = fold_index(np.arange(-r, n + r), n, "reflect101")
    rows = sum(g[i] * disk[:, idx[i:i + n]] for i in range(ksize)).astype(np.float32)
    return sum(g[i] * rows[idx[i:i + n], :] for i in range(ksize)).astype(np.float32)


@lru_cache(maxsize=32)
def disk_columns(radius: float, alias_blur: float) -> tuple[tuple[float, float], tuple[int, ...], float] | None:
    """`disk_kernel` as ((g0, g1) of the 3-tap anti-aliasing blur, the disk's column half-heights at |dx| = 0, 1,
    ..., 1 / its taps) when the kernel is exactly that blur applied to the disk: true while the blurred disk stays
    inside the 17x17 grid, so that cv2.GaussianBlur's reflect-101 fold never acts (a reach of up to 6 px); else
    None."""
    if radius > 8:
        return None
    grid = np.arange(-8, 8 + 1)
    disk = (grid[None, :] ** 2 + grid[:, None] ** 2 <= radius**2)
    reach = int(np.abs(grid[disk.any(0)]).max())
    if reach + 1 >= 8:  # the blur at the grid's edge would read a reflected tap
        return None
    g = _cv2_gaussian_kernel(3, alias_blur).astype(np.float64)
    full = disk / disk.sum()
    for axis in (0, 1):
        full = g[0] * np.roll(full, 1, axis) + g[1] * full + g[2] * np.roll(full, -1, axis)
    if np.abs(full - disk_kernel(radius, alias_blur)).max() > 1e-6 * full.max():
        return None
    halves = tuple(int(np.abs(grid[disk[:, 8 + d]]).max()) for d in range(reach + 1))
    return (float(g[0]), float(g[1])), halves, 1.0 / float(disk.sum())


def _defocus_columns(x: torch.Tensor, blur: tuple[float, float], halves: tuple[int, ...], scale: float) -> torch.Tensor:
    """cv2.filter2D with the anti-aliased disk (reflect-101 borders) in ~30 passes over the image instead of an
    FFT: the 3-tap blur along both axes, then a column box that grows by a row above and below at a time, added at
    +dx and -dx when its height is the disk's at |dx|. Borders are exact: the image is padded by reflection once,
    and symmetric filters commute with the reflect-101 extension."""
    g0, g1 = blur
    r = len(halves) - 1  # the disk's reach; the blur adds one
    h, w = x.shape[-2:]
    if x.dim() in (3, 4) and r + 1 < min(h, w):
        v = torch.nn.functional.pad(x, (r + 1,) * 4, mode="reflect")
    else:
        v = pad_axis(pad_axis(x, r + 1, r + 1, -2, "reflect101"), r + 1, r + 1, -1, "reflect101")
    # a + g0/g1 (b + c) per axis; g1^2 joins the final scale
    v = torch.add(v[..., 1:-1, :], v[..., :-2, :] + v[..., 2:, :], alpha=g0 / g1)
    v = torch.add(v[..., 1:-1], v[..., :-2] + v[..., 2:], alpha=g0 / g1)  # (.., h + 2r, w + 2r)
    by_height: dict[int, list[int]] = {}
    for d, half in enumerate(halves):
        if half >= 0:
            by_height.setdefault(half, []).append(d)
    out, box = None, v[..., r:r + h, :]  # the sum of rows y-k .. y+k, k = 0 so far (a view of v)
    for k in range(max(by_height) + 1):
        if k:
            above, below = v[..., r - k:r - k + h, :], v[..., r + k:r + k + h, :]
            box = (box + above if k == 1 else box.add_(above)).add_(below)  # fresh at k = 1: v stays as it is
        for d in by_height.get(k, ()):
            for col in ((r,) if d == 0 else (r + d, r - d)):
                part = box[..., col:col + w]
                out = part.clone() if out is None else out.add_(part)
    return out.mul_(scale * g1 * g1)


def _fft_size(n: int) -> int:
    """Smallest 2^a 3^b 5^c >= n (fast FFT lengths)."""
    m = n
    while True:
        k = m
        for p in (2, 3, 5):
            while k % p == 0:
                k //= p
        if k == 1:
            return m
        m += 1


def _correlate2d_fft(x: torch.Tensor, kernel: np.ndarray) -> torch.Tensor:
    """cv2.filter2D (correlation, reflect-101 borders) through the FFT: pad, multiply spectra, crop.
    Every image is transformed on its own, so batch composition cannot change a result."""
    r = kernel.shape[0] // 2
    h, w = x.shape[-2:]
    ph, pw = _fft_size(h + 2 * r), _fft_size(w + 2 * r)
    # outputs r..r+h-1 of the circular correlation read only the padded image, never the zeros that the FFT
    # length adds after it
    xp = pad_axis(pad_axis(x, r, r, -2, "reflect101"), r, r, -1, "reflect101")

    def spectrum():
        k = np.zeros((ph, pw), dtype=np.float64)
        for (i, j), v in np.ndenumerate(kernel):
            k[(i - r) % ph, (j - r) % pw] = v
        return np.conj(np.fft.rfft2(k))

    spec = device_constant(("disk-fft", kernel.tobytes(), kernel.shape, ph, pw), spectrum, x.device, torch.complex64)
    out = torch.fft.irfft2(torch.fft.rfft2(xp, s=(ph, pw)) * spec, s=(ph, pw))
    return out[..., r:r + h, r:r + w]


@register(group="common", deterministic=True, native_chunk_pixels=1 << 20)
def defocus_blur(x: torch.Tensor, c, rng: ImageStreams) -> torch.Tensor:
    """Correlate each channel with the anti-aliased disk (cv2.filter2D, reflect-101 borders)."""
    kernel = disk_kernel(float(c[0]), float(c[1]))
    nnz = int(np.count_nonzero(kernel))
    columns = disk_columns(float(c[0]), float(c[1]))
    if columns is not None:  # QACT_KERNEL=native: the columns below in one C call, 8 bits in and out
        out = native_blur.defocus_blur(x, *columns)
        if out is not None:
            return out
    if nnz > 49 and columns is not None:  # on the 0..255 scale: the unit scalings are two passes fewer
        return to_uint8(_defocus_columns(x.to(torch.float32), *columns))
    v = unit(x)
    out = correlate2d(v, kernel, "reflect101") if nnz <= 49 else _correlate2d_fft(v, kernel)
    return unit_to_uint8(out)


def _jump_to_fixed_points(graph: torch.Tensor, spare: torch.Tensor, big: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pointer doubling on graph[:big] (graph[big:] are fixed points) until every pointer is >= big; after k
    rounds every chain of fewer than 2^k links has ended. Each link has probability 5/16 for d = 2, so 10^5
    pixels all but surely hold chains of 8+ links (~9 of them), rarely of 16+: the test starts after round 4.
    Returns (graph, spare) as used."""
    rounds = 0
    while rounds < 4 or int(graph[:big].min()) < big:
        torch.index_select(graph, 0, graph[:big], out=spare[:big])
        graph, spare = spare, graph
        rounds += 1
    return graph, spare


def _glass_shuffle_map(n: int, h: int, w: int, d: int, iters: int, rng: ImageStreams) -> torch.Tensor:
    """Where each pixel's value comes from after the reference's local pixel "swaps".

    The reference visits h = H-d .. d+1 and w = W-d .. d+1 (descending) `iters` times and does
    `x[h, w], x[h', w'] = x[h', w'], x[h, w]` on numpy row views, which is a one-way copy x[h, w] <- x[h', w']
    with (dx, dy) = randint(-d, d, 2), i.e. offsets in [-d, d-1]. Each visit draws one code in [0, 4d^2),
    dx = code % 2d - d and dy = code // 2d - d (the same uniform pairs, half the draws).
    A pixel whose source was visited earlier in the same pass (later in raster order, as visits descend)
    receives the source's *new* value: those chains are resolved by pointer jumping.
    Returns (n, h*w) int32 flat indices into the batch's n*h*w pixels before the first pass."""
    dev = rng.device
    nh, nw = h - 2 * d, w - 2 * d  # visited rows d+1 .. h-d, columns d+1 .. w-d
    big = n * h * w
    ident = torch.arange(big, dtype=torch.int32 if 4 * big < 2**31 else torch.int64, device=dev)  # room for 3 planes
    if nh <= 0 or nw <= 0:
        return ident.view(n, h * w)
    codes = rng.randint(0, 4 * d * d, (iters, nh, nw))  # rows/columns ascending
    # Pointer graph over 2N nodes: node p < N is "p's value after this pass", node N + q is "q's value before
    # it" (a fixed point). A visit whose source lies later in raster order (flat step > 0) points at the
    # source's node p + step, final once its own chain has resolved; any other visit, and every pixel outside
    # the visited block, points at N + source. Sources outside the block get N + source too: no bounds tests.
    c = torch.arange(4 * d * d, device=dev)
    step = (c // (2 * d) - d) * w + (c % (2 * d) - d)
    to_node = torch.where(step > 0, step - big, step).to(ident.dtype)  # added to N + p (to p without chains)
    moves = to_node.index_select(0, codes.reshape(-1)).view(codes.shape)
    block = (slice(None), slice(d + 1, h - d + 1), slice(d + 1, w - d + 1))
    if not bool((step > 0).any()):  # d = 1: offsets -1 and 0 never reach a pixel visited earlier, so no chains
        total = None
        for it in range(iters):
            src = ident.clone()
            src.view(n, h, w)[block] += moves[:, it]
            total = src if total is None else total.index_select(0, src)
        return total.view(n, h * w)
    # two graphs to jump between, two maps whose upper halves hold the passes so far (a gather by the resolved
    # pointers composes them), all allocated once: fresh large tensors cost page faults
    graph = torch.empty(2 * big, dtype=ident.dtype, device=dev)
    torch.add(ident, big, out=graph[big:])
    graph[:big] = graph[big:]  # unvisited pixels keep their value
    spare = graph.clone()
    totals = torch.empty(2 * big, dtype=ident.dtype, device=dev), torch.empty(2 * big, dtype=ident.dtype, device=dev)
    totals[0][big:] = ident
    start = graph[big:].view(n, h, w)[block]  # N + p over the visited block
    for it in range(iters):
        torch.add(start, moves[:, it], out=graph[:big].view(n, h, w)[block])
        graph, spare = _jump_to_fixed_points(graph, spare, big)
        torch.index_select(totals[0], 0, graph[:big], out=totals[1][big:])
        totals = totals[1], totals[0]
    return totals[0][big:].view(n, h * w)


@register(group="common")
def glass_blur(x: torch.Tensor, c, rng: ImageStreams) -> torch.Tensor:
    """gaussian(sigma) -> uint8 (truncated) -> local pixel shuffling -> gaussian(sigma)."""
    sigma, d, iters = float(c[0]), int(c[1]), int(c[2])
    n, ch, h, w = x.shape
    # QACT_KERNEL=native: the blurs in C with 8 bits in and out, the reference's swap loop itself in C on the
    # 8-bit levels with _glass_shuffle_map's draws (the bytes of the formulation below with the native
    # filters.gaussian_filter)
    taps = gaussian_weights(sigma) if native_blur.selected(x) else None
    levels8 = None if taps is None else native_blur.gaussian_filter(x, taps, "nearest", torch.uint8, unit=True)
    if levels8 is not None:
        if h - 2 * d > 0 and w - 2 * d > 0:  # else nothing is visited and nothing drawn
            native_blur.glass_shuffle(levels8, rng.randint(0, 4 * d * d, (iters, h - 2 * d, w - 2 * d)), d)
        return native_blur.gaussian_filter(levels8, taps, "nearest", torch.uint8, unit=True)
    # the 8-bit truncation kept in float (x / 255 of the truncated level, exactly what unit() of it gives)
    levels = gaussian_filter(unit(x), sigma, "nearest").clamp_(0.0, 1.0).mul_(255.0).floor_().div_(255.0)
    src = _glass_shuffle_map(n, h, w, d, iters, rng)
    # image i's pixel g = i*h*w + p sits at i*ch*h*w + c*h*w + p in the (n, ch, h*w) planes
    plane = (torch.arange(n, device=x.device)[:, None] * ((ch - 1) * h * w)
             + torch.arange(ch, device=x.device)[None, :] * (h * w)).to(src.dtype)
    idx = (src[:, None, :] + plane[:, :, None]).view(-1)
    shuffled = levels.view(-1).index_select(0, idx).view(n, ch, h, w)
    return truncate_u8(gaussian_filter(shuffled, sigma, "nearest").clamp_(0.0, 1.0).mul_(255.0))  # unit_to_uint8


@register(group="common", native_chunk_pixels=1 << 20)
def motion_blur(x: torch.Tensor, c, rng: ImageStreams) -> torch.Tensor:
    """ImageMagick MotionBlurImage(radius, sigma, angle ~ U(-45, 45)) on the 8-bit image; the reference
    reads ImageMagick's 8-bit PNG back, which truncates like the other corruptions (measured against
    ImageMagick 6.9 through Wand: rounding made the output 0.45-0.49 grey levels too bright)."""
    angle = rng.scalar_uniform(-45.0, 45.0)[:, 0]
    if native_blur.selected(x):  # QACT_KERNEL=native: the taps in one C call, 8 bits in and out
        out = native_blur.motion_blur(x, *motion_taps(int(c[0]), float(c[1]), angle), out_dtype=torch.uint8)
        if out is not None:
            return out
    out = _motion(x, int(c[0]), float(c[1]), angle)  # float32 from the 8-bit image
    return truncate_u8(out.clamp_(0.0, 255.0))  # in place: fresh buffers cost page faults


# larger batches: its sparse-matrix product runs faster with more columns
@register(group="common", deterministic=True, chunk_pixels=1 << 19)
def zoom_blur(x: torch.Tensor, c, rng: ImageStreams) -> torch.Tensor:
    """Average of the image and its centre zooms by each factor in c (clipped_zoom, bilinear)."""
    return unit_to_uint8(zoom_blur_average(unit(x), tuple(c)))


@register(group="extra", deterministic=True)
def gaussian_blur(x: torch.Tensor, c, rng: ImageStreams) -> torch.Tensor:
    """skimage.filters.gaussian(sigma=c), mode 'nearest', truncate 4, per channel."""
    # on the 0..255 scale (the weights sum to 1): x / 255 and the * 255 before the truncation are two passes
    if native_blur.selected(x):  # QACT_KERNEL=native: both passes in one C call, 8 bits in and out
        out = native_blur.gaussian_filter(x, gaussian_weights(float(c)), "nearest", torch.uint8)
        if out is not None:
            return out
    return to_uint8(gaussian_filter(x.to(torch.float32), float(c), "nearest"))
