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

/* ------------------------------------------------------------------ separable Gaussian (gaussian_filter) */

/* acc = w[0] * row(y) + sum_k w[k] (row(y - k) + row(y + k)): the vertical pass for one output row, the
 * symmetric taps folded (scipy's correlate1d does the same for symmetric weights) */
#define VERTICAL(T)                                                                                   \
    static void vertical_##T(const T *plane, int64_t h, int64_t w, int64_t y, const float *wt,        \
                             int64_t r, int64_t mode, float *restrict acc) {                          \
        const T *restrict c = plane + y * w;                                                          \
        for (int64_t x = 0; x < w; x++) acc[x] = wt[0] * (float)c[x];                                 \
        for (int64_t k = 1; k <= r; k++) {                                                            \
            const T *restrict a = plane + fold(y - k, h, mode) * w;                                   \
            const T *restrict b = plane + fold(y + k, h, mode) * w;                                   \
            const float wk = wt[k];                                                                   \
            for (int64_t x = 0; x < w; x++) acc[x] += wk * ((float)a[x] + (float)b[x]);               \
        }                                                                                             \
    }
VERTICAL(uint8_t)
VERTICAL(float)

/* out[x] = w[0] t[x] + sum_k w[k] (t[x - k] + t[x + k]) over a row t padded by r on both sides */
static void horizontal(const float *restrict t, int64_t w, const float *wt, int64_t r, float *restrict out) {
    for (int64_t x = 0; x < w; x++) out[x] = wt[0] * t[x];
    for (int64_t k = 1; k <= r; k++) {
        const float wk = wt[k];
        const float *restrict a = t - k, *restrict b = t + k;
        for (int64_t x = 0; x < w; x++) out[x] += wk * (a[x] + b[x]);
    }
}

/* `planes` (H, W) planes, u8 or f32 in (src_u8), u8 or f32 out (dst_u8): the vertical pass with taps
 * wv[0..rv] (centre first) into a row padded by the horizontal fold, then the horizontal pass with wh[0..rh].
 * One row at a time, so a row never leaves the L1 cache between the passes. */
void blur_gaussian(const void *src, int64_t src_u8, void *dst, int64_t dst_u8, int64_t planes, int64_t h,
                   int64_t w, const float *wv, int64_t rv, const float *wh, int64_t rh, int64_t mode) {
    float *row = malloc(sizeof(float) * (size_t)(w + 2 * rh));
    float *out = malloc(sizeof(float) * (size_t)w);
    int64_t *left = malloc(sizeof(int64_t) * (size_t)(2 * rh + 1)), *right = left + rh;
    for (int64_t k = 1; k <= rh; k++) {  /* where the pads' values come from */
        left[k - 1] = fold(-k, w, mode);
        right[k] = fold(w - 1 + k, w, mode);
    }
    float *mid = row + rh;
    for (int64_t p = 0; p < planes; p++) {
        for (int64_t y = 0; y < h; y++) {
            if (src_u8)
                vertical_uint8_t((const uint8_t *)src + p * h * w, h, w, y, wv, rv, mode, mid);
            else
                vertical_float((const float *)src + p * h * w, h, w, y, wv, rv, mode, mid);
            for (int64_t k = 1; k <= rh; k++) {
                mid[-k] = mid[left[k - 1]];
                mid[w - 1 + k] = mid[right[k]];
            }
            if (dst_u8) {
                horizontal(mid, w, wh, rh, out);
                store_u8(out, (uint8_t *)dst + (p * h + y) * w, w);
            } else {
                horizontal(mid, w, wh, rh, (float *)dst + (p * h + y) * w);
            }
        }
    }
    free(left);
    free(out);
    free(row);
}

/* ------------------------------------------------------------------------------ motion blur */

/* Images (N, C, H, W), u8 or f32 in, u8 or f32 out. Image i's taps s = 0..steps-1 read (y + dy, x + dx)
 * with weight wt (rows of (N, steps); tap 0 is the pixel itself, weight 0 = no tap), borders replicated:
 * each plane is copied once into a float plane padded by (top, bottom, left, right) replicated edges, then
 * every output row is a sum of shifted contiguous rows of it, taps in the torch path's order. */
void blur_motion(const void *src, int64_t src_u8, void *dst, int64_t dst_u8, int64_t n, int64_t c, int64_t h,
                 int64_t w, const int32_t *dy, const int32_t *dx, const float *wt, int64_t steps, int64_t top,
                 int64_t bottom, int64_t left, int64_t right) {
    const int64_t hp = h + top + bottom, wp = w + left + right;
    float *pad = malloc(sizeof(float) * (size_t)(hp * wp));
    float *acc = malloc(sizeof(float) * (size_t)w);
    for (int64_t i = 0; i < n; i++) {
        const int32_t *ty = dy + i * steps, *tx = dx + i * steps;
        const float *tw = wt + i * steps;
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
                const float *restrict at = pad + (y + top) * wp + left;
                const float w0 = tw[0];
                for (int64_t x = 0; x < w; x++) acc[x] = w0 * at[x];
                for (int64_t s = 1; s < steps; s++) {
                    const float ws = tw[s];
                    if (ws == 0.0f) continue;
                    const float *restrict b = at + (int64_t)ty[s] * wp + tx[s];
                    for (int64_t x = 0; x < w; x++) acc[x] += ws * b[x];
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
}

/* --------------------------------------------------------------------------- defocus blur */

/* u8 planes (H, W) -> u8: cv2.filter2D with the anti-aliased disk as blur.py's _defocus_columns computes it
 * (reflect-101 borders): v = a + g (b + c) along both axes on the image padded by reach + 1, then per output
 * row a column box growing by a row above and below at a time, added at columns +-d when its half-height is
 * the disk's at |d| (halves[0..reach]), and the sum times `scale`. The same operations in the same order as
 * the torch path; the padded, pre-blurred plane is built once per plane. */
void blur_defocus(const uint8_t *src, uint8_t *dst, int64_t planes, int64_t h, int64_t w, float g,
                  const int32_t *halves, int64_t reach, float scale) {
    const int64_t r = reach, hb = h + 2 * r, wb = w + 2 * r, wv = wb + 2;
    int64_t maxh = 0;
    for (int64_t d = 0; d <= r; d++) maxh = halves[d] > maxh ? halves[d] : maxh;
    float *b = malloc(sizeof(float) * (size_t)(hb * wb));
    float *v = malloc(sizeof(float) * (size_t)wv);
    float *box = malloc(sizeof(float) * (size_t)wb);
    float *out = malloc(sizeof(float) * (size_t)w);
    int64_t *cols = malloc(sizeof(int64_t) * (size_t)wv);
    for (int64_t j = 0; j < wv; j++) cols[j] = fold(j - r - 1, w, REFLECT101);
    for (int64_t p = 0; p < planes; p++) {
        const uint8_t *img = src + p * h * w;
        for (int64_t i = 0; i < hb; i++) {  /* padded row i is image row i - r; it reads rows i - r - 1 .. i - r + 1 */
            const uint8_t *ra = img + fold(i - r - 1, h, REFLECT101) * w;
            const uint8_t *rb = img + fold(i - r, h, REFLECT101) * w;
            const uint8_t *rc = img + fold(i - r + 1, h, REFLECT101) * w;
            for (int64_t j = 0; j < wv; j++) {
                const int64_t x = cols[j];
                v[j] = (float)rb[x] + ((float)ra[x] + (float)rc[x]) * g;
            }
            float *restrict bi = b + i * wb;
            for (int64_t j = 0; j < wb; j++) bi[j] = v[j + 1] + (v[j] + v[j + 2]) * g;
        }
        for (int64_t y = 0; y < h; y++) {
            const float *restrict c0 = b + (r + y) * wb;
            int first = 1;
            for (int64_t k = 0; k <= maxh; k++) {
                if (k == 0) {
                    memcpy(box, c0, sizeof(float) * (size_t)wb);
                } else {
                    const float *restrict above = c0 - k * wb, *restrict below = c0 + k * wb;
                    for (int64_t j = 0; j < wb; j++) box[j] = (box[j] + above[j]) + below[j];
                }
                for (int64_t d = 0; d <= r; d++) {
                    if (halves[d] != k) continue;
                    for (int side = 0; side < (d == 0 ? 1 : 2); side++) {
                        const float *restrict part = box + (side == 0 ? r + d : r - d);
                        if (first) {
                            memcpy(out, part, sizeof(float) * (size_t)w);
                            first = 0;
                        } else {
                            for (int64_t x = 0; x < w; x++) out[x] += part[x];
                        }
                    }
                }
            }
            for (int64_t x = 0; x < w; x++) out[x] *= scale;
            store_u8(out, dst + (p * h + y) * w, w);
        }
    }
    free(cols);
    free(out);
    free(box);
    free(v);
    free(b);
}
