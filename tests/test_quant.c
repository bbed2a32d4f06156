/* Tests for the block weight types q8_0 and q4_0 in the loader (docs/FORMAT.md).
 *
 * Models are written by tests/testutil.h, whose quantizer follows the block layout
 * of docs/FORMAT.md on its own (it shares no code with model/ or kernels/). A valid
 * model must load with exactly the values its blocks encode, and within the block
 * rounding bound of the values it was quantized from; every malformed block tensor
 * must give -1 and one line naming the problem. */
#define _DEFAULT_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "kernels/tensor.h"
#include "model/model.h"
#include "tests/testutil.h"

/* dim 32, hidden 64, vocab 40: every matrix has rows of a multiple of 32 values */
static void block_model(TuModel *tm) {
    tu_model_init(tm, 32, 40, 64, 16);
    tm->version = 2;
    tu_add_gqa(tm, 2, 1, 16, 16, 0);
    tu_add_mla(tm, 2, 0, 32, 16, 8, 16, 0);
    tu_fill_tensors(tm, 5);
}

static float f16_value(const unsigned char *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    const int e = (h >> 10) & 31, m = h & 1023;
    const double v = e == 0 ? ldexp(m, -24) : ldexp(1024 + m, e - 25);
    return (float)((h & 0x8000) ? -v : v);
}

/* value k of a tensor stored as blocks, decoded by hand from docs/FORMAT.md */
static float block_value(uint32_t dt, const unsigned char *data, size_t k) {
    const size_t bytes = dt == TU_Q8_0 ? 34 : 18;
    const unsigned char *b = data + k / 32 * bytes;
    const int j = (int)(k % 32);
    int q;
    if (dt == TU_Q8_0) q = (int8_t)b[2 + j];
    else q = (j < 16 ? b[2 + j] & 15 : b[2 + j - 16] >> 4) - 8;
    return (float)q * f16_value(b);
}

static void check_tensor(const TuModel *tm, const unsigned char *file, const char *name, const float *got) {
    const TuTensor *t = NULL;
    for (int i = 0; i < tm->n_tensors; i++)
        if (!strcmp(tm->tensors[i].name, name)) t = &tm->tensors[i];
    assert_non_null(t);
    const unsigned char *data = file + t->offset;
    for (size_t k = 0; k < t->count; k++) {
        const float want = block_value(t->dtype, data, k);
        if (got[k] != want) fail_msg("%s[%zu]: got %.9g, blocks encode %.9g", name, k, got[k], want);
        // rounding bound: q8_0 d/2 (+ f16 rounding of d: |q| <= 127 times 2^-11 d);
        // q4_0 |d| (the clamp at 15 costs one step on the side opposite to the max)
        const float scale = fabsf(f16_value(data + k / 32 * (t->dtype == TU_Q8_0 ? 34 : 18)));
        const float bound = t->dtype == TU_Q8_0 ? scale * 0.57f : scale * 1.01f;
        if (fabsf(got[k] - t->data[k]) > bound + 1e-12f)
            fail_msg("%s[%zu]: %.9g is %.3g from %.9g (bound %.3g)", name, k, got[k],
                     fabsf(got[k] - t->data[k]), t->data[k], bound);
    }
}

static void test_block_values(void **state) {
    (void)state;
    TuModel tm;
    block_model(&tm);
    tu_find(&tm, "tok_embeddings")->dtype = TU_Q4_0;
    tu_find(&tm, "output")->dtype = TU_Q8_0;
    tu_find(&tm, "layers.0.w1")->dtype = TU_Q8_0;
    tu_find(&tm, "layers.0.w3")->dtype = TU_Q4_0;
    tu_find(&tm, "layers.0.w2")->dtype = TU_Q8_0;
    tu_find(&tm, "layers.0.wq")->dtype = TU_Q4_0;
    tu_find(&tm, "layers.1.w_uk")->dtype = TU_Q8_0;
    tu_find(&tm, "layers.1.w_uv")->dtype = TU_Q4_0;
    // edge blocks: all zeros (d = 0), one huge value, a negative maximum, ties
    float *w1 = tu_find(&tm, "layers.0.w1")->data;
    memset(w1, 0, 32 * sizeof(float));
    for (int j = 0; j < 32; j++) w1[32 + j] = (j == 5) ? 1000.0f : 0.001f * (float)j;
    float *w3 = tu_find(&tm, "layers.0.w3")->data;
    for (int j = 0; j < 32; j++) w3[j] = (j == 7) ? -2.0f : 0.25f * (float)(j % 9) - 1.0f;
    memset(w3 + 32, 0, 32 * sizeof(float));
    size_t n;
    unsigned char *b = tu_serialize(&tm, &n);
    assert_non_null(b);
    Model m;
    char err[512];
    if (model_load_buffer(&m, b, n, err, sizeof err)) fail_msg("block model: %s", err);
    float *row = malloc(sizeof(float) * 64 * 40);
    assert_non_null(row);
#define CHECK(name, matrix, count)                                          \
    do {                                                                    \
        assert_int_equal((matrix).rows * (matrix).cols, (count));           \
        dequantize_row((matrix).dtype, row, (matrix).data, (count));        \
        check_tensor(&tm, b, name, row);                                    \
    } while (0)
    CHECK("tok_embeddings", m.tok_embeddings, 40 * 32);
    CHECK("output", m.output, 40 * 32);
    CHECK("layers.0.w1", m.layers[0].w1, 64 * 32);
    CHECK("layers.0.w3", m.layers[0].w3, 64 * 32);
    CHECK("layers.0.w2", m.layers[0].w2, 32 * 64);
    CHECK("layers.0.wq", m.layers[0].gqa.wq, 32 * 32);
    CHECK("layers.1.w_uk", m.layers[1].mla.w_uk, 2 * 16 * 32);
    CHECK("layers.1.w_uv", m.layers[1].mla.w_uv, 2 * 16 * 32);
#undef CHECK
    assert_true(w1[0] == 0.0f);
    free(row);
    model_free(&m);
    free(b);
    tu_model_free(&tm);
}

/* Loads a copy of exactly n bytes and expects -1 with a one-line error containing needle. */
static void expect_fail_n(const unsigned char *bytes, size_t n, const char *needle, const char *what) {
    unsigned char *copy = malloc(n ? n : 1);
    assert_non_null(copy);
    memcpy(copy, bytes, n);
    Model m;
    char err[512] = "";
    const int rc = model_load_buffer(&m, copy, n, err, sizeof err);
    if (rc == 0) { model_free(&m); fail_msg("%s: loaded, expected an error with '%s'", what, needle); }
    if (!err[0] || strchr(err, '\n')) fail_msg("%s: not a one-line error: '%s'", what, err);
    if (!strstr(err, needle)) fail_msg("%s: error '%s' does not mention '%s'", what, err, needle);
    free(copy);
}

static void test_block_errors(void **state) {
    (void)state;
    TuModel tm;
    block_model(&tm);
    tu_find(&tm, "layers.0.w2")->dtype = TU_Q4_0;
    const int last = tm.n_tensors - 1;
    tm.tensors[last].dtype = TU_Q8_0; // the file ends with the blocks of this tensor
    size_t n;
    unsigned char *b = tu_serialize(&tm, &n), *x = malloc(n);
    assert_non_null(b);
    assert_non_null(x);
    const int i2 = tu_index(&tm, "layers.0.w2");
    const size_t e2 = tu_entry_off(&tm, i2);
    const uint64_t w2_bytes = tu_get_u64(b + e2 + 112);
    assert_int_equal(w2_bytes, 32 * 64 / 32 * 18);
#define PATCH(stmt, needle, what) do { memcpy(x, b, n); stmt; expect_fail_n(x, n, needle, what); } while (0)
    PATCH(tu_put_u64(x + e2 + 112, w2_bytes - 18), "nbytes", "q4_0 one block short");
    PATCH(tu_put_u64(x + e2 + 112, w2_bytes + 1), "nbytes", "q4_0 one byte too many");
    PATCH(tu_put_u64(x + e2 + 112, 32 * 64 * 4), "nbytes", "q4_0 with f32 nbytes");
    PATCH(tu_put_u32(x + e2 + 64, TU_Q8_0), "nbytes", "q4_0 bytes labelled q8_0");
    PATCH(tu_put_u32(x + e2 + 64, 5), "unknown dtype", "type id 5");
    PATCH(tu_put_u32(x + e2 + 64, 0x80000003u), "unknown dtype", "type id with a high bit");
    PATCH(tu_put_u64(x + e2 + 104, tu_get_u64(b + e2 + 104) + 2), "aligned", "misaligned block offset");
    {   // the same model written as version 1 (64-byte layer descriptors)
        tm.version = 1;
        size_t n1 = 0;
        unsigned char *b1 = tu_serialize(&tm, &n1);
        assert_non_null(b1);
        expect_fail_n(b1, n1, "version 2", "q4_0 in a version 1 file");
        free(b1);
        tm.version = 2;
    }
    // a truncated block: the file ends inside the last tensor's last block
    expect_fail_n(b, n - 1, "past the end", "truncated by one byte");
    expect_fail_n(b, n - 17, "past the end", "truncated inside the last block");
#undef PATCH
    free(x);
    free(b);
    tu_model_free(&tm);

    // rows that are not a multiple of 32 values
    TuModel t2;
    tu_model_init(&t2, 8, 6, 6, 32);
    t2.version = 2;
    tu_add_gqa(&t2, 2, 1, 4, 4, 0);
    tu_fill_tensors(&t2, 3);
    TuTensor *w = tu_find(&t2, "layers.0.w1"); // [6, 8]: 48 values = 1.5 blocks
    w->dtype = TU_Q8_0;
    w->fix_nbytes = 1;
    w->nbytes = 48 / 32 * 34;
    {
        size_t n2;
        unsigned char *b2 = tu_serialize(&t2, &n2);
        assert_non_null(b2);
        expect_fail_n(b2, n2, "multiple of 32", "q8_0 rows of 8 values");
        free(b2);
    }
    tu_model_free(&t2);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_block_values),
        cmocka_unit_test(test_block_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
