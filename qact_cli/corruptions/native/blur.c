/* The blur family's opt-in CPU kernels (docs/corruption-fidelity.md, "Native kernels: blur"): compiled on
 * first use by blur.py beside this file and called through ctypes, once per batch (or per thread's share
 * of it), so that one pass over a plane does what the torch path does in one pass per tap.
 *
 * Planes are contiguous (H, W), either uint8 (the corruptions' input and output) or float32; an 8-bit
 * output is np.uint8(np.clip(v, 0, 255)) of the float result, the reference's truncation. Every sum is
 * float32 as in the torch path; only its order differs (within float rounding of it). Borders are index
 * folds (filters.py, fold_index): 0 "nearest" (a a | a b), 1 "symmetric" (b a | a b), 2 "reflect101"
 * (c b | a b c). Work buffers are one plane or one row per call, malloc'd by the calling thread.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { NEAREST = 0, SYMMETRIC = 1, REFLECT101 = 2 };

/* fold_index of filters.py for one index, any distance from the image */
static int64_t fold(int64_t i, int64_t n, int64_t mode) {
    if (mode == NEAREST || n == 1) return i < 0 ? 0 : (i >= n ? n - 1 : i);
    int64_t period = mode == SYMMETRIC ? 2 * n : 2 * n - 2;
    i %= period;
    if (i < 0) i += period;
    if (mode == SYMMETRIC) return i >= n ? period - 1 - i : i;
    return i >= n ? period - i : i;
}

/* out[x] = clip(v[x], 0, 255) truncated, NaN -> 0 (numpy's cast of the default path gives 0 there too) */
static void store_u8(const float *restrict v, uint8_t *restrict out, int64_t n) {
    for (int64_t x = 0; x < n; x++) {
        float c = v[x] > 0.0f ? v[x] : 0.0f;
        c = c < 255.0f ? c : 255.0f;
        out[x] = (uint8_t)(int32_t)c;
    }
}

/* the same for values on the 0..1 scale: clip(v, 0, 1) * 255 truncated (base.py, unit_to_uint8) */
static void store_unit_u8(const float *restrict v, uint8_t *restrict out, int64_t n) {
    for (int64_t x = 0; x < n; x++) {
        float c = v[x] > 0.0f ? v[x] : 0.0f;
        c = c < 1.0f ? c : 1.0f;
        out[x] = (uint8_t)(int32_t)(c * 255.0f);
    }
}

/* ------------------------------------------------------------------ separable Gaussian (gaussian_filter) */

/* Sums run over blocks of 4 vectors of 8 floats whose partial sums stay in registers across the taps (a loop
 * per tap over the whole row stores and reloads them at every tap; written with plain arrays, GCC 12 spills
 * or gathers them: measured 2-3x slower). GCC/Clang vector extensions, split by the compiler where the CPU
 * has no 256-bit vectors; unaligned loads through memcpy. */
typedef float vf __attribute__((vector_size(32)));
#define VL 8
#define BLOCK (4 * VL)

static inline vf ldf(const float *p) {
    vf v;
    memcpy(&v, p, sizeof v);
    return v;
}
static inline void stf(float *p, vf v) { memcpy(p, &v, sizeof v); }
/* the pair a + b */
static inline vf pair(const float *a, const float *b) { return ldf(a) + ldf(b); }

/* acc = w[0] * row(y) + sum_k w[k] (row(y - k) + row(y + k)): the vertical pass for one output row, the
 * symmetric taps folded (scipy's correlate1d does the same for symmetric weights) */
static void vertical(const float *plane, int64_t h, int64_t w, int64_t y, const float *wt, int64_t r, int64_t mode,
                     float *acc, const float **rows) {
    for (int64_t k = 1; k <= r; k++) {
        rows[2 * k - 2] = plane + fold(y - k, h, mode) * w;
        rows[2 * k - 1] = plane + fold(y + k, h, mode) * w;
    }
    const float *c = plane + y * w;
    int64_t x0 = 0;
    for (; x0 + BLOCK <= w; x0 += BLOCK) {
        const vf w0 = {wt[0], wt[0], wt[0], wt[0], wt[0], wt[0], wt[0], wt[0]};
        vf s0 = w0 * ldf(c + x0), s1 = w0 * ldf(c + x0 + VL);
        vf s2 = w0 * ldf(c + x0 + 2 * VL), s3 = w0 * ldf(c + x0 + 3 * VL);
        for (int64_t k = 1; k <= r; k++) {
            const float *a = rows[2 * k - 2] + x0, *b = rows[2 * k - 1] + x0;
            const float wk = wt[k];
            s0 += wk * pair(a, b);
            s1 += wk * pair(a + VL, b + VL);
            s2 += wk * pair(a + 2 * VL, b + 2 * VL);
            s3 += wk * pair(a + 3 * VL, b + 3 * VL);
        }
        stf(acc + x0, s0);
        stf(acc + x0 + VL, s1);
        stf(acc + x0 + 2 * VL, s2);
        stf(acc + x0 + 3 * VL, s3);
    }
    for (int64_t x = x0; x < w; x++) acc[x] = wt[0] * c[x];
    for (int64_t k = 1; k <= r; k++) {
        const float *a = rows[2 * k - 2], *b = rows[2 * k - 1];
        const float wk = wt[k];
        for (int64_t x = x0; x < w; x++) acc[x] += wk * (a[x] + b[x]);
    }
}

/* out[x] = w[0] t[x] + sum_k w[k] (t[x - k] + t[x + k]) over a row t padded by r on both sides */
static void horizontal(const float *t, int64_t w, const float *wt, int64_t r, float *out) {
    int64_t x0 = 0;
    for (; x0 + BLOCK <= w; x0 += BLOCK) {
        const float *c = t + x0;
        vf s0 = wt[0] * ldf(c), s1 = wt[0] * ldf(c + VL), s2 = wt[0] * ldf(c + 2 * VL), s3 = wt[0] * ldf(c + 3 * VL);
        for (int64_t k = 1; k <= r; k++) {
            const float wk = wt[k];
            const float *a = c - k, *b = c + k;
            s0 += wk * pair(a, b);
            s1 += wk * pair(a + VL, b + VL);
            s2 += wk * pair(a + 2 * VL, b + 2 * VL);
            s3 += wk * pair(a + 3 * VL, b + 3 * VL);
        }
        stf(out + x0, s0);
        stf(out + x0 + VL, s1);
        stf(out + x0 + 2 * VL, s2);
        stf(out + x0 + 3 * VL, s3);
    }
    for (int64_t x = x0; x < w; x++) out[x] = wt[0] * t[x];
    for (int64_t k = 1; k <= r; k++) {
        const float wk = wt[k];
        for (int64_t x = x0; x < w; x++) out[x] += wk * (t[x - k] + t[x + k]);
    }
}

/* `planes` (H, W) planes, u8 or f32 in (src_u8), u8 or f32 out (dst_u8): the vertical pass with taps
 * wv[0..rv] (centre first) into a row padded by the horizontal fold, then the horizontal pass with wh[0..rh].
 * One row at a time, so a row never leaves the L1 cache between the passes; an 8-bit plane is converted to
 * floats once first (converting in the taps' loop costs a conversion per tap). With `unit`, 8-bit values
 * are x / 255 in (base.py, unit: a division, as torch's) and clip(v, 0, 1) * 255 out, so that the 8-bit
 * entry gives the bytes of the float entry on unit(x) followed by unit_to_uint8. */
void blur_gaussian(const void *src, int64_t src_u8, void *dst, int64_t dst_u8, int64_t planes, int64_t h,
                   int64_t w, const float *wv, int64_t rv, const float *wh, int64_t rh, int64_t mode,
                   int64_t unit) {
    float *row = malloc(sizeof(float) * (size_t)(w + 2 * rh));
    float *out = malloc(sizeof(float) * (size_t)w);
    float *conv = src_u8 ? malloc(sizeof(float) * (size_t)(h * w)) : NULL;
    const float **rows = malloc(sizeof(float *) * (size_t)(2 * rv + 1));
    int64_t *left = malloc(sizeof(int64_t) * (size_t)(2 * rh + 1)), *right = left + rh;
    for (int64_t k = 1; k <= rh; k++) {  /* where the pads' values come from */
        left[k - 1] = fold(-k, w, mode);
        right[k] = fold(w - 1 + k, w, mode);
    }
    float *mid = row + rh;
    for (int64_t p = 0; p < planes; p++) {
        const float *plane = (const float *)src + p * h * w;
        if (src_u8) {
            const uint8_t *restrict s = (const uint8_t *)src + p * h * w;
            if (unit)
                for (int64_t i = 0; i < h * w; i++) conv[i] = (float)s[i] / 255.0f;
            else
                for (int64_t i = 0; i < h * w; i++) conv[i] = (float)s[i];
            plane = conv;
        }
        for (int64_t y = 0; y < h; y++) {
            vertical(plane, h, w, y, wv, rv, mode, mid, rows);
            for (int64_t k = 1; k <= rh; k++) {
                mid[-k] = mid[left[k - 1]];
                mid[w - 1 + k] = mid[right[k]];
            }
            if (dst_u8) {
                horizontal(mid, w, wh, rh, out);
                (unit ? store_unit_u8 : store_u8)(out, (uint8_t *)dst + (p * h + y) * w, w);
            } else {
                horizontal(mid, w, wh, rh, (float *)dst + (p * h + y) * w);
            }
        }
    }
    free(left);
    free(rows);
    free(conv);
    free(out);
    free(row);
}

/* ------------------------------------------------------------------------------ motion blur */

/* Images (N, C, H, W), u8 or f32 in, u8 or f32 out, blurred along ImageMagick's motion line (filters.py,
 * motion_blur): image i's taps t = 0..taps-1 read (y + dy[i, t], x + dx[i, t]) with weight weights[t], borders
 * replicated. As the torch path does: taps from the first that reaches the image size on are dropped, and
 * consecutive taps that read the same offset merge into one, their weights summed in double in tap order
 * (filters.py, _merged_taps) and then rounded to float. Each plane is copied once into a float plane padded
 * by replicated edges; every output row is then a sum of shifted contiguous rows of it, in tap order. */
void blur_motion(const void *src, int64_t src_u8, void *dst, int64_t dst_u8, int64_t n, int64_t c, int64_t h,
                 int64_t w, const int64_t *dy, const int64_t *dx, const double *weights, int64_t taps) {
    int32_t *ty = malloc(sizeof(int32_t) * (size_t)(2 * n * taps)), *tx = ty + n * taps;
    float *tw = malloc(sizeof(float) * (size_t)(n * taps));
    int64_t *count = malloc(sizeof(int64_t) * (size_t)n);
    int64_t top = 0, bottom = 0, left = 0, right = 0;
    for (int64_t i = 0; i < n; i++) {
        const int64_t *iy = dy + i * taps, *ix = dx + i * taps;
        int64_t steps = 0;
        double sum = 0.0;
        for (int64_t t = 0; t < taps; t++) {
            if (llabs(iy[t]) >= h || llabs(ix[t]) >= w) break;  /* never at t = 0, which is (0, 0) */
            if (t == 0 || iy[t] != iy[t - 1] || ix[t] != ix[t - 1]) {
                if (t) tw[i * taps + steps - 1] = (float)sum;
                ty[i * taps + steps] = (int32_t)iy[t];
                tx[i * taps + steps] = (int32_t)ix[t];
                steps++;
                sum = 0.0;
                top = -iy[t] > top ? -iy[t] : top;
                bottom = iy[t] > bottom ? iy[t] : bottom;
                left = -ix[t] > left ? -ix[t] : left;
                right = ix[t] > right ? ix[t] : right;
            }
            sum += weights[t];
        }
        if (steps) tw[i * taps + steps - 1] = (float)sum;
        count[i] = steps;
    }
    const int64_t hp = h + top + bottom, wp = w + left + right;
    float *pad = malloc(sizeof(float) * (size_t)(hp * wp));
    float *acc = malloc(sizeof(float) * (size_t)w);
    for (int64_t i = 0; i < n; i++) {
        const int32_t *iy = ty + i * taps, *ix = tx + i * taps;
        const float *iw = tw + i * taps;
        const int64_t steps = count[i];
        for (int64_t ch = 0; ch < c; ch++) {
            const int64_t plane = (i * c + ch) * h * w;
            for (int64_t y = 0; y < h; y++) {
                float *restrict d = pad + (y + top) * wp + left;
                if (src_u8) {
                    const uint8_t *restrict s = (const uint8_t *)src + plane + y * w;
                    for (int64_t x = 0; x < w; x++) d[x] = (float)s[x];
                } else {
                    memcpy(d, (const float *)src + plane + y * w, sizeof(float) * (size_t)w);
                }
                for (int64_t x = 1; x <= left; x++) d[-x] = d[0];
                for (int64_t x = 0; x < right; x++) d[w + x] = d[w - 1];
            }
            for (int64_t y = 0; y < top; y++) memcpy(pad + y * wp, pad + top * wp, sizeof(float) * (size_t)wp);
            for (int64_t y = top + h; y < hp; y++)
                memcpy(pad + y * wp, pad + (top + h - 1) * wp, sizeof(float) * (size_t)wp);
            for (int64_t y = 0; y < h; y++) {
                const float *at = pad + (y + top) * wp + left;  /* tap 0 reads the pixel itself (0, 0) */
                float *o = acc;
                int64_t x0 = 0;
                for (; x0 + BLOCK <= w; x0 += BLOCK) {
                    const float *c0 = at + x0;
                    vf s0 = iw[0] * ldf(c0), s1 = iw[0] * ldf(c0 + VL);
                    vf s2 = iw[0] * ldf(c0 + 2 * VL), s3 = iw[0] * ldf(c0 + 3 * VL);
                    for (int64_t s = 1; s < steps; s++) {
                        const float ws = iw[s];
                        const float *b = c0 + (int64_t)iy[s] * wp + ix[s];
                        s0 += ws * ldf(b);
                        s1 += ws * ldf(b + VL);
                        s2 += ws * ldf(b + 2 * VL);
                        s3 += ws * ldf(b + 3 * VL);
                    }
                    stf(o + x0, s0);
                    stf(o + x0 + VL, s1);
                    stf(o + x0 + 2 * VL, s2);
                    stf(o + x0 + 3 * VL, s3);
                }
                for (int64_t x = x0; x < w; x++) o[x] = iw[0] * at[x];
                for (int64_t s = 1; s < steps; s++) {
                    const float ws = iw[s];
                    const float *b = at + (int64_t)iy[s] * wp + ix[s];
                    for (int64_t x = x0; x < w; x++) o[x] += ws * b[x];
                }
                if (dst_u8)
                    store_u8(acc, (uint8_t *)dst + plane + y * w, w);
                else
                    memcpy((float *)dst + plane + y * w, acc, sizeof(float) * (size_t)w);
            }
        }
    }
    free(acc);
    free(pad);
    free(count);
    free(tw);
    free(ty);
}

/* --------------------------------------------------------------------------- defocus blur */

/* u8 planes (H, W) -> u8: cv2.filter2D with the anti-aliased disk as blur.py's _defocus_columns computes it
 * (reflect-101 borders): v = a + g (b + c) along both axes on the image padded by reach + 1, then per output
 * row a column box growing by a row above and below at a time, added at columns +-d when its half-height is
 * the disk's at |d| (halves[0..reach]), and the sum times `scale`: the same operations in the same order as
 * the torch path. The padded, pre-blurred plane is built once per plane; per output row, the growing box of
 * a block of columns stays in registers and is kept at the heights the disk uses, then the column sums run
 * over blocks of outputs. */
void blur_defocus(const uint8_t *src, uint8_t *dst, int64_t planes, int64_t h, int64_t w, float g,
                  const int32_t *halves, int64_t reach, float scale) {
    const int64_t r = reach, hb = h + 2 * r, wb = w + 2 * r, hv = hb + 2, wv = wb + 2;
    int64_t maxh = 0;
    for (int64_t d = 0; d <= r; d++) maxh = halves[d] > maxh ? halves[d] : maxh;
    /* the column terms in the torch path's order: (height, column offset into the box row) */
    int64_t *term_k = malloc(sizeof(int64_t) * (size_t)(4 * r + 2)), *term_c = term_k + 2 * r + 1, terms = 0;
    char *keep = calloc((size_t)(maxh + 1), 1);
    for (int64_t k = 0; k <= maxh; k++)
        for (int64_t d = 0; d <= r; d++) {
            if (halves[d] != k) continue;
            keep[k] = 1;
            for (int side = 0; side < (d == 0 ? 1 : 2); side++) {
                term_k[terms] = k;
                term_c[terms++] = side == 0 ? r + d : r - d;
            }
        }
    float *pad = malloc(sizeof(float) * (size_t)(hv * wv));  /* the image padded by reach + 1 */
    float *b = malloc(sizeof(float) * (size_t)(hb * wb));    /* pre-blurred, padded by reach */
    float *v = malloc(sizeof(float) * (size_t)wv);
    float *snap = malloc(sizeof(float) * (size_t)((maxh + 1) * wb + VL));
    float *out = malloc(sizeof(float) * (size_t)w);
    for (int64_t p = 0; p < planes; p++) {
        const uint8_t *img = src + p * h * w;
        for (int64_t i = 0; i < hv; i++) {
            const uint8_t *restrict row = img + fold(i - r - 1, h, REFLECT101) * w;
            float *restrict d = pad + i * wv;
            for (int64_t x = 0; x < w; x++) d[r + 1 + x] = (float)row[x];
            for (int64_t j = 0; j < r + 1; j++) {
                d[j] = (float)row[fold(j - r - 1, w, REFLECT101)];
                d[wv - 1 - j] = (float)row[fold(w + r - j, w, REFLECT101)];
            }
        }
        for (int64_t i = 0; i < hb; i++) {
            const float *restrict pa = pad + i * wv, *restrict pb = pa + wv, *restrict pc = pb + wv;
            for (int64_t j = 0; j < wv; j++) v[j] = pb[j] + (pa[j] + pc[j]) * g;
            float *restrict bi = b + i * wb;
            for (int64_t j = 0; j < wb; j++) bi[j] = v[j + 1] + (v[j] + v[j + 2]) * g;
        }
        for (int64_t y = 0; y < h; y++) {
            const float *c0 = b + (r + y) * wb;
            int64_t j0 = 0;
            for (; j0 + BLOCK <= wb; j0 += BLOCK) {  /* four independent chains hide the adds' latency */
                const float *c = c0 + j0;
                vf b0 = ldf(c), b1 = ldf(c + VL), b2 = ldf(c + 2 * VL), b3 = ldf(c + 3 * VL);
                for (int64_t k = 0; k <= maxh; k++) {
                    if (k) {
                        const float *a = c - k * wb, *e = c + k * wb;
                        b0 = (b0 + ldf(a)) + ldf(e);
                        b1 = (b1 + ldf(a + VL)) + ldf(e + VL);
                        b2 = (b2 + ldf(a + 2 * VL)) + ldf(e + 2 * VL);
                        b3 = (b3 + ldf(a + 3 * VL)) + ldf(e + 3 * VL);
                    }
                    if (keep[k]) {
                        float *o = snap + k * wb + j0;
                        stf(o, b0);
                        stf(o + VL, b1);
                        stf(o + 2 * VL, b2);
                        stf(o + 3 * VL, b3);
                    }
                }
            }
            for (; j0 + VL <= wb; j0 += VL) {
                vf box = ldf(c0 + j0);
                if (keep[0]) stf(snap + j0, box);
                for (int64_t k = 1; k <= maxh; k++) {
                    box = (box + ldf(c0 - k * wb + j0)) + ldf(c0 + k * wb + j0);
                    if (keep[k]) stf(snap + k * wb + j0, box);
                }
            }
            for (int64_t j = j0; j < wb; j++) {
                float box = c0[j];
                snap[j] = box;
                for (int64_t k = 1; k <= maxh; k++) {
                    box = (box + c0[j - k * wb]) + c0[j + k * wb];
                    snap[k * wb + j] = box;
                }
            }
            int64_t x0 = 0;
            for (; x0 + BLOCK <= w; x0 += BLOCK) {
                const float *t = snap + term_k[0] * wb + term_c[0] + x0;
                vf s0 = ldf(t), s1 = ldf(t + VL), s2 = ldf(t + 2 * VL), s3 = ldf(t + 3 * VL);
                for (int64_t q = 1; q < terms; q++) {
                    t = snap + term_k[q] * wb + term_c[q] + x0;
                    s0 += ldf(t);
                    s1 += ldf(t + VL);
                    s2 += ldf(t + 2 * VL);
                    s3 += ldf(t + 3 * VL);
                }
                stf(out + x0, s0 * scale);
                stf(out + x0 + VL, s1 * scale);
                stf(out + x0 + 2 * VL, s2 * scale);
                stf(out + x0 + 3 * VL, s3 * scale);
            }
            for (int64_t x = x0; x < w; x++) {
                float o = snap[term_k[0] * wb + term_c[0] + x];
                for (int64_t q = 1; q < terms; q++) o += snap[term_k[q] * wb + term_c[q] + x];
                out[x] = o * scale;
            }
            store_u8(out, dst + (p * h + y) * w, w);
        }
    }
    free(out);
    free(snap);
    free(v);
    free(b);
    free(pad);
    free(keep);
    free(term_k);
}

/* ------------------------------------------------------------------------------ glass blur */

/* glass_blur's local pixel "swaps" in place on n images of c u8 planes (H, W), the reference loop itself
 * (make_imagenet_c.py, glass_blur): `iters` passes visiting rows H-d .. d+1 and columns W-d .. d+1 in
 * descending order, each `x[h, w], x[h', w'] = x[h', w'], x[h, w]` on numpy views, which copies x[h', w'] into
 * x[h, w] and leaves x[h', w'] as it is. codes (n, iters, H - 2d, W - 2d), rows and columns ascending, as
 * blur.py's _glass_shuffle_map draws them: dy = code / 2d - d, dx = code % 2d - d. Integer moves only, so the
 * bytes are those of the default path's map. */
void blur_glass_shuffle(uint8_t *planes, int64_t n, int64_t c, int64_t h, int64_t w, int64_t d, int64_t iters,
                        const int32_t *codes) {
    const int64_t nh = h - 2 * d, nw = w - 2 * d, side = 2 * d, hw = h * w;
    int32_t step[64];  /* code -> flat offset (d <= 4 in every profile; larger d reads it from `far`) */
    int32_t *far = side * side > 64 ? malloc(sizeof(int32_t) * (size_t)(side * side)) : step;
    for (int64_t code = 0; code < side * side; code++) far[code] = (int32_t)((code / side - d) * w + code % side - d);
    /* up to 4 channels move as one 32-bit word per pixel: one load and one store per visit */
    const int64_t lanes = c <= 4 ? c : 1;
    uint32_t *px = malloc(sizeof(uint32_t) * (size_t)hw);
    for (int64_t i = 0; i < n; i++) {
        uint8_t *img = planes + i * c * hw;
        for (int64_t c0 = 0; c0 < c; c0 += lanes) {
            for (int64_t p = 0; p < hw; p++) px[p] = 0;
            for (int64_t ch = 0; ch < lanes; ch++) {
                const uint8_t *restrict src = img + (c0 + ch) * hw;
                for (int64_t p = 0; p < hw; p++) px[p] |= (uint32_t)src[p] << (8 * ch);
            }
            for (int64_t it = 0; it < iters; it++) {
                const int32_t *pass = codes + (i * iters + it) * nh * nw;
                for (int64_t a = nh - 1; a >= 0; a--) {
                    const int32_t *row = pass + a * nw;
                    uint32_t *at = px + (d + 1 + a) * w + d + 1;
                    for (int64_t b = nw - 1; b >= 0; b--) at[b] = at[b + far[row[b]]];
                }
            }
            for (int64_t ch = 0; ch < lanes; ch++) {
                uint8_t *restrict dst = img + (c0 + ch) * hw;
                for (int64_t p = 0; p < hw; p++) dst[p] = (uint8_t)(px[p] >> (8 * ch));
            }
        }
    }
    free(px);
    if (far != step) free(far);
}
