/* A tool for tests/python/test_quant_c.py: reads little-endian f32 values from stdin, writes
 * them quantized by the C reference (kernels/quant.c quantize_row) to stdout.
 *   build/tests/quantize_rows q8_0|q4_0|bf16|f16 < values.f32 > blocks.bin */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/tensor.h"

int main(int argc, char **argv) {
    int t = -1;
    for (int i = 0; i < DTYPE_COUNT && argc == 2; i++)
        if (strcmp(argv[1], dtype_name(i)) == 0) t = i;
    if (t < 0) { fprintf(stderr, "usage: quantize_rows q8_0|q4_0|bf16|f16|f32 < f32 > out\n"); return 2; }
    size_t cap = 1 << 16, n = 0;
    float *x = malloc(cap * sizeof(float));
    for (size_t got; x && (got = fread(x + n, sizeof(float), cap - n, stdin)) > 0;) {
        n += got;
        if (n == cap) x = realloc(x, (cap *= 2) * sizeof(float));
    }
    if (!x || n % 32) { fprintf(stderr, "quantize_rows: need a multiple of 32 values\n"); return 1; }
    const size_t bytes = dtype_row_bytes((DType)t, 32) * (n / 32);
    void *out = malloc(bytes + 1);
    if (!out) return 1;
    quantize_row((DType)t, out, x, (int)n);
    fwrite(out, 1, bytes, stdout);
    free(x); free(out);
    return 0;
}
