/* Bilinear resizing (any chain of them, as per-output tap windows) fused with the argmax over classes.
 * Built at first use by seglite.inference.native and called through ctypes; see seglite.inference.postprocess.
 * Two passes: along the width on the network's low-resolution rows, then down the height one output row at a time,
 * each class's row scored and compared while it is in L1, so the full-resolution logits never exist in memory.
 * An output's taps are the window start[o] .. start[o] + taps - 1 with weights[k * outputs + o] (k-major, so every
 * loop below runs over contiguous outputs and the compiler vectorizes it).
 * Along the width, where the CPU has 256- or 512-bit vectors, outputs also come in groups of GROUP (one vector): a
 * group reads one window of inputs, group_start[g] .. + window - 1, with a dense weight block (zero off the taps), so
 * the pass is vector multiply-adds of weight columns by broadcast inputs instead of one indexed load per output and
 * tap (scripts/bench_labels.py, ESPNetv2 to a 960x540 frame on AVX-512: 10.6 -> 6.6 ms). The same products summed
 * in the same order, plus exact zeros: the same labels for finite logits (0 * inf would be NaN). */
#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__AVX512F__)
#define GROUP 16
#elif defined(__AVX__)
#define GROUP 8
#else
#define GROUP 0 /* 128-bit vectors (SSE, NEON): the indexed form measured faster */
#endif

/* The outputs a group of the width pass holds (0: this build has only the per-output taps form). */
int64_t upsample_argmax_group(void) { return GROUP; }

/* out[r][x] = sum_k col_weights[k][x] * logits[r][col_start[x] + k], for rows [r0, r1). */
static void widen(const float *restrict logits, int64_t width, const int32_t *restrict col_start,
           const float *restrict col_weights, int64_t col_taps, int64_t out_width, int64_t r0, int64_t r1,
           float *restrict out) {
    for (int64_t r = r0; r < r1; ++r) {
        const float *restrict row = logits + r * width;
        float *restrict target = out + r * out_width;
        for (int64_t x = 0; x < out_width; ++x) target[x] = col_weights[x] * row[col_start[x]];
        for (int64_t k = 1; k < col_taps; ++k) {
            const float *restrict weight = col_weights + k * out_width;
            const float *restrict shifted = row + k;
            for (int64_t x = 0; x < out_width; ++x) target[x] += weight[x] * shifted[col_start[x]];
        }
    }
}

#if GROUP
typedef float vgroup __attribute__((vector_size(GROUP * sizeof(float))));

/* widen with grouped outputs: out[r][g * GROUP + j] = sum_i weights[(g * window + i) * GROUP + j] * row[start[g] + i].
 * Four rows at a time: four independent sums hide the add latency (one row's sum is a chain of dependent adds). */
static void widen_grouped(const float *restrict logits, int64_t width, const int32_t *restrict group_start,
                          const float *restrict group_weights, int64_t window, int64_t out_width, int64_t rows,
                          float *restrict out) {
    const int64_t groups = (out_width + GROUP - 1) / GROUP;
    for (int64_t r = 0; r < rows; r += 4) {
        const int64_t count = rows - r < 4 ? rows - r : 4;
        const float *restrict row = logits + r * width;
        /* Rows past the last are read as row r again (never stored): one loop body for every count. */
        const int64_t step = count > 1 ? width : 0, step2 = count > 2 ? 2 * width : 0;
        const int64_t step3 = count > 3 ? 3 * width : 0;
        for (int64_t g = 0; g < groups; ++g) {
            const float *restrict in = row + group_start[g];
            const float *restrict weights = group_weights + g * window * GROUP;
            vgroup sum0 = {0}, sum1 = {0}, sum2 = {0}, sum3 = {0}, column;
            for (int64_t i = 0; i < window; ++i) {
                memcpy(&column, weights + i * GROUP, sizeof column);
                sum0 += column * in[i];
                sum1 += column * in[step + i];
                sum2 += column * in[step2 + i];
                sum3 += column * in[step3 + i];
            }
            const int64_t x0 = g * GROUP, n = (out_width - x0 < GROUP ? out_width - x0 : GROUP) * sizeof(float);
            float *restrict target = out + r * out_width + x0;
            const vgroup sums[4] = {sum0, sum1, sum2, sum3};
            for (int64_t q = 0; q < count; ++q) memcpy(target + q * out_width, &sums[q], n);
        }
    }
}
#endif

/* labels[y][x] = argmax over c of sum_k row_weights[k][y] * wide[c][row_start[y] - first_row + k][x], for output
 * rows [y0, y1) (wide holds `height` rows a class from low-resolution row first_row on); ties keep the first class,
 * as torch.argmax does. best and scores: scratch of out_width floats. */
static void rows_argmax(const float *restrict wide, int64_t classes, int64_t height, int64_t first_row,
                 int64_t out_width, const int32_t *restrict row_start, const float *restrict row_weights, int64_t row_taps,
                 int64_t out_height, int64_t y0, int64_t y1, float *restrict best, float *restrict scores,
                 uint8_t *restrict labels) {
    for (int64_t y = y0; y < y1; ++y) {
        uint8_t *restrict label = labels + y * out_width;
        for (int64_t x = 0; x < out_width; ++x) {
            best[x] = -INFINITY;
            label[x] = 0;
        }
        for (int64_t c = 0; c < classes; ++c) {
            const float *restrict first = wide + (c * height + row_start[y] - first_row) * out_width;
            const float w0 = row_weights[y];
            for (int64_t x = 0; x < out_width; ++x) scores[x] = w0 * first[x];
            for (int64_t k = 1; k < row_taps; ++k) {
                const float w = row_weights[k * out_height + y];
                const float *restrict row = first + k * out_width;
                for (int64_t x = 0; x < out_width; ++x) scores[x] += w * row[x];
            }
            const uint8_t cls = (uint8_t)c;
            for (int64_t x = 0; x < out_width; ++x) {
                const int wins = scores[x] > best[x];
                best[x] = wins ? scores[x] : best[x];
                label[x] = wins ? cls : label[x];
            }
        }
    }
}

/* Both passes a block of output rows at a time, so the widened rows stay in cache between them: output rows
 * [y0, y1) in blocks of `block`; scratch holds classes * max_rows * out_width floats (max_rows: the most
 * low-resolution rows one block reads), best and scores out_width each. col_group: 0 for per-output taps
 * (col_start, col_weights, col_taps as above), or upsample_argmax_group() for grouped outputs (col_start: each
 * group's window start, col_weights: its window x GROUP block, col_taps: the window). */
void upsample_argmax(const float *restrict logits, int64_t classes, int64_t height, int64_t width,
                     const int32_t *restrict col_start, const float *restrict col_weights, int64_t col_taps,
                     int64_t col_group, int64_t out_width, const int32_t *restrict row_start,
                     const float *restrict row_weights, int64_t row_taps, int64_t out_height, int64_t y0, int64_t y1,
                     int64_t block, int64_t max_rows,
                     float *restrict scratch, float *restrict best, float *restrict scores, uint8_t *restrict labels) {
    (void)col_group; /* unused where GROUP is 0 */
    for (int64_t b0 = y0; b0 < y1; b0 += block) {
        const int64_t b1 = b0 + block < y1 ? b0 + block : y1;
        const int64_t lo = row_start[b0], rows = row_start[b1 - 1] + row_taps - lo;
        for (int64_t c = 0; c < classes; ++c) {
            const float *restrict plane = logits + (c * height + lo) * width;
            float *restrict wide = scratch + c * max_rows * out_width;
#if GROUP
            if (col_group == GROUP) {
                widen_grouped(plane, width, col_start, col_weights, col_taps, out_width, rows, wide);
                continue;
            }
#endif
            widen(plane, width, col_start, col_weights, col_taps, out_width, 0, rows, wide);
        }
        rows_argmax(scratch, classes, max_rows, lo, out_width, row_start, row_weights, row_taps, out_height, b0, b1,
                    best, scores, labels);
    }
}
