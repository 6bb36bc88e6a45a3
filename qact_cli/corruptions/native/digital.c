/* The pointwise colour and digital corruptions and fog in one pass each over uint8 images (brightness,
 * saturate, contrast, pixelate, fog; docs/corruption-fidelity.md, "Native kernels: digital"), compiled on first use by
 * digital.py and called through ctypes. Each gives the default path's bytes exactly: the same float32
 * operations in the same order and the same integer arithmetic. A multiply-add is fused (fmaf) exactly where
 * torch's op is, and every other operation rounded on its own (the pragma: GCC contracts a * b + c by
 * default; no-trapping-math only lets it turn the clamps' compares into vector blends).
 *
 * Images come planar, (N, 3, H, W) contiguous, or interleaved, (N, H, W, 3) contiguous (the channels-last
 * view the corruption gets of a numpy batch); the output has the input's layout. A pixel's channels are
 * then `plane` bytes apart and pixels `step` bytes apart: (H * W, 1) or (1, 3). The loops are written once
 * for both and specialised on those constants.
 */
#pragma GCC optimize("fp-contract=off", "no-trapping-math")
#include <math.h>
#include <stdint.h>
#include <string.h>

#define INLINE static inline __attribute__((always_inline))

#define BLOCK 512

/* brightness: out = trunc(x * factor[M]) in float32 with M the pixel's max channel, the default path's
 * product; black pixels (M = 0) read x = 1, and factor[0] is their grey level. The table read is a scalar loop
 * between vectorised ones (GCC's AVX2 gathers are no faster than loads on AMD Zen). */
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("no-tree-vectorize")))
#endif
static void take(const float *restrict table, const uint8_t *restrict k, int64_t n, float *restrict out) {
    for (int64_t i = 0; i < n; i++) out[i] = table[k[i]];
}

INLINE void brightness_image(const uint8_t *restrict x, uint8_t *restrict y, int64_t hw, int64_t plane,
                             int64_t step, const float *restrict factor) {
    uint8_t peak[BLOCK];
    float f[BLOCK];
    for (int64_t p0 = 0; p0 < hw; p0 += BLOCK) {
        int64_t len = hw - p0 < BLOCK ? hw - p0 : BLOCK;
        const uint8_t *s = x + p0 * step;
        uint8_t *d = y + p0 * step;
        for (int64_t p = 0; p < len; p++) {
            uint8_t r = s[p * step], g = s[p * step + plane], b = s[p * step + 2 * plane];
            uint8_t m = r > g ? r : g;
            peak[p] = m > b ? m : b;
        }
        take(factor, peak, len, f);
        for (int64_t p = 0; p < len; p++) {
            uint8_t black = peak[p] == 0;
            float fp = f[p];
            d[p * step] = (uint8_t)(int32_t)((float)(s[p * step] | black) * fp);
            d[p * step + plane] = (uint8_t)(int32_t)((float)(s[p * step + plane] | black) * fp);
            d[p * step + 2 * plane] = (uint8_t)(int32_t)((float)(s[p * step + 2 * plane] | black) * fp);
        }
    }
}

/* Interleaved pixels go through the planar loops a block at a time: copied apart into three planes of BLOCK
 * and back (GCC's vector code for three interleaved channels in the loops themselves costs more than the two
 * copies: measured ~1.4x slower for brightness and saturate). */
static void to_planes(const uint8_t *restrict s, uint8_t *restrict planes, int64_t len) {
    for (int64_t p = 0; p < len; p++) {
        planes[p] = s[3 * p];
        planes[BLOCK + p] = s[3 * p + 1];
        planes[2 * BLOCK + p] = s[3 * p + 2];
    }
}

static void from_planes(const uint8_t *restrict planes, uint8_t *restrict d, int64_t len) {
    for (int64_t p = 0; p < len; p++) {
        d[3 * p] = planes[p];
        d[3 * p + 1] = planes[BLOCK + p];
        d[3 * p + 2] = planes[2 * BLOCK + p];
    }
}

static void brightness_interleaved(const uint8_t *restrict x, uint8_t *restrict y, int64_t hw,
                                   const float *restrict factor) {
    uint8_t in[3 * BLOCK], res[3 * BLOCK];
    for (int64_t p0 = 0; p0 < hw; p0 += BLOCK) {
        int64_t len = hw - p0 < BLOCK ? hw - p0 : BLOCK;
        to_planes(x + 3 * p0, in, len);
        brightness_image(in, res, len, BLOCK, 1, factor);
        from_planes(res, y + 3 * p0, len);
    }
}

void dig_brightness(const uint8_t *x, uint8_t *y, int64_t n, int64_t hw, int64_t interleaved,
                    const float *factor) {
    for (int64_t i = 0; i < n; i++) {
        const uint8_t *xi = x + i * 3 * hw;
        uint8_t *yi = y + i * 3 * hw;
        if (interleaved)
            brightness_interleaved(xi, yi, hw, factor);
        else
            brightness_image(xi, yi, hw, hw, 1, factor);
    }
}

/* saturate (hsv.py's closed form): gain = clamp(S'/S) from the pixel's max M and min m, then each channel
 * M - (M - x) * gain, truncated. `clamp_only`: the offset c1 is 0 and c0 >= 0, where the default path takes
 * min(M / (M - m), c0) directly; otherwise min(max(M / (M - m) * c1 + c0, 0), M / (M - m)). `tint`: green
 * and blue of grey pixels (M = m), or NULL where the offset leaves them grey. */
INLINE void saturate_image(const uint8_t *restrict x, uint8_t *restrict y, int64_t hw, int64_t plane,
                           int64_t step, float c0, float c1, int clamp_only) {
    for (int64_t p = 0; p < hw; p++) {
        const uint8_t *s = x + p * step;
        int32_t r = s[0], g = s[plane], b = s[2 * plane];
        int32_t hi = r > g ? r : g, lo = r < g ? r : g;
        hi = hi > b ? hi : b;
        lo = lo < b ? lo : b;
        float peak = (float)hi;
        float inv_s = peak / (float)(hi - lo > 1 ? hi - lo : 1);
        float gain;
        if (clamp_only) {
            gain = inv_s < c0 ? inv_s : c0;
        } else {
            float t = inv_s * c1;
            t = t + c0;
            t = t > 0.0f ? t : 0.0f;
            gain = t < inv_s ? t : inv_s;
        }
        /* addcmul(M, M - x, gain, value=-1) = M - (M - x) * gain in one rounding: torch's CPU addcmul is a fused
         * multiply-add (checked on its vectorised loop and its tails); -tiny (the min channel where S' = 1)
         * truncates to 0 */
        uint8_t *d = y + p * step;
        d[0] = (uint8_t)(int32_t)fmaf(-(float)(hi - r), gain, peak);
        d[plane] = (uint8_t)(int32_t)fmaf(-(float)(hi - g), gain, peak);
        d[2 * plane] = (uint8_t)(int32_t)fmaf(-(float)(hi - b), gain, peak);
    }
}

INLINE void tint_image(const uint8_t *restrict x, uint8_t *restrict y, int64_t hw, int64_t plane, int64_t step,
                       const uint8_t *restrict tint) {
    for (int64_t p = 0; p < hw; p++) {
        const uint8_t *s = x + p * step;
        if (s[0] == s[plane] && s[0] == s[2 * plane]) {
            y[p * step + plane] = tint[s[0]];
            y[p * step + 2 * plane] = tint[s[0]];
        }
    }
}

static void saturate_planes(const uint8_t *restrict x, uint8_t *restrict y, int64_t hw, int64_t plane, float c0,
                            float c1, int64_t clamp_only, const uint8_t *restrict tint) {
    if (clamp_only)
        saturate_image(x, y, hw, plane, 1, c0, c1, 1);
    else
        saturate_image(x, y, hw, plane, 1, c0, c1, 0);
    if (tint)
        tint_image(x, y, hw, plane, 1, tint);
}

void dig_saturate(const uint8_t *x, uint8_t *y, int64_t n, int64_t hw, int64_t interleaved, float c0, float c1,
                  int64_t clamp_only, const uint8_t *tint) {
    uint8_t in[3 * BLOCK], res[3 * BLOCK];
    for (int64_t i = 0; i < n; i++) {
        const uint8_t *xi = x + i * 3 * hw;
        uint8_t *yi = y + i * 3 * hw;
        if (!interleaved) {
            saturate_planes(xi, yi, hw, hw, c0, c1, clamp_only, tint);
            continue;
        }
        for (int64_t p0 = 0; p0 < hw; p0 += BLOCK) {
            int64_t len = hw - p0 < BLOCK ? hw - p0 : BLOCK;
            to_planes(xi + 3 * p0, in, len);
            saturate_planes(in, res, len, BLOCK, c0, c1, clamp_only, tint);
            from_planes(res, yi + 3 * p0, len);
        }
    }
}

/* contrast, first pass: x / 255 in float32, planar (N, 3, H * W) whatever the input's layout, so that torch
 * sums each channel in the order of the default path */
void dig_unit(const uint8_t *restrict x, float *restrict v, int64_t n, int64_t hw, int64_t interleaved) {
    for (int64_t i = 0; i < n; i++) {
        const uint8_t *xi = x + i * 3 * hw;
        float *vi = v + i * 3 * hw;
        if (interleaved) {
            for (int64_t p = 0; p < hw; p++) {
                vi[p] = (float)xi[3 * p] / 255.0f;
                vi[hw + p] = (float)xi[3 * p + 1] / 255.0f;
                vi[2 * hw + p] = (float)xi[3 * p + 2] / 255.0f;
            }
        } else {
            for (int64_t p = 0; p < 3 * hw; p++) vi[p] = (float)xi[p] / 255.0f;
        }
    }
}

/* contrast, second pass: clip((x / 255 - m) * c + m, 0, 1) * 255, truncated, with m the channel's mean; every
 * step rounded to float32 as torch's in-place chain does. A channel's output depends on x alone: a 256-entry
 * table per channel, then a byte lookup per value. */
static void contrast_table(float m, float c, uint8_t *restrict t) {
    for (int32_t x = 0; x < 256; x++) {
        float v = (float)x / 255.0f;
        v = v - m;
        v = v * c;
        v = v + m;
        v = v > 0.0f ? v : 0.0f;
        v = v < 1.0f ? v : 1.0f;
        t[x] = (uint8_t)(int32_t)(v * 255.0f);
    }
}

#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("no-tree-vectorize")))
#endif
void dig_contrast(const uint8_t *restrict x, uint8_t *restrict y, int64_t n, int64_t hw, int64_t interleaved,
                  const float *restrict means, float c) {
    uint8_t t[3][256];
    for (int64_t i = 0; i < n; i++) {
        const uint8_t *xi = x + i * 3 * hw;
        uint8_t *yi = y + i * 3 * hw;
        for (int ch = 0; ch < 3; ch++) contrast_table(means[3 * i + ch], c, t[ch]);
        if (interleaved) {
            for (int64_t p = 0; p < hw; p++) {
                yi[3 * p] = t[0][xi[3 * p]];
                yi[3 * p + 1] = t[1][xi[3 * p + 1]];
                yi[3 * p + 2] = t[2][xi[3 * p + 2]];
            }
        } else {
            for (int ch = 0; ch < 3; ch++)
                for (int64_t p = 0; p < hw; p++) yi[ch * hw + p] = t[ch][xi[ch * hw + p]];
        }
    }
}

/* pixelate: Pillow's 8-bit BOX reduction of interleaved images, horizontal pass then vertical (each rounded to
 * 8 bits), output o = (S * weight[o] + 2^21) >> 22 with S the sum of count[o] source values from start[o] on
 * (a BOX output's taps are one run of equal weights; digital.py checks that on Pillow's coefficients), then
 * the enlargement's gather of whole pixels (rows[y], cols[x]) back to full size. */
/* the horizontal pass, as the numpy emulation: the running sums of 1..taps neighbouring pixels along a row are
 * whole-row shifted adds (vectorised, uint16), and each output reads its run's sum at a precomputed position
 * (pick[o] = (count[o] - 1) * row + 3 * start[o]); no branch on the runs' lengths, which alternate between
 * neighbours. `sums`: taps * 3 * n_in values. */
static void box_rows(const uint8_t *restrict src, uint8_t *restrict dst, int64_t rows, int64_t n_in, int64_t n_out,
                     int32_t taps, const int32_t *restrict pick, const uint32_t *restrict weight,
                     uint16_t *restrict sums) {
    int64_t line = 3 * n_in;
    for (int64_t r = 0; r < rows; r++) {
        const uint8_t *s = src + r * line;
        uint8_t *d = dst + r * n_out * 3;
        for (int64_t u = 0; u < line; u++) sums[u] = s[u];
        for (int32_t j = 1; j < taps; j++) {
            const uint16_t *prev = sums + (j - 1) * line;
            uint16_t *cur = sums + j * line;
            for (int64_t u = 0; u + 3 * j < line; u++) cur[u] = (uint16_t)(prev[u] + s[u + 3 * j]);
        }
        for (int64_t o = 0; o < n_out; o++) {
            const uint16_t *t = sums + pick[o];
            uint32_t w = weight[o];
            d[3 * o] = (uint8_t)((t[0] * w + (1u << 21)) >> 22);
            d[3 * o + 1] = (uint8_t)((t[1] * w + (1u << 21)) >> 22);
            d[3 * o + 2] = (uint8_t)((t[2] * w + (1u << 21)) >> 22);
        }
    }
}

/* the vertical pass: whole lines of `unit` values (the reduced row's bytes), summed line by line */
static void box_lines(const uint8_t *restrict src, uint8_t *restrict dst, int64_t n_out, int64_t unit,
                      const int32_t *restrict start, const int32_t *restrict count,
                      const uint32_t *restrict weight, uint32_t *restrict acc) {
    for (int64_t o = 0; o < n_out; o++) {
        const uint8_t *t = src + (int64_t)start[o] * unit;
        for (int64_t u = 0; u < unit; u++) acc[u] = t[u];
        for (int32_t j = 1; j < count[o]; j++)
            for (int64_t u = 0; u < unit; u++) acc[u] += t[j * unit + u];
        uint32_t w = weight[o];
        uint8_t *d = dst + o * unit;
        for (int64_t u = 0; u < unit; u++) d[u] = (uint8_t)((acc[u] * w + (1u << 21)) >> 22);
    }
}

void dig_pixelate(const uint8_t *x, uint8_t *y, int64_t n, int64_t h, int64_t w, int64_t sh, int64_t sw,
                  const int32_t *hstart, const int32_t *hcount, const uint32_t *hweight, const int32_t *vstart,
                  const int32_t *vcount, const uint32_t *vweight, const int32_t *rows, const int32_t *cols,
                  uint8_t *wide, uint32_t *acc, uint16_t *sums, int32_t *pick) {
    /* scratch from the caller: wide (h * sw * 3 + sh * sw * 3 bytes), acc (sw * 3 values), sums (taps * w * 3
     * values, taps the longest horizontal run, <= 257 for uint16 sums), pick (sw values) */
    uint8_t *small = wide + h * sw * 3;
    int32_t taps = 1;
    for (int64_t o = 0; sw != w && o < sw; o++) {
        taps = hcount[o] > taps ? hcount[o] : taps;
        pick[o] = (hcount[o] - 1) * (int32_t)(3 * w) + 3 * hstart[o];
    }
    for (int64_t i = 0; i < n; i++) {
        const uint8_t *xi = x + i * h * w * 3;
        uint8_t *yi = y + i * h * w * 3;
        const uint8_t *across = xi;
        if (sw != w) {
            box_rows(xi, wide, h, w, sw, taps, pick, hweight, sums);
            across = wide;
        }
        const uint8_t *reduced = across;
        if (sh != h) {
            box_lines(across, small, sh, sw * 3, vstart, vcount, vweight, acc);
            reduced = small;
        }
        for (int64_t r = 0; r < h; r++) {
            uint8_t *d = yi + r * w * 3;
            if (r > 0 && rows[r] == rows[r - 1]) {
                memcpy(d, d - w * 3, (size_t)(w * 3));
                continue;
            }
            const uint8_t *s = reduced + (int64_t)rows[r] * sw * 3;
            for (int64_t c = 0; c < w; c++) {
                const uint8_t *p = s + (int64_t)cols[c] * 3;
                d[3 * c] = p[0];
                d[3 * c + 1] = p[1];
                d[3 * c + 2] = p[2];
            }
        }
    }
}

/* min (or max) of n >= 1 floats, in 8 lanes so that it vectorises (exact in any order) */
static float extreme(const float *restrict v, int64_t n, int want_max) {
    float lane[8];
    for (int j = 0; j < 8; j++) lane[j] = v[0];
    int64_t p = 0;
    for (; p + 8 <= n; p += 8)
        for (int j = 0; j < 8; j++) {
            float a = v[p + j];
            lane[j] = want_max ? (a > lane[j] ? a : lane[j]) : (a < lane[j] ? a : lane[j]);
        }
    for (; p < n; p++) lane[0] = want_max ? (v[p] > lane[0] ? v[p] : lane[0]) : (v[p] < lane[0] ? v[p] : lane[0]);
    float e = lane[0];
    for (int j = 1; j < 8; j++) e = want_max ? (lane[j] > e ? lane[j] : e) : (lane[j] < e ? lane[j] : e);
    return e;
}

/* fog's plasma fractal (weather.py's plasma_fractal, the reference's diamond-square): each level turns the k x k
 * grid g of the points so far into the 2k x 2k grid, with wrap-around neighbours, the same float32 sums in the
 * same order as the torch levels: r = g + g[i+1, j] (rows), d = n0 + 0.25 (r + r[i, j+1]) the square centres,
 * l = n1 + 0.25 ((d + d[i-1, j]) + (g + g[i, j+1])), t = n2 + 0.25 ((d + d[i, j-1]) + r), and the next grid
 * interleaves g, l (even rows) and t, d (odd rows). The noise n is the level's U(-1, 1) draws times
 * scale[level] = wibble^2 (a float32 product, as torch's mul_). Then the map is shifted by its min and divided
 * by its max (in fog_blend, from the lo and hi returned here). `noise`: the image's draws, level after level;
 * `out`: size x size; scratch: 2 size^2 floats. */
static void plasma_map(const float *restrict noise, float *restrict out, int64_t size, const float *restrict scale,
                       float *restrict scratch, float *lo, float *hi) {
    int64_t levels = 0;
    while ((1 << levels) < size) levels++;
    float *spare = scratch, *quarter = scratch + size * size; /* r, d, l, t: (size / 2)^2 each */
    int64_t q = (size / 2) * (size / 2);
    float *r = quarter, *d = quarter + q, *l = quarter + 2 * q, *t = quarter + 3 * q;
    float first = 0.0f;
    const float *g = &first;
    for (int64_t lv = 0, k = 1; lv < levels; lv++, k *= 2) {
        float *next = (levels - 1 - lv) % 2 == 0 ? out : spare;
        const float *n0 = noise, *n1 = noise + k * k, *n2 = noise + 2 * k * k;
        float s = scale[lv];
        noise += 3 * k * k;
        for (int64_t i = 0; i < k; i++) {
            const float *gi = g + i * k, *gd = g + (i + 1 < k ? i + 1 : 0) * k;
            for (int64_t j = 0; j < k; j++) r[i * k + j] = gi[j] + gd[j];
        }
        /* the wrap-around neighbour j + 1 (or j - 1) of the last (first) column is taken apart, so the rows'
         * loops run on plain shifted arrays */
        for (int64_t i = 0; i < k; i++) {
            const float *ri = r + i * k, *ni = n0 + i * k;
            float *di = d + i * k;
            for (int64_t j = 0; j + 1 < k; j++) di[j] = ni[j] * s + 0.25f * (ri[j] + ri[j + 1]);
            di[k - 1] = ni[k - 1] * s + 0.25f * (ri[k - 1] + ri[0]);
        }
        for (int64_t i = 0; i < k; i++) {
            const float *di = d + i * k, *du = d + (i > 0 ? i - 1 : k - 1) * k, *gi = g + i * k, *ri = r + i * k;
            const float *m1 = n1 + i * k, *m2 = n2 + i * k;
            float *li = l + i * k, *ti = t + i * k;
            li[k - 1] = m1[k - 1] * s + 0.25f * ((di[k - 1] + du[k - 1]) + (gi[k - 1] + gi[0]));
            for (int64_t j = 0; j + 1 < k; j++) li[j] = m1[j] * s + 0.25f * ((di[j] + du[j]) + (gi[j] + gi[j + 1]));
            ti[0] = m2[0] * s + 0.25f * ((di[0] + di[k - 1]) + ri[0]);
            for (int64_t j = 1; j < k; j++) ti[j] = m2[j] * s + 0.25f * ((di[j] + di[j - 1]) + ri[j]);
        }
        for (int64_t i = 0; i < k; i++) {
            float *even = next + 2 * i * 2 * k, *odd = even + 2 * k;
            for (int64_t j = 0; j < k; j++) {
                even[2 * j] = g[i * k + j];
                even[2 * j + 1] = l[i * k + j];
                odd[2 * j] = t[i * k + j];
                odd[2 * j + 1] = d[i * k + j];
            }
        }
        g = next;
    }
    /* the normalisation (map - min) / max(map - min) is left to the blend, on the pixels it uses; the max of the
     * shifted map is the shifted max (rounding is monotonic) */
    *lo = extreme(out, size * size, 0);
    *hi = extreme(out, size * size, 1) - *lo;
}

/* fog's blend: trunc(clip(x * a + map * b, 0, 255)) (a = max / (max + strength), b = 255 strength a, computed
 * by the caller as the default path does), map = (fractal - lo) / hi on the top-left h x w of the size x size
 * fractal; every operation rounded apart, in the default path's order */
static void fog_blend(const uint8_t *restrict xi, uint8_t *restrict yi, int64_t h, int64_t w, int64_t interleaved,
                      const float *restrict mi, int64_t size, float lo, float hi, float ai, float bi,
                      float *restrict layer) {
    for (int64_t row = 0; row < h; row++) {
        const float *m = mi + row * size;
        if (interleaved) { /* the row's layer spread to its three channels, then one flat loop */
            const uint8_t *s = xi + row * w * 3;
            uint8_t *d = yi + row * w * 3;
            for (int64_t col = 0; col < w; col++) {
                float f = (m[col] - lo) / hi * bi;
                layer[3 * col] = layer[3 * col + 1] = layer[3 * col + 2] = f;
            }
            for (int64_t u = 0; u < 3 * w; u++) {
                float v = (float)s[u] * ai + layer[u];
                v = v > 0.0f ? v : 0.0f;
                v = v < 255.0f ? v : 255.0f;
                d[u] = (uint8_t)(int32_t)v;
            }
        } else {
            for (int64_t col = 0; col < w; col++) layer[col] = (m[col] - lo) / hi * bi;
            for (int64_t c = 0; c < 3; c++) {
                const uint8_t *s = xi + c * h * w + row * w;
                uint8_t *d = yi + c * h * w + row * w;
                for (int64_t col = 0; col < w; col++) {
                    float v = (float)s[col] * ai + layer[col];
                    v = v > 0.0f ? v : 0.0f;
                    v = v < 255.0f ? v : 255.0f;
                    d[col] = (uint8_t)(int32_t)v;
                }
            }
        }
    }
}

/* fog, image by image (the map stays in cache between its two passes): `noise` holds each image's `per_image`
 * draws, level after level; scratch: 3 size^2 floats (the blend reuses the fractal's scratch for a row) */
void dig_fog(const uint8_t *x, uint8_t *y, int64_t n, int64_t h, int64_t w, int64_t interleaved, const float *noise,
             int64_t per_image, int64_t size, const float *scale, const float *a, const float *b, float *scratch) {
    float *map = scratch + 2 * size * size;
    for (int64_t i = 0; i < n; i++) {
        float lo, hi;
        plasma_map(noise + i * per_image, map, size, scale, scratch, &lo, &hi);
        fog_blend(x + i * 3 * h * w, y + i * 3 * h * w, h, w, interleaved, map, size, lo, hi, a[i], b[i], scratch);
    }
}
