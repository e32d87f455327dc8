/* A command-line wrapper of seglite/inference/upsample_argmax.c, so the kernel can be cross-compiled for another
 * CPU and run under an emulator (tests/test_postprocess.py, ARM64 under qemu-user): reads the kernel's arguments
 * from one file (9 int64: classes, height, width, col_taps, out_width, row_taps, out_height, block, max_rows; then
 * logits, col_start, col_weights, row_start, row_weights; the width's taps per output, col_group 0) and writes the
 * labels to another. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

void upsample_argmax(const float *logits, int64_t classes, int64_t height, int64_t width, const int32_t *col_start,
                     const float *col_weights, int64_t col_taps, int64_t col_group, int64_t out_width, const int32_t *row_start,
                     const float *row_weights, int64_t row_taps, int64_t out_height, int64_t y0, int64_t y1,
                     int64_t block, int64_t max_rows, float *scratch, float *best, float *scores, uint8_t *labels);

static void *take(FILE *file, size_t count, size_t size) {
    void *data = malloc(count * size);
    if (data == NULL || fread(data, size, count, file) != count) {
        fprintf(stderr, "short input\n");
        exit(2);
    }
    return data;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s ARGUMENTS LABELS\n", argv[0]);
        return 2;
    }
    FILE *in = fopen(argv[1], "rb");
    if (in == NULL) return 2;
    int64_t *h = take(in, 9, sizeof(int64_t));
    int64_t classes = h[0], height = h[1], width = h[2], col_taps = h[3], out_width = h[4], row_taps = h[5];
    int64_t out_height = h[6], block = h[7], max_rows = h[8];
    float *logits = take(in, classes * height * width, sizeof(float));
    int32_t *col_start = take(in, out_width, sizeof(int32_t));
    float *col_weights = take(in, col_taps * out_width, sizeof(float));
    int32_t *row_start = take(in, out_height, sizeof(int32_t));
    float *row_weights = take(in, row_taps * out_height, sizeof(float));
    fclose(in);
    float *scratch = malloc(sizeof(float) * classes * max_rows * out_width);
    float *best = malloc(sizeof(float) * out_width), *scores = malloc(sizeof(float) * out_width);
    uint8_t *labels = malloc(out_height * out_width);
    upsample_argmax(logits, classes, height, width, col_start, col_weights, col_taps, 0, out_width, row_start,
                    row_weights, row_taps, out_height, 0, out_height, block, max_rows, scratch, best, scores, labels);
    FILE *out = fopen(argv[2], "wb");
    if (out == NULL || fwrite(labels, 1, out_height * out_width, out) != (size_t)(out_height * out_width)) return 1;
    return fclose(out) == 0 ? 0 : 1;
}
