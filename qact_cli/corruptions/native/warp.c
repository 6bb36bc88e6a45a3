/* Native kernels of the geometric family (QACT_KERNEL=native; wrapper: warp.py beside this file).
 *
 * elastic_warp: elastic_transform's two bilinear resamplings (cv2.warpAffine on OpenCV's 1/32-pixel grid with
 * BORDER_REFLECT_101, then scipy map_coordinates order 1, mode 'reflect', of Hendrycks' make_imagenet_c.py) with
 * the uint8 -> [0, 1] and [0, 1] -> uint8 conversions, in the same float32 / float64 / integer arithmetic as the
 * default torch path (qact_cli/corruptions/warp.py), so that both give the same bytes:
 * - grid sums are additions of precomputed products (no multiply-add a compiler could fuse);
 * - blends are torch's vectorised lerp, fma(w, b - a, a) for |w| < 0.5 and fma(w - 1, b - a, b) otherwise;
 * - planes carry W + 1 zeros after their last pixel, as the default path's: a tap right of the last column or
 *   below the last row then reads a finite value with weight exactly 0, and lerp(a, b, 0) is a.
 *
 * Each row runs in three loops: its taps and weights (vectorised), the rare coordinates that leave the image
 * (folded one by one), and the blends. The blends read pixel-interleaved copies (4 floats a pixel: up to 4
 * channels): a tap's channels are one 16-byte load, and the four lanes blend as one vector (gathers, one per
 * channel and tap, cost ~3x more). Images are (N, C, H, W) contiguous, C <= 4, and computed one by one (the
 * caller splits a batch over threads).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Vectorising the blends' selects and the floor needs GCC to evaluate both sides of a float select; that changes
 * no value (traps are masked), and every product that feeds a sum is written as an explicit fmaf or kept apart. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math", "fp-contract=off")
#endif

static inline float lerp(float a, float b, float w) {
    float d = b - a, lo = fmaf(w, d, a), hi = fmaf(w - 1.0f, d, b);
    return fabsf(w) < 0.5f ? lo : hi;
}

/* OpenCV's reflect-101 of a 1/32-px position q into [0, 32 (size - 1)] */
static int32_t fold101(int32_t q, int32_t size) {
    int32_t edge = 32 * (size - 1);
    if (edge == 0) return 0;
    int32_t r = q % (2 * edge);
    if (r < 0) r += 2 * edge;
    return r < 2 * edge - r ? r : 2 * edge - r;
}

/* torch.remainder(c, period) for float32 c outside [0, period): fmod is exact, a negative result gains a period */
static float wrap(float c, float period) {
    float r = fmodf(c, period);
    return r < 0.0f ? r + period : r;
}

/* one row of blends from pixel-interleaved images (4 floats a pixel, the channels then padding): out pixel x is
 * the blend of the pixels idx[x] + {0, 1, w, w + 1} with weights fx[x], fy[x] */
__attribute__((noinline)) static void blend_row(const float *restrict px, int64_t w, int32_t len,
                                                const int32_t *restrict idx, const float *restrict fx,
                                                const float *restrict fy, float *restrict out) {
    for (int32_t x = 0; x < len; x++) {
        const float *t = px + 4 * (int64_t)idx[x], *b = t + 4 * w;
        float wx = fx[x], wy = fy[x];
        float *o = out + 4 * x;
        for (int l = 0; l < 4; l++) o[l] = lerp(lerp(t[l], t[l + 4], wx), lerp(b[l], b[l + 4], wx), wy);
    }
}

static inline uint8_t u8(float a) {
    a = a > 0.0f ? a : 0.0f;
    a = a < 1.0f ? a : 1.0f;
    return (uint8_t)(int32_t)(a * 255.0f);
}

/* np.uint8(np.clip(v, 0, 1) * 255) of a row of pixel-interleaved values into c planes of k bytes */
static void to_u8(const float *restrict v, int32_t len, int64_t c, int64_t k, uint8_t *restrict out) {
    if (c == 3) {  /* one loop, so that the interleaved loads vectorise */
        uint8_t *restrict o1 = out + k, *restrict o2 = out + 2 * k;
        for (int32_t x = 0; x < len; x++) {
            out[x] = u8(v[4 * x]);
            o1[x] = u8(v[4 * x + 1]);
            o2[x] = u8(v[4 * x + 2]);
        }
        return;
    }
    for (int64_t ch = 0; ch < c; ch++)
        for (int32_t x = 0; x < len; x++) out[ch * k + x] = u8(v[4 * x + ch]);
}

/* torch.div(x, 255.0) in float32 of c <= 4 planes of k bytes, pixel-interleaved (4 floats a pixel) */
static void to_unit(const uint8_t *restrict x, int64_t c, int64_t k, float *restrict out) {
    if (c == 3) {
        const uint8_t *restrict x1 = x + k, *restrict x2 = x + 2 * k;
        for (int64_t i = 0; i < k; i++) {
            out[4 * i] = (float)x[i] / 255.0f;
            out[4 * i + 1] = (float)x1[i] / 255.0f;
            out[4 * i + 2] = (float)x2[i] / 255.0f;
            out[4 * i + 3] = 0.0f;
        }
        return;
    }
    for (int64_t i = 0; i < k; i++)
        for (int64_t ch = 0; ch < 4; ch++) out[4 * i + ch] = ch < c ? (float)x[ch * k + i] / 255.0f : 0.0f;
}

/* x (n, c, h, w) uint8, c <= 4; m (n, 6) float64: 32 x the inverse affine map, rows (x, y) of [a, b, t] with
 * source = a x + b y + t; d (n, 2, h, w) float32 displacements (dx, dy), or NULL for the affine warp alone;
 * out (n, c, h, w) uint8; scratch: 2 (h + w) doubles, then 8 (h w + w + 1) + 6 w floats */
void elastic_warp(const uint8_t *restrict x, int64_t n, int64_t c, int64_t h, int64_t w, const double *restrict m,
                  const float *restrict d, uint8_t *restrict out, double *restrict scratch) {
    int64_t k = h * w, len = 4 * (k + w + 1);
    double *colx = scratch, *coly = colx + w, *rowx = coly + w, *rowy = rowx + h;
    float *unit = (float *)(rowy + h), *warped = unit + len, *row = warped + len, *fx = row + 4 * w, *fy = fx + w;
    int32_t *qx = (int32_t *)(fy + w), *qy = qx + w, *idx = qy + w;
    memset(unit + 4 * k, 0, sizeof(float) * (size_t)(4 * (w + 1)));
    memset(warped + 4 * k, 0, sizeof(float) * (size_t)(4 * (w + 1)));
    float fw = (float)w, fh = (float)h, px = 2.0f * fw, py = 2.0f * fh;
    const int32_t ex = 32 * ((int32_t)w - 1), ey = 32 * ((int32_t)h - 1), iw = (int32_t)w;
    for (int64_t img = 0; img < n; img++) {
        const uint8_t *xi = x + img * c * k;
        const double *mi = m + img * 6;
        uint8_t *oi = out + img * c * k;
        to_unit(xi, c, k, unit);
        /* warpAffine: q = floor(((32 a) x + (32 b) y + 32 t) + 0.5) in float64, summed in that order */
        for (int32_t j = 0; j < iw; j++) colx[j] = (double)j * mi[0], coly[j] = (double)j * mi[3];
        for (int32_t j = 0; j < (int32_t)h; j++) rowx[j] = (double)j * mi[1], rowy[j] = (double)j * mi[4];
        for (int64_t y = 0; y < h; y++) {
            int far = ex == 0;
            for (int32_t j = 0; j < iw; j++) {
                double sx = colx[j] + rowx[y], sy = coly[j] + rowy[y];
                sx = sx + mi[2];
                sy = sy + mi[5];
                int32_t a = (int32_t)floor(sx + 0.5), b = (int32_t)floor(sy + 0.5);
                qx[j] = a;
                qy[j] = b;
                far |= (a < -ex) | (a > 2 * ex) | (b < -ey) | (b > 2 * ey);
            }
            if (far)  /* more than one mirror away (rare): fold those first */
                for (int32_t j = 0; j < iw; j++) {
                    if (qx[j] < -ex || qx[j] > 2 * ex || ex == 0) qx[j] = fold101(qx[j], iw);
                    if (qy[j] < -ey || qy[j] > 2 * ey || ey == 0) qy[j] = fold101(qy[j], (int32_t)h);
                }
            for (int32_t j = 0; j < iw; j++) {
                int32_t a = qx[j], b = qy[j];
                /* one mirror at most: edge - | |q| - edge |, the identity on [0, edge] (and 0 when edge is 0) */
                a = ex - abs(abs(a) - ex);
                b = ey - abs(abs(b) - ey);
                fx[j] = (float)(a & 31) * (1.0f / 32);
                fy[j] = (float)(b & 31) * (1.0f / 32);
                idx[j] = (a >> 5) + (b >> 5) * iw;
            }
            if (d) {
                blend_row(unit, w, iw, idx, fx, fy, warped + 4 * y * w);
            } else {
                blend_row(unit, w, iw, idx, fx, fy, row);
                to_u8(row, iw, c, k, oi + y * w);
            }
        }
        if (!d) continue;
        const float *dxs = d + img * 2 * k, *dys = dxs + k;
        float *cx = fx, *cy = fy;
        for (int64_t y = 0; y < h; y++) {
            /* scipy 'reflect' in torch's float32 steps:
             * clamp(min(remainder(c + 0.5, 2 size) - 0.5, 2 size - 1 - that), 0, size - 1) */
            int far = 0;
            float fy0 = (float)y;
            const float *rdx = dxs + y * w, *rdy = dys + y * w;
            for (int32_t j = 0; j < iw; j++) {
                float a = (rdx[j] + (float)j) + 0.5f, b = (rdy[j] + fy0) + 0.5f;
                cx[j] = a;
                cy[j] = b;
                far |= (a <= -px) | (a >= 2.0f * px) | (b <= -py) | (b >= 2.0f * py);
            }
            if (far)  /* more than one period away (rare): their remainder first, into [0, period] */
                for (int32_t j = 0; j < iw; j++) {
                    if (cx[j] <= -px || cx[j] >= 2.0f * px) cx[j] = wrap(cx[j], px);
                    if (cy[j] <= -py || cy[j] >= 2.0f * py) cy[j] = wrap(cy[j], py);
                }
            for (int32_t j = 0; j < iw; j++) {
                /* the remainder within one period: fmod is exact there, and a negative value gains a period. A
                 * value that wrap() rounded up to the period itself drops to 0 here where torch keeps it: both
                 * mirror and clamp to 0 below. */
                float a = cx[j], b = cy[j];
                a = a < 0.0f ? a + px : (a >= px ? a - px : a);
                b = b < 0.0f ? b + py : (b >= py ? b - py : b);
                cx[j] = a;
                cy[j] = b;
            }
            for (int32_t j = 0; j < iw; j++) {
                float a = cx[j] - 0.5f, b = cy[j] - 0.5f;
                float ma = (px - 1.0f) - a, mb = (py - 1.0f) - b;
                a = ma < a ? ma : a;
                b = mb < b ? mb : b;
                a = a > 0.0f ? a : 0.0f;
                b = b > 0.0f ? b : 0.0f;
                a = a < fw - 1.0f ? a : fw - 1.0f;
                b = b < fh - 1.0f ? b : fh - 1.0f;
                int32_t ia = (int32_t)a, ib = (int32_t)b;  /* truncation is floor: both are >= 0 */
                cx[j] = a - (float)ia;
                cy[j] = b - (float)ib;
                idx[j] = ia + ib * iw;
            }
            blend_row(warped, w, iw, idx, cx, cy, row);
            to_u8(row, iw, c, k, oi + y * w);
        }
    }
}

/* spatter's capped distance transform: cv2.distanceTransform(DIST_L2, 5) (5x5 chamfer: 1, 1.4, 2.1969 in 16.16
 * fixed point) by OpenCV's own two raster passes, min'd with cap. Data are (H, W, N) with the images innermost
 * (imgproc.py's working layout), so every pixel step is a vector over the images. seeds (H, W, N) uint8: nonzero
 * at the zero pixels; out (H + 2, W + 2, N) int32, its core written; buf: (H + 4) (W + 4) N int32 scratch. */
#define HV 65536
#define DIAG 91750
#define LONG 143976
static inline void relax(int32_t *restrict p, const int32_t *restrict q, int64_t n, int32_t wt) {
    for (int64_t i = 0; i < n; i++) {
        int32_t v = q[i] + wt;
        p[i] = v < p[i] ? v : p[i];
    }
}

void chamfer_capped(const uint8_t *restrict seeds, int64_t h, int64_t w, int64_t n, int32_t cap,
                    int32_t *restrict out, int32_t *restrict buf) {
    int64_t rs = (w + 4) * n;  /* a buffer row; a 2-pixel frame at cap never shortens a path below cap */
    for (int64_t i = 0; i < (h + 4) * rs; i++) buf[i] = cap;
    for (int64_t y = 0; y < h; y++)
        for (int64_t i = 0; i < w * n; i++) buf[(y + 2) * rs + 2 * n + i] = seeds[y * w * n + i] ? 0 : cap;
    /* forward: the neighbours in the rows above (final by then: one long vector pass each over the row), then
     * the left neighbour pixel by pixel; backward mirrored. Per pixel the minimum over the same candidates as
     * OpenCV's raster pass, so the same values. */
    static const int32_t above[7][3] = {{-2, -1, LONG}, {-2, 1, LONG}, {-1, -2, LONG}, {-1, -1, DIAG}, {-1, 0, HV},
                                        {-1, 1, DIAG}, {-1, 2, LONG}};
    for (int64_t y = 2; y < h + 2; y++) {
        int32_t *p = buf + y * rs + 2 * n;
        for (int t = 0; t < 7; t++) relax(p, p + above[t][0] * rs + above[t][1] * n, w * n, above[t][2]);
        for (int64_t x = 1; x < w; x++) relax(p + x * n, p + (x - 1) * n, n, HV);
    }
    for (int64_t y = h + 1; y >= 2; y--) {
        int32_t *p = buf + y * rs + 2 * n;
        for (int t = 0; t < 7; t++) relax(p, p - above[t][0] * rs - above[t][1] * n, w * n, above[t][2]);
        for (int64_t x = w - 2; x >= 0; x--) relax(p + x * n, p + (x + 1) * n, n, HV);
    }
    for (int64_t y = 0; y < h; y++)
        for (int64_t i = 0; i < w * n; i++) {
            int32_t v = buf[(y + 2) * rs + 2 * n + i];
            out[(y + 1) * (w + 2) * n + n + i] = v < cap ? v : cap;
        }
}

/* spatter's water blend, np.uint8(clip(x + (m * f) * color, 0, 255)) per image: m (n, k) float32 the mask times
 * the liquid layer, f (n,) the per-image scale (intensity / peak), color (c,). torch's addcmul computes
 * x + v * color as one fused multiply-add (checked in the tests), so does this. */
void water_blend(const uint8_t *restrict x, int64_t n, int64_t c, int64_t k, const float *restrict m,
                 const float *restrict f, const float *restrict color, uint8_t *restrict out) {
    for (int64_t img = 0; img < n; img++)
        for (int64_t ch = 0; ch < c; ch++) {
            const uint8_t *xi = x + (img * c + ch) * k;
            const float *mi = m + img * k;
            uint8_t *o = out + (img * c + ch) * k;
            float fi = f[img], col = color[ch];
            for (int64_t i = 0; i < k; i++) {
                float v = fmaf(mi[i] * fi, col, (float)xi[i]);
                v = v > 0.0f ? v : 0.0f;
                v = v < 255.0f ? v : 255.0f;
                o[i] = (uint8_t)(int32_t)v;
            }
        }
}
