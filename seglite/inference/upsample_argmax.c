/* Bilinear resizing (any chain of them, as per-output tap windows) fused with the argmax over classes.
 * Built at first use by seglite.inference.native and called through ctypes; see seglite.inference.postprocess.
 * Two passes: along the width on the network's low-resolution rows, then down the height one output row at a time,
 * each class's row scored and compared while it is in L1, so the full-resolution logits never exist in memory.
 * An output's taps are the window start[o] .. start[o] + taps - 1 with weights[k * outputs + o] (k-major, so every
 * loop below runs over contiguous outputs and the compiler vectorizes it). */
#include <math.h>
#include <stdint.h>

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
 * low-resolution rows one block reads), best and scores out_width each. */
void upsample_argmax(const float *restrict logits, int64_t classes, int64_t height, int64_t width,
                     const int32_t *restrict col_start, const float *restrict col_weights, int64_t col_taps,
                     int64_t out_width, const int32_t *restrict row_start, const float *restrict row_weights,
                     int64_t row_taps, int64_t out_height, int64_t y0, int64_t y1, int64_t block, int64_t max_rows,
                     float *restrict scratch, float *restrict best, float *restrict scores, uint8_t *restrict labels) {
    for (int64_t b0 = y0; b0 < y1; b0 += block) {
        const int64_t b1 = b0 + block < y1 ? b0 + block : y1;
        const int64_t lo = row_start[b0], rows = row_start[b1 - 1] + row_taps - lo;
        for (int64_t c = 0; c < classes; ++c)
            widen(logits + (c * height + lo) * width, width, col_start, col_weights, col_taps, out_width, 0, rows,
                  scratch + c * max_rows * out_width);
        rows_argmax(scratch, classes, max_rows, lo, out_width, row_start, row_weights, row_taps, out_height, b0, b1,
                    best, scores, labels);
    }
}
