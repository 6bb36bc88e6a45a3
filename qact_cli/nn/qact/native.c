/* QAct's fused CPU kernels (docs/qact-layer.md, "The native kernels"): compiled on first use by
 * qact_cli/nn/qact/native.py with the system C compiler and called through ctypes, so that one pass
 * over an activation does what plain torch ops do in several.
 *
 * Every activation is (rows, length) float32, row r of channel (r % channels): the (N, C, L) layout.
 * Positions: p = x * scale[c] + bias[c], clamped to [0, cells - 1] and truncated, exactly QAct's
 * lookup (lookup.py). A NaN compares false with everything and lands in cell 0: finite outputs.
 * Per-row sums are returned in double; the caller adds rows up per channel.
 */
#include <math.h>
#include <stdint.h>

/* Loops are written so that the compiler vectorises everything but the table reads: positions and
 * cells for a block of values at a time, table reads one by one into a small buffer (gathers on the
 * CPUs we measured are no faster than loads), and sums over LANES independent float64 accumulators
 * (a fixed order, so results do not depend on the vector width). */
#define BLOCK 256
#define LANES 8

/* one rounding (a fused multiply-add), as torch's vectorised CPU affine of the default path, so that
 * both paths put a value on a cell boundary in the same cell */
static void cells(const float *x, int64_t n, float scale, float bias, float last, int32_t *k) {
    for (int64_t i = 0; i < n; i++) {
        float p = fmaf(x[i], scale, bias);
        p = p > 0.0f ? p : 0.0f;
        p = p < last ? p : last;
        k[i] = (int32_t)p;
    }
}

/* y[i] = t[k[i]], kept scalar: GCC's AVX2 gathers measured slower than loads on AMD Zen 3 */
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("no-tree-vectorize")))
#endif
static void take(const float *t, const int32_t *k, int64_t n, float *y) {
    for (int64_t i = 0; i < n; i++) y[i] = t[k[i]];
}

/* *s += sum(a), *q += sum(a * b) */
static void dot2(const float *a, const float *b, int64_t n, double *s, double *q) {
    double as[LANES] = {0}, aq[LANES] = {0};
    int64_t i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int j = 0; j < LANES; j++) {
            double v = a[i + j];
            as[j] += v;
            aq[j] += v * (double)b[i + j];
        }
    double ts = 0.0, tq = 0.0;
    for (int j = 0; j < LANES; j++) {
        ts += as[j];
        tq += aq[j];
    }
    for (; i < n; i++) {
        ts += a[i];
        tq += (double)a[i] * (double)b[i];
    }
    *s += ts;
    *q += tq;
}

/* per-row sum and sum of squares (a BatchNorm's batch statistics) */
void qact_row_moments(const float *x, int64_t rows, int64_t length, double *sum, double *sumsq) {
    for (int64_t r = 0; r < rows; r++) {
        sum[r] = sumsq[r] = 0.0;
        dot2(x + r * length, x + r * length, length, sum + r, sumsq + r);
    }
}

/* out = table[c][cell(x)]: eval's whole BN -> QAct -> BN (both BatchNorms folded in scale/bias/table) */
void qact_lookup(const float *x, float *out, int64_t rows, int64_t length, int64_t channels,
                 const float *scale, const float *bias, const float *table, int64_t cells_per_channel) {
    const float last = (float)(cells_per_channel - 1);
    int32_t k[BLOCK];
    for (int64_t r = 0; r < rows; r++) {
        const int64_t c = r % channels;
        const float *t = table + c * cells_per_channel;
        for (int64_t i0 = 0; i0 < length; i0 += BLOCK) {
            const int64_t n = length - i0 < BLOCK ? length - i0 : BLOCK;
            const float *xr = x + r * length + i0;
            float *o = out + r * length + i0;
            cells(xr, n, scale[c], bias[c], last, k);
            take(t, k, n, o);
        }
    }
}

/* training forward, first pass: the flat cell index (channel offset included) and per-row moments of
 * y = table[c][cell], the statistics of the output BatchNorm */
void qact_index_moments(const float *x, int32_t *index, int64_t rows, int64_t length, int64_t channels,
                        const float *scale, const float *bias, const float *table, int64_t cells_per_channel,
                        double *sum, double *sumsq) {
    const float last = (float)(cells_per_channel - 1);
    float y[BLOCK];
    for (int64_t r = 0; r < rows; r++) {
        const int64_t c = r % channels;
        const int32_t offset = (int32_t)(c * cells_per_channel);
        const float *t = table + c * cells_per_channel;
        sum[r] = sumsq[r] = 0.0;
        for (int64_t i0 = 0; i0 < length; i0 += BLOCK) {
            const int64_t n = length - i0 < BLOCK ? length - i0 : BLOCK;
            int32_t *k = index + r * length + i0;
            cells(x + r * length + i0, n, scale[c], bias[c], last, k);
            take(t, k, n, y);
            for (int64_t i = 0; i < n; i++) k[i] += offset;
            dot2(y, y, n, sum + r, sumsq + r);
        }
    }
}

/* out = table[index]: the flat gather (training forward's second pass, with BN_out folded in) */
void qact_gather(const int32_t *index, float *out, int64_t n, const float *table) {
    take(table, index, n, out);
}

/* backward, first pass: per-row sum(g) and sum(g * table[index]) */
void qact_grad_moments(const float *g, const int32_t *index, int64_t rows, int64_t length, const float *table,
                       double *sum_g, double *sum_gy) {
    float y[BLOCK];
    for (int64_t r = 0; r < rows; r++) {
        sum_g[r] = sum_gy[r] = 0.0;
        for (int64_t i0 = 0; i0 < length; i0 += BLOCK) {
            const int64_t n = length - i0 < BLOCK ? length - i0 : BLOCK;
            const int32_t *k = index + r * length + i0;
            take(table, k, n, y);
            dot2(g + r * length + i0, y, n, sum_g + r, sum_gy + r);
        }
    }
}

/* gz = u[index] * g + v[index] for one block */
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("no-tree-vectorize")))
#endif
static void grad_z(const float *g, const int32_t *k, int64_t n, const float *u, const float *v, float *gz) {
    for (int64_t i = 0; i < n; i++) gz[i] = u[k[i]] * g[i] + v[k[i]];
}

/* backward, second pass: gz = u[index] * g + v[index] (the gradient at z); per-row sum(gz), sum(gz * x) */
void qact_gz_moments(const float *g, const int32_t *index, const float *x, int64_t rows, int64_t length,
                     const float *u, const float *v, double *sum_gz, double *sum_gzx) {
    float gz[BLOCK];
    for (int64_t r = 0; r < rows; r++) {
        sum_gz[r] = sum_gzx[r] = 0.0;
        for (int64_t i0 = 0; i0 < length; i0 += BLOCK) {
            const int64_t n = length - i0 < BLOCK ? length - i0 : BLOCK;
            const int64_t at = r * length + i0;
            grad_z(g + at, index + at, n, u, v, gz);
            dot2(gz, x + at, n, sum_gz + r, sum_gzx + r);
        }
    }
}

/* backward, last pass: dx = a[c] * gz + p[c] * x + q[c] (the input BatchNorm's gradient) */
void qact_grad_input(const float *g, const int32_t *index, const float *x, float *dx, int64_t rows, int64_t length,
                     int64_t channels, const float *u, const float *v, const float *a, const float *p, const float *q) {
    float gz[BLOCK];
    for (int64_t r = 0; r < rows; r++) {
        const int64_t c = r % channels;
        const float ac = a[c], pc = p[c], qc = q[c];
        for (int64_t i0 = 0; i0 < length; i0 += BLOCK) {
            const int64_t n = length - i0 < BLOCK ? length - i0 : BLOCK;
            const int64_t at = r * length + i0;
            grad_z(g + at, index + at, n, u, v, gz);
            const float *xr = x + at;
            float *o = dx + at;
            for (int64_t i = 0; i < n; i++) o[i] = ac * gz[i] + pc * xr[i] + qc;
        }
    }
}
