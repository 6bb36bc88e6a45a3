/* QAct's fused CPU kernels (docs/qact-layer.md, "The native kernels"): compiled on first use by
 * qact_cli/nn/qact/native.py with the system C compiler and called through ctypes, so that one pass
 * over an activation does what plain torch ops do in several.
 *
 * Every activation is (rows, length) float32, row r of channel (r % channels): the (N, C, L) layout.
 * A value's cell: p = x * scale[c] + bias[c] in one rounding, clamped to [0, cells - 1] and
 * truncated, exactly QAct's lookup (lookup.py). A NaN compares false with everything and lands in
 * cell 0: finite outputs. Tables are (channels, cells). Training never stores the cells: every pass
 * recomputes them from x (cheaper than writing and reading an int32 index, and no activation-sized
 * index is kept for backward). Per-row sums are returned in double; the caller adds rows up per
 * channel.
 */
#include <math.h>
#include <stdint.h>

/* Loops are written so that the compiler vectorises everything but the table reads: cells for a
 * block of values at a time, table reads one by one into a small buffer (GCC's AVX2 gathers measured
 * no faster than loads on AMD Zen 3), and sums over LANES independent float64 accumulators (a fixed
 * order, so results do not depend on the vector width). */
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

/* The loop every kernel shares: row r, its channel c, and its values in blocks [i0, i0 + n). */
#define FOR_BLOCKS(...)                                                         \
    for (int64_t r = 0, c = 0; r < rows; r++, c = c + 1 == channels ? 0 : c + 1) { \
        for (int64_t i0 = 0; i0 < length; i0 += BLOCK) {                        \
            const int64_t n = length - i0 < BLOCK ? length - i0 : BLOCK;        \
            const int64_t at = r * length + i0;                                 \
            __VA_ARGS__                                                         \
        }                                                                       \
    }

/* per-row sum and sum of squares (a BatchNorm's batch statistics) */
void qact_row_moments(const float *x, int64_t rows, int64_t length, double *sum, double *sumsq) {
    for (int64_t r = 0; r < rows; r++) {
        sum[r] = sumsq[r] = 0.0;
        dot2(x + r * length, x + r * length, length, sum + r, sumsq + r);
    }
}

/* out = table[c][cell(x)] (out may be x): eval's whole BN -> QAct -> BN with both BatchNorms folded
 * into scale, bias and table, and training's output with the output BatchNorm folded into table */
void qact_lookup(const float *x, float *out, int64_t rows, int64_t length, int64_t channels,
                 const float *scale, const float *bias, const float *table, int64_t ncells) {
    const float last = (float)(ncells - 1);
    int32_t k[BLOCK];
    FOR_BLOCKS(
        cells(x + at, n, scale[c], bias[c], last, k);
        take(table + c * ncells, k, n, out + at);
    )
}

/* per-row sum(w) and sum(w * y), y = table[c][cell(x)], w = g, or y itself when g is NULL: the output
 * BatchNorm's statistics in training forward (g NULL: sum and sum of squares of y), the first pass of
 * backward (g the upstream gradient) */
void qact_table_moments(const float *g, const float *x, int64_t rows, int64_t length, int64_t channels,
                        const float *scale, const float *bias, const float *table, int64_t ncells,
                        double *sum, double *sum_y) {
    const float last = (float)(ncells - 1);
    int32_t k[BLOCK];
    float y[BLOCK];
    for (int64_t r = 0; r < rows; r++) sum[r] = sum_y[r] = 0.0;
    FOR_BLOCKS(
        cells(x + at, n, scale[c], bias[c], last, k);
        take(table + c * ncells, k, n, y);
        dot2(g ? g + at : y, y, n, sum + r, sum_y + r);
    )
}

/* gz = u[k] * g + v[k]: the gradient at z for one block (u, v: one channel's tables) */
#if defined(__GNUC__) && !defined(__clang__)
__attribute__((optimize("no-tree-vectorize")))
#endif
static void grad_z(const float *g, const int32_t *k, int64_t n, const float *u, const float *v, float *gz) {
    for (int64_t i = 0; i < n; i++) gz[i] = u[k[i]] * g[i] + v[k[i]];
}

/* backward, second pass: per-row sum(gz) and sum(gz * x) */
void qact_gz_moments(const float *g, const float *x, int64_t rows, int64_t length, int64_t channels,
                     const float *scale, const float *bias, const float *u, const float *v, int64_t ncells,
                     double *sum_gz, double *sum_gzx) {
    const float last = (float)(ncells - 1);
    int32_t k[BLOCK];
    float gz[BLOCK];
    for (int64_t r = 0; r < rows; r++) sum_gz[r] = sum_gzx[r] = 0.0;
    FOR_BLOCKS(
        cells(x + at, n, scale[c], bias[c], last, k);
        grad_z(g + at, k, n, u + c * ncells, v + c * ncells, gz);
        dot2(gz, x + at, n, sum_gz + r, sum_gzx + r);
    )
}

/* backward, last pass: dx = a[c] * gz + p[c] * x + q[c] (the input BatchNorm's gradient) */
void qact_grad_input(const float *g, const float *x, float *dx, int64_t rows, int64_t length, int64_t channels,
                     const float *scale, const float *bias, const float *u, const float *v, int64_t ncells,
                     const float *a, const float *p, const float *q) {
    const float last = (float)(ncells - 1);
    int32_t k[BLOCK];
    float gz[BLOCK];
    FOR_BLOCKS(
        cells(x + at, n, scale[c], bias[c], last, k);
        grad_z(g + at, k, n, u + c * ncells, v + c * ncells, gz);
        const float ac = a[c], pc = p[c], qc = q[c];
        const float *xr = x + at;
        float *o = dx + at;
        for (int64_t i = 0; i < n; i++) o[i] = ac * gz[i] + pc * xr[i] + qc;
    )
}

/* The table's histograms of a context sample ctx (channels, k): per channel the count of values in
 * each grid cell, cell = clamp(floor(v * inv_step[c]) + zero_node[c], 0, nodes - 1) (the torch
 * path's arithmetic: table.grounded_table), the count of exact zeros, and, if kde_counts is given,
 * the same cell counts over every stride-th value (the KDE's sample). Counts are float32. */
void qact_histograms(const float *ctx, int64_t channels, int64_t k, const float *inv_step, const float *zero_node,
                     int64_t nodes, int64_t stride, float *counts, float *kde_counts, float *zeros) {
    const float last = (float)(nodes - 1);
    for (int64_t c = 0; c < channels; c++) {
        const float *v = ctx + c * k;
        const float inv = inv_step[c], z0 = zero_node[c];
        float *count = counts + c * nodes;
        float *kde = kde_counts ? kde_counts + c * nodes : 0;
        int64_t nz = 0;
        for (int64_t j = 0; j < nodes; j++) count[j] = 0.0f;
        if (kde)
            for (int64_t j = 0; j < nodes; j++) kde[j] = 0.0f;
        for (int64_t i = 0; i < k; i++) {
            float f = floorf(v[i] * inv) + z0;
            f = f > 0.0f ? f : 0.0f;
            f = f < last ? f : last;
            const int32_t cell = (int32_t)f;
            count[cell] += 1.0f;
            nz += v[i] == 0.0f;
            if (kde && i % stride == 0) kde[cell] += 1.0f;
        }
        zeros[c] = (float)nz;
    }
}
