/* Tests for model/loader.c (model_load_buffer and model_load).
 *
 * Models are written byte by byte in C (tests/testutil.h, from docs/FORMAT.md),
 * then loaded. A valid one must load with the values that were written; every
 * malformed one must give -1, a non-empty one-line err naming the problem, and
 * no crash (run under `make asan` to check for memory errors too). Buffers handed
 * to the loader are exactly as long as the file, so any read past the end is an
 * ASan error. */
#define _DEFAULT_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <omp.h>

#include "model/model.h"
#include "tests/testutil.h"

static const char TOK_BLOB[] = "not really a sentencepiece model, only bytes";

/* A small model with both attention kinds, FFN and attention biases, a
 * tokenizer blob, BOS/EOS. */
static void base_model(TuModel *tm) {
    tu_model_init(tm, 8, 6, 6, 32);
    tm->flags = 2; // FFN biases
    tm->bos_id = 1;
    tm->eos_id = 2;
    tu_add_gqa(tm, 2, 1, 4, 4, 15);
    tu_add_mla(tm, 2, 3, 4, 2, 2, 3, 11);
    tu_fill_tensors(tm, 77);
    tm->tokenizer = (const unsigned char *)TOK_BLOB;
    tm->tokenizer_bytes = sizeof TOK_BLOB - 1;
}

static unsigned char *base_bytes(TuModel *tm, size_t *n) {
    base_model(tm);
    unsigned char *b = tu_serialize(tm, n);
    assert_non_null(b);
    return b;
}

/* Loads exactly n bytes (a private copy of that size) and expects failure with
 * a one-line err containing `needle`. */
static void expect_fail_n(const unsigned char *bytes, size_t n, const char *needle, const char *what) {
    unsigned char *copy = malloc(n ? n : 1);
    assert_non_null(copy);
    if (n) memcpy(copy, bytes, n);
    Model m;
    char err[512];
    memset(err, 0, sizeof err);
    const int rc = model_load_buffer(&m, copy, n, err, sizeof err);
    if (rc == 0) {
        model_free(&m);
        free(copy);
        fail_msg("%s: loaded, expected an error containing '%s'", what, needle);
    }
    if (rc != -1) fail_msg("%s: returned %d, expected -1", what, rc);
    if (err[0] == 0) fail_msg("%s: empty error message", what);
    if (strchr(err, '\n')) fail_msg("%s: error is not one line: '%s'", what, err);
    if (needle && !strstr(err, needle)) fail_msg("%s: error '%s' does not mention '%s'", what, err, needle);
    model_free(&m); // harmless after a failed load
    free(copy);
}

/* serialises tm and expects the load to fail */
static void expect_fail_model(TuModel *tm, const char *needle, const char *what) {
    size_t n;
    unsigned char *b = tu_serialize(tm, &n);
    assert_non_null(b);
    expect_fail_n(b, n, needle, what);
    free(b);
}

/* --- a valid model ------------------------------------------------------------------- */

static void test_valid_model_loads(void **state) {
    (void)state;
    TuModel tm;
    size_t n;
    unsigned char *b = base_bytes(&tm, &n);
    Model m;
    char err[512] = "";
    // model.h: the bytes are copied, the caller may free them after the load
    unsigned char *copy = malloc(n);
    memcpy(copy, b, n);
    if (model_load_buffer(&m, copy, n, err, sizeof err)) fail_msg("valid model: %s", err);
    memset(copy, 0xEE, n);
    free(copy);
    const Config *c = &m.cfg;
    assert_int_equal(c->dim, 8);
    assert_int_equal(c->n_layers, 2);
    assert_int_equal(c->vocab_size, 6);
    assert_int_equal(c->max_seq_len, 32);
    assert_int_equal(c->hidden_dim, 6);
    assert_int_equal(c->tied_embeddings, 0);
    assert_int_equal(c->mlp_bias, 1);
    assert_int_equal(c->bos_id, 1);
    assert_int_equal(c->eos_id, 2);
    assert_true(c->norm_eps == 1e-5f);
    assert_true(c->rope.theta == 10000.0f);
    assert_int_equal(m.layers[0].kind, ATTN_GQA);
    assert_int_equal(m.layers[0].gqa.n_heads, 2);
    assert_int_equal(m.layers[0].gqa.n_kv_heads, 1);
    assert_int_equal(m.layers[0].gqa.head_dim, 4);
    assert_int_equal(m.layers[1].kind, ATTN_MLA);
    assert_int_equal(m.layers[1].mla.q_lora_rank, 3);
    assert_int_equal(m.layers[1].mla.kv_lora_rank, 4);
    assert_int_equal(m.layers[1].mla.v_head_dim, 3);
    assert_non_null(m.layers[0].rope);
    assert_int_equal(m.layers[0].rope->rope_dim, 4);
    // the tokenizer blob, byte for byte
    assert_int_equal(m.tokenizer_bytes, sizeof TOK_BLOB - 1);
    assert_memory_equal(m.tokenizer, TOK_BLOB, sizeof TOK_BLOB - 1);
    // tensors bound to the right data (and the optional ones present)
    assert_memory_equal(m.tok_embeddings, tu_data(&tm, "tok_embeddings"), sizeof(float) * 6 * 8);
    assert_memory_equal(m.output, tu_data(&tm, "output"), sizeof(float) * 6 * 8);
    assert_memory_equal(m.norm, tu_data(&tm, "norm"), sizeof(float) * 8);
    assert_memory_equal(m.layers[0].gqa.wk, tu_layer_data(&tm, 0, "wk"), sizeof(float) * 4 * 8);
    assert_memory_equal(m.layers[0].gqa.bo, tu_layer_data(&tm, 0, "bo"), sizeof(float) * 8);
    assert_memory_equal(m.layers[0].b2, tu_layer_data(&tm, 0, "b2"), sizeof(float) * 8);
    assert_memory_equal(m.layers[1].mla.w_uv, tu_layer_data(&tm, 1, "w_uv"), sizeof(float) * 2 * 3 * 4);
    assert_memory_equal(m.layers[1].mla.bq_a, tu_layer_data(&tm, 1, "bq_a"), sizeof(float) * 3);
    assert_null(m.layers[1].mla.wq);
    assert_non_null(m.layers[0].gqa.bq);
    assert_null(m.layers[0].b1 == m.layers[0].b3 ? m.layers[0].b1 : NULL); // distinct tensors
    // n_params: every element once
    size_t total = 0;
    for (int i = 0; i < tm.n_tensors; i++) total += tm.tensors[i].count;
    assert_int_equal(m.n_params, total);
    model_free(&m);
    free(b);

    // tied embeddings: no output tensor; the head is the embedding
    tu_remove(&tm, tu_index(&tm, "output"));
    tm.flags |= 1;
    b = tu_serialize(&tm, &n);
    if (model_load_buffer(&m, b, n, err, sizeof err)) fail_msg("tied model: %s", err);
    assert_true(m.output == m.tok_embeddings);
    assert_int_equal(m.cfg.tied_embeddings, 1);
    model_free(&m);
    free(b);

    // no tokenizer embedded
    tm.tokenizer = NULL;
    tm.tokenizer_bytes = 0;
    b = tu_serialize(&tm, &n);
    if (model_load_buffer(&m, b, n, err, sizeof err)) fail_msg("no tokenizer: %s", err);
    assert_null(m.tokenizer);
    assert_int_equal(m.tokenizer_bytes, 0);
    model_free(&m);
    free(b);
    tu_model_free(&tm);
}

/* --- header ------------------------------------------------------------------------- */

static void test_header_errors(void **state) {
    (void)state;
    TuModel tm;
    size_t n;
    unsigned char *b = base_bytes(&tm, &n), *x = malloc(n);
#define PATCH(stmt, needle, what) do { memcpy(x, b, n); stmt; expect_fail_n(x, n, needle, what); } while (0)
    expect_fail_n(b, 0, "short", "empty file");
    expect_fail_n(b, 100, "short", "file shorter than the header");
    expect_fail_n(b, 255, "short", "one byte short of a header");
    PATCH(x[0] = 'X', "magic", "wrong magic");
    PATCH(memcpy(x, "GGUF\0\0\0\0", 8), "magic", "another format's magic");
    PATCH(tu_put_u32(x + 8, 3), "version", "version 3");
    PATCH(tu_put_u32(x + 8, 0), "version", "version 0");
    PATCH(tu_put_u32(x + 12, 128), "header", "header_bytes 128");
    PATCH(tu_put_u32(x + 16, 0), "dim", "dim 0");
    PATCH(tu_put_u32(x + 20, 0), "n_layers", "n_layers 0");
    PATCH(tu_put_u32(x + 20, 0xFFFFFFFFu), "n_layers", "n_layers huge");
    PATCH(tu_put_u32(x + 20, 65536), "past the end", "n_layers 65536: descriptors past the end");
    PATCH(tu_put_u32(x + 20, 3), "", "n_layers 3 with 2 layers' tensors");
    PATCH(tu_put_u32(x + 24, 0), "vocab", "vocab 0");
    PATCH(tu_put_u32(x + 28, 0), "max_seq_len", "max_seq_len 0");
    PATCH(tu_put_u32(x + 32, 0), "hidden_dim", "hidden_dim 0");
    PATCH(tu_put_u32(x + 36, 1), "activation", "activation 1");
    PATCH(tu_put_u32(x + 40, 4), "flags", "unknown flag bit");
    PATCH(tu_put_i32(x + 44, 6), "bos_id", "bos_id = vocab");
    PATCH(tu_put_i32(x + 48, -2), "eos_id", "eos_id -2");
    PATCH(tu_put_f32(x + 52, NAN), "norm_eps", "NaN norm_eps");
    PATCH(tu_put_f32(x + 52, INFINITY), "norm_eps", "inf norm_eps");
    PATCH(tu_put_f32(x + 52, 0.0f), "norm_eps", "zero norm_eps");
    PATCH(tu_put_f32(x + 52, -1e-5f), "norm_eps", "negative norm_eps");
    PATCH(tu_put_f32(x + 56, NAN), "rope_theta", "NaN rope_theta");
    PATCH(tu_put_f32(x + 56, 1.0f), "rope_theta", "rope_theta 1 (ln theta = 0)");
    PATCH(tu_put_u32(x + 60, 2), "pairing", "rope pairing 2");
    PATCH(tu_put_u32(x + 64, 4), "scaling", "rope scaling 4");
    PATCH((tu_put_u32(x + 64, 1), tu_put_f32(x + 68, 0.0f)), "factor", "linear with factor 0");
    PATCH((tu_put_u32(x + 64, 2), tu_put_f32(x + 68, 8.0f)), "llama3", "llama3 without its parameters");
    PATCH((tu_put_u32(x + 64, 3), tu_put_f32(x + 68, 4.0f)), "yarn", "yarn without original_max_pos");
    PATCH((tu_put_u32(x + 64, 3), tu_put_f32(x + 68, 4.0f), tu_put_u32(x + 80, 4096), tu_put_f32(x + 84, NAN)),
          "yarn", "yarn NaN beta_fast");
    PATCH(tu_put_f32(x + 108, NAN), "scale", "NaN embed_scale");
    PATCH(tu_put_u32(x + 120, 0x7FFFFFFFu), "directory", "n_tensors huge (directory past EOF)");
    PATCH(tu_put_u32(x + 120, 0xFFFFFFFFu), "directory", "n_tensors 2^32-1");
    PATCH(tu_put_u32(x + 120, 0), "", "n_tensors 0");
    PATCH(tu_put_u32(x + 120, 3), "missing tensor", "n_tensors too small");
    // tokenizer blob past EOF, including offsets whose sum with the size overflows
    PATCH((tu_put_u64(x + 128, n - 8), tu_put_u64(x + 136, 64)), "tokenizer", "tokenizer blob past EOF");
    PATCH((tu_put_u64(x + 128, UINT64_MAX), tu_put_u64(x + 136, 1)), "tokenizer", "tokenizer offset 2^64-1");
    PATCH((tu_put_u64(x + 128, 64), tu_put_u64(x + 136, UINT64_MAX)), "tokenizer", "tokenizer size 2^64-1");
    PATCH((tu_put_u64(x + 128, n + 64), tu_put_u64(x + 136, 1)), "tokenizer", "tokenizer offset past EOF");
#undef PATCH
    free(x);
    free(b);
    tu_model_free(&tm);
}

/* --- layer descriptors --------------------------------------------------------------- */

static uint32_t *layer_field(TuLayer *l, int field) {
    switch (field) {
    case 0: return &l->kind;
    case 1: return &l->n_heads;
    case 2: return &l->n_kv_heads;
    case 3: return &l->head_dim;
    case 4: return &l->rope_dim;
    case 5: return &l->bias;
    case 6: return &l->q_lora_rank;
    case 7: return &l->kv_lora_rank;
    case 8: return &l->qk_nope;
    case 9: return &l->qk_rope;
    default: return &l->v_head_dim;
    }
}

static void test_layer_errors(void **state) {
    (void)state;
    // base layers: 0 = GQA H 2, Hkv 1, d 4, rope 4, bias 15; 1 = MLA H 2, dq 3, dc 4, dn 2, dr 2, dv 3
    struct { int layer, field; uint32_t value; int field2; uint32_t value2; const char *needle, *what; } cases[] = {
        {0, 0, 2, -1, 0, "unknown attention kind", "attention kind 2"},
        {1, 0, 0xFFFFFFFFu, -1, 0, "unknown attention kind", "attention kind 2^32-1"},
        {0, 1, 0, -1, 0, "n_heads", "n_heads 0"},
        {0, 1, 100000, -1, 0, "n_heads", "n_heads 100000"},
        {0, 2, 0, -1, 0, "does not divide", "n_kv_heads 0"},
        {0, 2, 3, -1, 0, "does not divide", "n_kv_heads 3 > n_heads 2"},
        {0, 1, 4, 2, 3, "does not divide", "n_kv_heads 3 not dividing n_heads 4"},
        {0, 1, 6, 2, 4, "does not divide", "n_kv_heads 4 not dividing n_heads 6"},
        {0, 3, 0, -1, 0, "head_dim", "head_dim 0"},
        {0, 4, 3, -1, 0, "rope_dim", "odd rope_dim"},
        {0, 4, 6, -1, 0, "rope_dim", "rope_dim > head_dim"},
        {0, 5, 32, -1, 0, "bias", "unknown bias bit (bit 4 is qk_norm)"},
        {1, 4, 4, -1, 0, "rope_dim", "MLA rope_dim != qk_rope_head_dim"},
        {1, 9, 3, 4, 3, "qk_rope_head_dim", "MLA odd qk_rope_head_dim"},
        {1, 7, 0, -1, 0, "kv_lora_rank", "MLA kv_lora_rank 0"},
        {1, 8, 0, -1, 0, "qk_nope_head_dim", "MLA qk_nope_head_dim 0"},
        {1, 10, 0, -1, 0, "v_head_dim", "MLA v_head_dim 0"},
        {1, 5, 4, -1, 0, "bias", "MLA v bias"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        TuModel tm;
        base_model(&tm);
        TuLayer *l = &tm.layers[cases[i].layer];
        *layer_field(l, cases[i].field) = cases[i].value;
        if (cases[i].field2 >= 0) *layer_field(l, cases[i].field2) = cases[i].value2;
        expect_fail_model(&tm, cases[i].needle, cases[i].what);
        tu_model_free(&tm);
    }
}

/* --- the tensor directory -------------------------------------------------------------- */

static void test_directory_errors(void **state) {
    (void)state;
    TuModel tm;
    size_t n;
    unsigned char *b = base_bytes(&tm, &n), *x = malloc(n);
    const int wq = tu_index(&tm, "layers.0.wq");
    const size_t e = tu_entry_off(&tm, wq);
    const uint64_t off = tu_get_u64(b + e + 104), nb = tu_get_u64(b + e + 112);
#define PATCH(stmt, needle, what) do { memcpy(x, b, n); stmt; expect_fail_n(x, n, needle, what); } while (0)
    PATCH(tu_put_u64(x + e + 104, tu_align64(n) + 64), "past the end", "offset past EOF");
    PATCH(tu_put_u64(x + e + 104, UINT64_MAX - 63), "past the end", "offset near 2^64");
    PATCH(tu_put_u64(x + e + 104, n - nb + 64 - (n - nb) % 64), "past the end", "data straddles EOF");
    PATCH(tu_put_u64(x + e + 104, off + 4), "align", "offset misaligned by 4");
    PATCH(tu_put_u64(x + e + 104, off + 32), "align", "offset misaligned by 32");
    PATCH(tu_put_u64(x + e + 112, nb + 4), "nbytes", "nbytes too large");
    PATCH(tu_put_u64(x + e + 112, nb - 4), "nbytes", "nbytes too small");
    PATCH(tu_put_u64(x + e + 112, 0), "nbytes", "nbytes 0");
    PATCH((tu_put_u64(x + e + 72, 1ull << 33), tu_put_u64(x + e + 80, 1ull << 33)), "shape",
          "shape overflow: 2^33 x 2^33");
    PATCH((tu_put_u32(x + e + 68, 4), tu_put_u64(x + e + 72, 1ull << 20), tu_put_u64(x + e + 80, 1ull << 20),
           tu_put_u64(x + e + 88, 1ull << 20), tu_put_u64(x + e + 96, 1ull << 20)),
          "shape", "shape overflow: 4 dims of 2^20");
    PATCH((tu_put_u64(x + e + 72, 1ull << 31), tu_put_u64(x + e + 80, 1ull << 31), tu_put_u64(x + e + 112, 0)),
          "shape", "count 2^62 x 4 bytes overflows");
    PATCH(tu_put_u64(x + e + 72, 0), "shape", "zero dim");
    PATCH(tu_put_u32(x + e + 68, 0), "ndim", "ndim 0");
    PATCH(tu_put_u32(x + e + 68, 5), "ndim", "ndim 5");
    PATCH(tu_put_u32(x + e + 64, 7), "dtype", "unknown dtype 7");
    PATCH(tu_put_u32(x + e + 64, 3), "version 2", "q8_0 in a version 1 file");
    PATCH(tu_put_u32(x + e + 64, 5), "unknown dtype", "dtype 5");
    PATCH(tu_put_u32(x + e + 64, 0xFFFFFFFFu), "dtype", "dtype 2^32-1");
    PATCH(memset(x + e, 'a', 64), "NUL", "name without NUL");
    PATCH(memcpy(x + e, "layers.0.wz", 12), "missing tensor layers.0.wq", "renamed tensor");
    // layout (issue 12): data over the header or directory, over another tensor, over
    // the tokenizer blob; a tokenizer blob over the directory
    const size_t e0 = tu_entry_off(&tm, 0), e1 = tu_entry_off(&tm, 1);
    const uint64_t tok_off = tu_get_u64(b + 128);
    PATCH(tu_put_u64(x + e + 104, 0), "overlaps the header", "tensor data at offset 0");
    PATCH(tu_put_u64(x + e + 104, 256), "overlaps the header", "tensor data over the layer descriptors");
    PATCH(tu_put_u64(x + e + 104, tu_get_u64(b + e0 + 104)), "overlaps tensor", "two tensors, same offset");
    PATCH(tu_put_u64(x + e1 + 104, tu_get_u64(b + e0 + 104) + 64), "overlaps tensor",
          "tensor 1 inside tensor 0");
    PATCH(tu_put_u64(x + e + 104, tok_off), "tokenizer blob", "tensor data over the tokenizer");
    PATCH(tu_put_u64(x + 128, 256), "tokenizer blob: data at offset 256 overlaps the header", "tokenizer over the directory");
#undef PATCH
    free(x);
    free(b);
    tu_model_free(&tm);
}

static void test_tensor_set_errors(void **state) {
    (void)state;
    TuModel tm;
    // missing
    base_model(&tm);
    tu_remove(&tm, tu_index(&tm, "layers.0.wq"));
    expect_fail_model(&tm, "missing tensor layers.0.wq", "missing wq");
    tu_model_free(&tm);
    base_model(&tm);
    tu_remove(&tm, tu_index(&tm, "layers.1.kv_a_norm"));
    expect_fail_model(&tm, "missing tensor layers.1.kv_a_norm", "missing MLA kv_a_norm");
    tu_model_free(&tm);
    base_model(&tm);
    tu_remove(&tm, tu_index(&tm, "layers.0.bk")); // a bias the flags promise
    expect_fail_model(&tm, "missing tensor layers.0.bk", "missing bias");
    tu_model_free(&tm);
    // duplicated
    base_model(&tm);
    tu_duplicate(&tm, tu_index(&tm, "norm"), NULL);
    expect_fail_model(&tm, "duplicate tensor norm", "duplicated norm");
    tu_model_free(&tm);
    base_model(&tm);
    tu_duplicate(&tm, tu_index(&tm, "layers.1.w_uk"), NULL);
    expect_fail_model(&tm, "duplicate tensor layers.1.w_uk", "duplicated w_uk");
    tu_model_free(&tm);
    // unexpected extra
    base_model(&tm);
    tu_duplicate(&tm, tu_index(&tm, "norm"), "layers.0.extra");
    expect_fail_model(&tm, "unexpected tensor layers.0.extra", "extra tensor");
    tu_model_free(&tm);
    base_model(&tm);
    tm.flags |= 1; // tied, but output still present
    expect_fail_model(&tm, "unexpected tensor output", "output in a tied model");
    tu_model_free(&tm);
    base_model(&tm);
    tm.layers[0].bias = 7; // no o bias promised, bo present
    expect_fail_model(&tm, "unexpected tensor layers.0.bo", "bias not in the flags");
    tu_model_free(&tm);
    // misshapen: transposed, wrong ndim, wrong size
    base_model(&tm);
    {
        TuTensor *t = tu_find(&tm, "layers.0.wk"); // [4, 8] -> [8, 4]
        t->shape[0] = 8; t->shape[1] = 4;
    }
    expect_fail_model(&tm, "layers.0.wk has shape [8,4], expected [4,8]", "transposed wk");
    tu_model_free(&tm);
    base_model(&tm);
    {
        TuTensor *t = tu_find(&tm, "norm"); // [8] -> [1, 8]
        t->ndim = 2; t->shape[0] = 1; t->shape[1] = 8;
    }
    expect_fail_model(&tm, "norm has shape", "norm with 2 dims");
    tu_model_free(&tm);
    base_model(&tm);
    {
        TuTensor *t = tu_find(&tm, "layers.1.w_uv"); // [2, 3, 4] -> [3, 2, 4]
        t->shape[0] = 3; t->shape[1] = 2;
    }
    expect_fail_model(&tm, "layers.1.w_uv has shape", "w_uv heads and dims swapped");
    tu_model_free(&tm);
}

/* Every error is one line, even when the file's tensor names hold control bytes
 * (run prints err after "run: error: " and promises exactly one line). */
static void test_error_is_one_line_with_hostile_names(void **state) {
    (void)state;
    TuModel tm;
    base_model(&tm);
    tu_duplicate(&tm, tu_index(&tm, "norm"), "evil\nname");
    expect_fail_model(&tm, "unexpected tensor", "extra tensor with a newline in its name");
    tu_model_free(&tm);
    base_model(&tm);
    {
        TuTensor *t = tu_duplicate(&tm, tu_index(&tm, "norm"), "x\r\ny");
        t->dtype = 7;
    }
    expect_fail_model(&tm, "dtype", "bad dtype on a tensor named with CR LF");
    tu_model_free(&tm);
}

/* --- truncation: every length ---------------------------------------------------------- */

static void test_every_truncation_fails(void **state) {
    (void)state;
    TuModel tm;
    size_t n;
    unsigned char *b = base_bytes(&tm, &n);
    // the full file loads
    Model m;
    char err[512];
    if (model_load_buffer(&m, b, n, err, sizeof err)) fail_msg("full file: %s", err);
    model_free(&m);
    for (size_t len = 0; len < n; len++) {
        char what[64];
        snprintf(what, sizeof what, "truncated to %zu of %zu bytes", len, n);
        expect_fail_n(b, len, NULL, what);
    }
    // the same through model_load on files, for a few lengths
    const size_t lens[] = {0, 1, 255, 256, 300, n / 2, n - 1};
    for (size_t i = 0; i < sizeof lens / sizeof *lens; i++) {
        char *path = tu_write_temp(b, lens[i]);
        assert_non_null(path);
        memset(err, 0, sizeof err);
        assert_int_equal(model_load(&m, path, err, sizeof err), -1);
        if (!strstr(err, path)) fail_msg("model_load error '%s' does not name the file", err);
        assert_null(strchr(err, '\n'));
        model_free(&m);
        remove(path);
        free(path);
    }
    free(b);
    tu_model_free(&tm);
}

/* --- fuzz ---------------------------------------------------------------------------------- */

static void test_fuzz_flipped_bytes(void **state) {
    (void)state;
    TuModel tm;
    size_t n;
    unsigned char *b = base_bytes(&tm, &n), *x = malloc(n);
    const size_t meta = tu_entry_off(&tm, tm.n_tensors); // header + descriptors + directory
    TuRng r = {20240607};
    int loaded = 0;
    // one thread: thousands of tiny forward passes would spend their time in OpenMP
    // barriers on a busy 2-core machine (threading is covered by test_attention)
    const int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    for (int it = 0; it < 2000; it++) {
        memcpy(x, b, n);
        const int flips = 1 + (int)(tu_next(&r) % 8);
        for (int k = 0; k < flips; k++) {
            // mostly the metadata, where the validation lives; sometimes anywhere
            const size_t pos = (tu_next(&r) % 4) ? tu_next(&r) % meta : tu_next(&r) % n;
            const uint64_t how = tu_next(&r);
            if (how % 3 == 0) x[pos] ^= (unsigned char)(1u << (how >> 8) % 8); // one bit
            else x[pos] = (unsigned char)(how >> 16);                          // a random byte
        }
        Model m;
        char err[512];
        err[0] = 0;
        const int rc = model_load_buffer(&m, x, n, err, sizeof err);
        if (rc != 0) {
            if (rc != -1 || err[0] == 0) fail_msg("fuzz %d: rc %d, err '%s'", it, rc, err);
            continue;
        }
        // accepted: it must also be safe to run
        loaded++;
        RunState s;
        if (state_create(&s, &m, 4, 2, (it & 1) ? MLA_NAIVE : MLA_ABSORBED, err, sizeof err) == 0) {
            const int toks[2] = {0, 1};
            forward(&m, &s, toks, 2, 0, 2);
            forward(&m, &s, toks, 1, 2, 1);
            state_free(&s);
        }
        model_free(&m);
    }
    omp_set_num_threads(threads);
    // some flips land in weights or unchecked bytes, so some loads succeed
    assert_true(loaded > 0);
    free(x);
    free(b);
    tu_model_free(&tm);
}

/* --- model_load on the file system ----------------------------------------------------------- */

static void test_model_load_files(void **state) {
    (void)state;
    Model m;
    char err[512];
    memset(err, 0, sizeof err);
    assert_int_equal(model_load(&m, "/nonexistent/dir/model.bin", err, sizeof err), -1);
    assert_non_null(strstr(err, "/nonexistent/dir/model.bin"));
    assert_null(strchr(err, '\n'));
    model_free(&m);

    char dir[] = "/tmp/mixattn-dir-XXXXXX";
    assert_non_null(mkdtemp(dir));
    memset(err, 0, sizeof err);
    assert_int_equal(model_load(&m, dir, err, sizeof err), -1);
    assert_non_null(strstr(err, dir));
    assert_true(strlen(err) > strlen(dir));
    assert_null(strchr(err, '\n'));
    model_free(&m);
    rmdir(dir);

    // a valid file loads through mmap with the same values
    TuModel tm;
    size_t n;
    unsigned char *b = base_bytes(&tm, &n);
    char *path = tu_write_temp(b, n);
    assert_non_null(path);
    if (model_load(&m, path, err, sizeof err)) fail_msg("model_load: %s", err);
    remove(path); // the model keeps nothing of the file
    assert_memory_equal(m.layers[1].mla.wkv_a, tu_layer_data(&tm, 1, "wkv_a"), sizeof(float) * 6 * 8);
    assert_memory_equal(m.tokenizer, TOK_BLOB, sizeof TOK_BLOB - 1);
    model_free(&m);
    // a corrupt file names the problem and the file
    b[0] = 'Z';
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(b, 1, n, f), n);
    fclose(f);
    memset(err, 0, sizeof err);
    assert_int_equal(model_load(&m, path, err, sizeof err), -1);
    assert_non_null(strstr(err, "magic"));
    assert_non_null(strstr(err, path));
    model_free(&m);
    remove(path);
    free(path);
    free(b);
    tu_model_free(&tm);
}

/* --- f16 and bf16 ------------------------------------------------------------------------------- */

static float bits_to_float(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static void test_f16_bf16_values(void **state) {
    (void)state;
    TuModel tm;
    base_model(&tm);
    // f16 norm [8] and f16 ffn_norm [8]: patterns with closed-form values
    static const uint16_t h16[16] = {0x0000, 0x8000, 0x0001, 0x03FF, 0x0400, 0x3C00, 0xC000, 0x7BFF,
                                     0x7C00, 0xFC00, 0x3555, 0x8001, 0x0200, 0x3800, 0x4248, 0xBC00};
    const double h16_want[16] = {0.0, -0.0, ldexp(1, -24), ldexp(1023, -24), ldexp(1, -14), 1.0, -2.0, 65504.0,
                                 INFINITY, -INFINITY, 0.333251953125, -ldexp(1, -24), ldexp(1, -15), 0.5,
                                 3.140625, -1.0};
    TuTensor *t = tu_find(&tm, "norm");
    t->dtype = TU_F16;
    t->raw16 = malloc(16);
    memcpy(t->raw16, h16, 16);
    t = tu_find(&tm, "layers.0.ffn_norm");
    t->dtype = TU_F16;
    t->raw16 = malloc(16);
    memcpy(t->raw16, h16 + 8, 16);
    // bf16 attn_norm [8]
    static const uint16_t b16[8] = {0x3F80, 0xC040, 0x0001, 0x8000, 0x7F80, 0xFF80, 0x0080, 0x4049};
    const double b16_want[8] = {1.0, -3.0, ldexp(1, -133), -0.0, INFINITY, -INFINITY, ldexp(1, -126), 3.140625};
    t = tu_find(&tm, "layers.0.attn_norm");
    t->dtype = TU_BF16;
    t->raw16 = malloc(16);
    memcpy(t->raw16, b16, 16);
    // a bf16 matrix and a 3-d bf16 tensor, rounded from their f32 values by the builder
    tu_find(&tm, "tok_embeddings")->dtype = TU_BF16;
    tu_find(&tm, "layers.1.w_uk")->dtype = TU_BF16;
    // an f16 NaN
    static const uint16_t h16b[3] = {0x7E00, 0x3C01, 0xFBFF};
    t = tu_find(&tm, "layers.1.bq_a");
    t->dtype = TU_F16;
    t->raw16 = malloc(6);
    memcpy(t->raw16, h16b, 6);

    size_t n;
    unsigned char *b = tu_serialize(&tm, &n);
    Model m;
    char err[512];
    if (model_load_buffer(&m, b, n, err, sizeof err)) fail_msg("f16/bf16 model: %s", err);
    for (int i = 0; i < 8; i++) {
        const float got = m.norm[i];
        if (!(got == (float)h16_want[i] && !!signbit(got) == !!signbit(h16_want[i])))
            fail_msg("f16 0x%04x: got %.10g, want %.10g", h16[i], got, h16_want[i]);
        const float got2 = m.layers[0].ffn_norm[i];
        if (!(got2 == (float)h16_want[8 + i] && !!signbit(got2) == !!signbit(h16_want[8 + i])))
            fail_msg("f16 0x%04x: got %.10g, want %.10g", h16[8 + i], got2, h16_want[8 + i]);
        const float got3 = m.layers[0].attn_norm[i];
        if (!(got3 == (float)b16_want[i] && !!signbit(got3) == !!signbit(b16_want[i])))
            fail_msg("bf16 0x%04x: got %.10g, want %.10g", b16[i], got3, b16_want[i]);
    }
    assert_true(isnan(m.layers[1].mla.bq_a[0]));
    assert_true(m.layers[1].mla.bq_a[1] == (float)(1.0 + ldexp(1, -10)));
    assert_true(m.layers[1].mla.bq_a[2] == -65504.0f);
    // bf16 tensors: value = the 16 bits as the high half of an f32
    const float *emb = tu_data(&tm, "tok_embeddings");
    for (int i = 0; i < 6 * 8; i++) {
        const float want = bits_to_float((uint32_t)tu_f32_to_bf16(emb[i]) << 16);
        assert_true(m.tok_embeddings[i] == want);
        assert_true(fabsf(m.tok_embeddings[i] - emb[i]) <= fabsf(emb[i]) * (1.0f / 256)); // bf16 precision
    }
    const float *uk = tu_layer_data(&tm, 1, "w_uk");
    for (int i = 0; i < 2 * 2 * 4; i++)
        assert_true(m.layers[1].mla.w_uk[i] == bits_to_float((uint32_t)tu_f32_to_bf16(uk[i]) << 16));
    // n_params counts elements, whatever their dtype
    size_t total = 0;
    for (int i = 0; i < tm.n_tensors; i++) total += tm.tensors[i].count;
    assert_int_equal(m.n_params, total);
    model_free(&m);
    free(b);
    tu_model_free(&tm);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_model_loads),
        cmocka_unit_test(test_header_errors),
        cmocka_unit_test(test_layer_errors),
        cmocka_unit_test(test_directory_errors),
        cmocka_unit_test(test_tensor_set_errors),
        cmocka_unit_test(test_error_is_one_line_with_hostile_names),
        cmocka_unit_test(test_every_truncation_fails),
        cmocka_unit_test(test_fuzz_flipped_bytes),
        cmocka_unit_test(test_model_load_files),
        cmocka_unit_test(test_f16_bf16_values),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
