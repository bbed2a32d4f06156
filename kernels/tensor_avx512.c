// The products with AVX-512 (F, BW, VL) and VNNI: 16 f32 lanes for the float dtypes (f16/bf16
// widened in registers: vcvtph2ps / a 16-bit shift), vpdpbusd for the block dtypes (8 int32
// lanes of 4-byte dot products per 32-column block). Compiled for any x86-64: each function
// carries its own target attribute and runs only when tensor.c has seen the CPU's flags.
#include "kernels/tensor_isa.h"

#ifdef KERNELS_X86
#include <immintrin.h>
#include <stdlib.h>

#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi,avx2,fma,f16c")))
#define INLINE static inline __attribute__((always_inline)) AVX512

// --- loading 16 weights of a float dtype as f32 ---------------------------------------------

INLINE __m512 load16(DType t, const void *row, int c) {
    if (t == DTYPE_F32) return _mm512_loadu_ps((const float *)row + c);
    const __m256i h = _mm256_loadu_si256((const __m256i *)((const uint16_t *)row + c));
    if (t == DTYPE_F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)); // bf16
}

// the same for the m lanes of a tail (the others 0)
INLINE __m512 load16_tail(DType t, const void *row, int c, __mmask16 m) {
    if (t == DTYPE_F32) return _mm512_maskz_loadu_ps(m, (const float *)row + c);
    const __m256i h = _mm256_maskz_loadu_epi16(m, (const uint16_t *)row + c);
    if (t == DTYPE_F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

// The sums of a0..a3 (16 lanes each) stored to y[0..3]: one reduction for the four (folding
// halves, then quarters, then within 128-bit lanes) instead of four separate ones.
INLINE void store_sums4(float *y, __m512 a0, __m512 a1, __m512 a2, __m512 a3) {
    const __m512 s01 = _mm512_add_ps(_mm512_shuffle_f32x4(a0, a1, 0x44), _mm512_shuffle_f32x4(a0, a1, 0xEE));
    const __m512 s23 = _mm512_add_ps(_mm512_shuffle_f32x4(a2, a3, 0x44), _mm512_shuffle_f32x4(a2, a3, 0xEE));
    // 128-bit lane i now holds 4 partial sums of a_i
    __m512 t = _mm512_add_ps(_mm512_shuffle_f32x4(s01, s23, 0x88), _mm512_shuffle_f32x4(s01, s23, 0xDD));
    t = _mm512_add_ps(t, _mm512_permute_ps(t, 0x4E));
    t = _mm512_add_ps(t, _mm512_permute_ps(t, 0xB1));
    const __m512 r = _mm512_permutexvar_ps(_mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), t);
    _mm_storeu_ps(y, _mm512_castps512_ps128(r));
}

// --- float dtypes: one row . x (decode) ----------------------------------------------------------

// Four accumulators over 64 columns at a time, then 16 at a time, then a masked tail.
INLINE float dot_float(DType t, const void *w, const float *x, int n) {
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int c = 0;
    for (; c + 64 <= n; c += 64) {
        a0 = _mm512_fmadd_ps(load16(t, w, c), _mm512_loadu_ps(x + c), a0);
        a1 = _mm512_fmadd_ps(load16(t, w, c + 16), _mm512_loadu_ps(x + c + 16), a1);
        a2 = _mm512_fmadd_ps(load16(t, w, c + 32), _mm512_loadu_ps(x + c + 32), a2);
        a3 = _mm512_fmadd_ps(load16(t, w, c + 48), _mm512_loadu_ps(x + c + 48), a3);
    }
    for (; c + 16 <= n; c += 16) a0 = _mm512_fmadd_ps(load16(t, w, c), _mm512_loadu_ps(x + c), a0);
    if (c < n) {
        const __mmask16 m = (__mmask16)((1u << (n - c)) - 1);
        a1 = _mm512_fmadd_ps(load16_tail(t, w, c, m), _mm512_maskz_loadu_ps(m, x + c), a1);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}

// --- float dtypes: R rows x T tokens (prefill) ----------------------------------------------------

// acc[r][k] sums row r . token k over all columns, 16 lanes at a time: each weight vector is
// loaded (and widened) once for T tokens, each activation vector once for R rows.
INLINE void tile_float(DType t, int R, int T, float *Y, size_t ldy, const char *W, size_t rb,
                       const float *X, int n) {
    __m512 acc[4][4];
    for (int r = 0; r < R; r++)
        for (int k = 0; k < T; k++) acc[r][k] = _mm512_setzero_ps();
    int c = 0;
    for (; c + 16 <= n; c += 16) {
        __m512 w[4];
        for (int r = 0; r < R; r++) w[r] = load16(t, W + r * rb, c);
        for (int k = 0; k < T; k++) {
            const __m512 x = _mm512_loadu_ps(X + (size_t)k * n + c);
            for (int r = 0; r < R; r++) acc[r][k] = _mm512_fmadd_ps(w[r], x, acc[r][k]);
        }
    }
    if (c < n) {
        const __mmask16 m = (__mmask16)((1u << (n - c)) - 1);
        __m512 w[4];
        for (int r = 0; r < R; r++) w[r] = load16_tail(t, W + r * rb, c, m);
        for (int k = 0; k < T; k++) {
            const __m512 x = _mm512_maskz_loadu_ps(m, X + (size_t)k * n + c);
            for (int r = 0; r < R; r++) acc[r][k] = _mm512_fmadd_ps(w[r], x, acc[r][k]);
        }
    }
    for (int k = 0; k < T; k++) {
        if (R == 4) {
            store_sums4(Y + (size_t)k * ldy, acc[0][k], acc[1][k], acc[2][k], acc[3][k]);
            continue;
        }
        for (int r = 0; r < R; r++) Y[(size_t)k * ldy + r] = _mm512_reduce_add_ps(acc[r][k]);
    }
}

// --- float dtypes: outer products (prefill of 16 tokens or more) ---------------------------------
//
// The tile above sums row . token dot products, so it ends in horizontal sums and re-reads each
// activation vector once per 4 rows. For longer prefills the product is turned around, as BLAS
// does: Y[k][r .. r+32) += x[k][c] * W[r .. r+32)[c] summed over c. Column c of 32 rows is two
// vectors of a panel packed from W (transposed, widened to f32) and x[k][c] is one broadcast,
// so a register tile of 32 rows x 12 tokens does 24 FMAs per 2 vector loads + 12 broadcasts,
// and each accumulator is already 16 consecutive outputs. One panel (32 rows x 512 columns,
// 64 KB, in L2) is packed once for all the tokens; 512 measured better than 128, 256 or 1024
// (docs/KERNELS.md).
#define PANEL_ROWS 32
#define PANEL_COLS AVX512_PANEL_COLS
#define OUTER_MIN_TOKENS 16

// v[i][j] -> v[j][i]: 16 x 16 floats in registers (pairs, then quads within 128-bit lanes,
// then the lanes themselves)
INLINE void transpose16(__m512 v[16]) {
    __m512 t[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(v[i], v[i + 1]);     // per lane: a0 b0 a1 b1
        t[i + 1] = _mm512_unpackhi_ps(v[i], v[i + 1]); //           a2 b2 a3 b3
    }
    for (int i = 0; i < 16; i += 4) { // lane L of v[i + j] = column 4L + j of rows i .. i+3
        const __m512d a = _mm512_castps_pd(t[i]), b = _mm512_castps_pd(t[i + 1]);
        const __m512d c = _mm512_castps_pd(t[i + 2]), d = _mm512_castps_pd(t[i + 3]);
        v[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
        v[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
        v[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
        v[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
    }
    for (int j = 0; j < 4; j++) { // column 4L + j: lane L of v[j], v[4 + j], v[8 + j], v[12 + j]
        const __m512 s0 = _mm512_shuffle_f32x4(v[j], v[4 + j], 0x44); // lanes 0 1 of each
        const __m512 s1 = _mm512_shuffle_f32x4(v[j], v[4 + j], 0xEE); // lanes 2 3
        const __m512 s2 = _mm512_shuffle_f32x4(v[8 + j], v[12 + j], 0x44);
        const __m512 s3 = _mm512_shuffle_f32x4(v[8 + j], v[12 + j], 0xEE);
        t[j] = _mm512_shuffle_f32x4(s0, s2, 0x88);
        t[4 + j] = _mm512_shuffle_f32x4(s0, s2, 0xDD);
        t[8 + j] = _mm512_shuffle_f32x4(s1, s3, 0x88);
        t[12 + j] = _mm512_shuffle_f32x4(s1, s3, 0xDD);
    }
    for (int i = 0; i < 16; i++) v[i] = t[i];
}

// P[c][i] = W[i][c0 + c] (as f32) for rows i < R, 0 for R <= i < 32; columns c < C
INLINE void pack_panel(DType t, float *P, const char *W, size_t rb, int R, int c0, int C) {
    for (int c = 0; c < C; c += 16) {
        const int width = C - c < 16 ? C - c : 16;
        const __mmask16 m = (__mmask16)((1u << width) - 1);
        for (int half = 0; half < PANEL_ROWS; half += 16) {
            __m512 v[16];
            for (int i = 0; i < 16; i++)
                v[i] = half + i < R ? load16_tail(t, W + (half + i) * rb, c0 + c, m) : _mm512_setzero_ps();
            transpose16(v);
            for (int j = 0; j < width; j++) _mm512_store_ps(P + (c + j) * PANEL_ROWS + half, v[j]);
        }
    }
}

// Y[k][0 .. 32) (lanes m0, m1 of its two halves) = (first ? 0 : Y) + sum_c x[k][c] * P[c] for
// tokens k < T; x[k] = X + k * ldx
// (V = 2 vectors of 16 rows, or 1 for a panel of at most 16 rows: a thread's last one)
INLINE void outer_tile(int V, int T, float *Y, size_t ldy, const float *P, int C, const float *X,
                       size_t ldx, const __mmask16 m[2], int first) {
    __m512 acc[12][2];
    for (int k = 0; k < T; k++)
        for (int v = 0; v < V; v++)
            acc[k][v] = first ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(m[v], Y + k * ldy + 16 * v);
    for (int c = 0; c < C; c++) {
        __m512 w[2];
        for (int v = 0; v < V; v++) w[v] = _mm512_load_ps(P + c * PANEL_ROWS + 16 * v);
        for (int k = 0; k < T; k++) {
            const __m512 x = _mm512_set1_ps(X[k * ldx + c]);
            for (int v = 0; v < V; v++) acc[k][v] = _mm512_fmadd_ps(w[v], x, acc[k][v]);
        }
    }
    for (int k = 0; k < T; k++)
        for (int v = 0; v < V; v++) _mm512_mask_storeu_ps(Y + k * ldy + 16 * v, m[v], acc[k][v]);
}

// The weights the next pack_panel will read (rows x bytes from p, rows rb apart). Fetched
// into cache while the tokens pass the current panel, a slice after each register tile: a
// product's weights come from memory once (a stories15M layer does not stay in L3 across a
// prefill), and packing them straight from DRAM was a third of the time.
typedef struct { const char *p; size_t rb; int rows, lines; } NextPanel; // lines: 64 B per row

INLINE void prefetch_slice(const NextPanel *f, int part, int parts) {
    const int total = f->rows * f->lines;
    for (int i = total * part / parts; i < total * (part + 1) / parts; i++)
        __builtin_prefetch(f->p + (size_t)(i / f->lines) * f->rb + (size_t)(i % f->lines) * 64, 0, 3);
}

// all n tokens past one packed panel: 12 at a time, then 8, 4, 2, 1
INLINE void outer_tokens(int V, float *Y, size_t ldy, const float *P, int C, const float *X, int cols,
                         int n, const __mmask16 m[2], int first, const NextPanel *next) {
    int k = 0;
    const int tiles = n / 12 > 0 ? n / 12 : 1;
    for (; k + 12 <= n; k += 12) {
        outer_tile(V, 12, Y + k * ldy, ldy, P, C, X + (size_t)k * cols, cols, m, first);
        prefetch_slice(next, k / 12, tiles);
    }
    if (n < 12) prefetch_slice(next, 0, 1);
    if (k + 8 <= n) { outer_tile(V, 8, Y + k * ldy, ldy, P, C, X + (size_t)k * cols, cols, m, first); k += 8; }
    if (k + 4 <= n) { outer_tile(V, 4, Y + k * ldy, ldy, P, C, X + (size_t)k * cols, cols, m, first); k += 4; }
    if (k + 2 <= n) { outer_tile(V, 2, Y + k * ldy, ldy, P, C, X + (size_t)k * cols, cols, m, first); k += 2; }
    if (k < n) outer_tile(V, 1, Y + k * ldy, ldy, P, C, X + (size_t)k * cols, cols, m, first);
}

// Y[k * ldy + r - r0] = row r . token k for rows r0 <= r < r1 and tokens k < n
INLINE void gemm_outer(DType t, float *Y, size_t ldy, const char *W, size_t rb, int r0, int r1,
                       const float *X, int cols, int n) {
    _Alignas(64) float P[PANEL_ROWS * PANEL_COLS];
    for (int r = r0; r < r1; r += PANEL_ROWS) {
        const int R = r1 - r < PANEL_ROWS ? r1 - r : PANEL_ROWS;
        const __mmask16 m[2] = {(__mmask16)(R >= 16 ? 0xFFFF : (1u << R) - 1),
                                (__mmask16)(R >= 32 ? 0xFFFF : R > 16 ? (1u << (R - 16)) - 1 : 0)};
        for (int c0 = 0; c0 < cols; c0 += PANEL_COLS) {
            const int C = cols - c0 < PANEL_COLS ? cols - c0 : PANEL_COLS;
            pack_panel(t, P, W + (size_t)r * rb, rb, R, c0, C);
            // the panel packed after this one: the next columns of these rows, or the next rows
            const int nc0 = c0 + C < cols ? c0 + C : 0, nr = nc0 ? r : r + PANEL_ROWS;
            const int nR = r1 - nr < PANEL_ROWS ? r1 - nr : PANEL_ROWS;
            const int nC = cols - nc0 < PANEL_COLS ? cols - nc0 : PANEL_COLS;
            const size_t es = t == DTYPE_F32 ? 4 : 2;
            const NextPanel next = {nR > 0 ? W + (size_t)nr * rb + nc0 * es : W, rb, nR > 0 ? nR : 0,
                                    (int)((nC * es + 63) / 64)}; // (none after the last)
            if (R > 16) outer_tokens(2, Y + (r - r0), ldy, P, C, X + c0, cols, n, m, c0 == 0, &next);
            else outer_tokens(1, Y + (r - r0), ldy, P, C, X + c0, cols, n, m, c0 == 0, &next);
        }
    }
}

// --- block dtypes ---------------------------------------------------------------------------------

// 32 weights of a block as unsigned bytes u with u - off = the weight: q8_0 flips the sign bit
// (w + 128), q4_0 unpacks its nibbles into column order (low nibbles 0..15, high 16..31).
INLINE __m256i block_bytes(DType t, const void *blk) {
    if (t == DTYPE_Q8_0)
        return _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)((const BlockQ8_0 *)blk)->qs),
                                _mm256_set1_epi8((char)0x80));
    const __m128i p = _mm_loadu_si128((const __m128i *)((const BlockQ4_0 *)blk)->qs);
    const __m128i lo = _mm_and_si128(p, _mm_set1_epi8(15));
    const __m128i hi = _mm_and_si128(_mm_srli_epi16(p, 4), _mm_set1_epi8(15));
    return _mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1);
}

// the offset's shift: 128 = 1 << 7 for q8_0, 8 = 1 << 3 for q4_0
#define OFFSET_SHIFT(t) ((t) == DTYPE_Q8_0 ? 7 : 3)
#define BLOCK_BYTES(t) ((t) == DTYPE_Q8_0 ? sizeof(BlockQ8_0) : sizeof(BlockQ4_0))

INLINE float block_scale(const void *blk) { return _cvtsh_ss(*(const uint16_t *)blk); }

// --- two blocks per 512-bit vector --------------------------------------------------------------

// two consecutive blocks of a row as 64 unsigned bytes (the second in the upper half); `two` = 0:
// only the first, the upper half zero (so its products are 0 whatever the scale)
INLINE __m512i block_bytes2(DType t, const char *blk, int two) {
    const __m512i lo = _mm512_zextsi256_si512(block_bytes(t, blk));
    return two ? _mm512_inserti64x4(lo, block_bytes(t, blk + BLOCK_BYTES(t)), 1) : lo;
}

// 8 lanes of a, then 8 lanes of b
INLINE __m512 halves(float a, float b) {
    return _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castps_pd(_mm512_set1_ps(a)),
                                               _mm256_castps_pd(_mm256_set1_ps(b)), 1));
}

// the activation's quants and offset init of blocks b, b+1 (or b alone)
INLINE __m512i act_bytes2(const int8_t *q, int two) {
    return two ? _mm512_loadu_si512(q) : _mm512_zextsi256_si512(_mm256_loadu_si256((const __m256i *)q));
}
INLINE __m512i act_init2(DType t, const int32_t *lsum, int two) {
    const __m512i v = two ? _mm512_loadu_si512(lsum)
                          : _mm512_zextsi256_si512(_mm256_loadu_si256((const __m256i *)lsum));
    return _mm512_slli_epi32(v, OFFSET_SHIFT(t));
}

// R rows x T tokens over blocks b, b+1 (or b alone): each pair of weight blocks is unpacked once
// for T tokens, each pair of activation blocks loaded once for R rows
INLINE void tile_block_step(DType t, int R, int T, __m512 acc[4][4], const char *W, size_t rb,
                            const ActQ8 *a, int b, int two) {
    const int nb = a->cols / QK;
    __m512i u[4];
    __m512 dw[4];
    for (int r = 0; r < R; r++) {
        const char *blk = W + r * rb + b * BLOCK_BYTES(t);
        u[r] = block_bytes2(t, blk, two);
        dw[r] = halves(block_scale(blk), two ? block_scale(blk + BLOCK_BYTES(t)) : 0.0f);
    }
    for (int k = 0; k < T; k++) {
        const __m512i x = act_bytes2(a->q + (size_t)k * a->cols + b * QK, two);
        const __m512i init = act_init2(t, a->lsum + (size_t)k * a->cols / 4 + b * 8, two);
        const float *d = a->d + (size_t)k * nb + b;
        const __m512 dx = halves(d[0], two ? d[1] : 0.0f);
        for (int r = 0; r < R; r++) {
            const __m512i p = _mm512_dpbusd_epi32(init, u[r], x);
            acc[r][k] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), _mm512_mul_ps(dw[r], dx), acc[r][k]);
        }
    }
}

INLINE void tile_block(DType t, int R, int T, float *Y, size_t ldy, const char *W, size_t rb,
                       const ActQ8 *a) {
    const int nb = a->cols / QK;
    __m512 acc[4][4];
    for (int r = 0; r < R; r++)
        for (int k = 0; k < T; k++) acc[r][k] = _mm512_setzero_ps();
    int b = 0;
    for (; b + 2 <= nb; b += 2) tile_block_step(t, R, T, acc, W, rb, a, b, 1);
    if (b < nb) tile_block_step(t, R, T, acc, W, rb, a, b, 0);
    for (int k = 0; k < T; k++) {
        if (R == 4) {
            store_sums4(Y + (size_t)k * ldy, acc[0][k], acc[1][k], acc[2][k], acc[3][k]);
            continue;
        }
        for (int r = 0; r < R; r++) Y[(size_t)k * ldy + r] = _mm512_reduce_add_ps(acc[r][k]);
    }
}

// --- block dtypes, decode: R rows . one token ---------------------------------------------------
//
// Each step reads a group of blocks of R rows with two plain 64-byte loads per row, moves the
// quants into place with one byte permute (vpermt2b) and the f16 scales with one word permute,
// and shares the activation's vectors (quants, offset init, scales) between the R rows. The
// integer dot of each block stays exact in int32 lanes; one convert and one fma per row and step
// apply the scales. The last, partial group uses masked loads (zeros past the row's end: no read
// beyond the matrix, and zero weights, quants and scales there).

// 64-bit mask of the first n bytes (0 <= n; n >= 64: all)
INLINE __mmask64 first_bytes(int n) { return n >= 64 ? ~(__mmask64)0 : ((__mmask64)1 << (n < 0 ? 0 : n)) - 1; }

// Software prefetch distance: the same column of a later row, about PREFETCH_BYTES ahead in
// whole rows, and never inside the rows a step reads together (R). Measured on the decode steps
// of stories110M (rows of 432-2176 bytes) and of Mistral-7B's shape (2304-8064; bench/kernels.c
// and docs/KERNELS.md): 8 KB ahead read q4_0 at Mistral-7B's shape 10 % faster than the earlier
// 16 rows (36 KB there) and the same at stories110M's; q8_0 the same at both; no prefetch at all
// was slower for both.
#define PREFETCH_BYTES 8192

INLINE size_t prefetch_ahead(size_t rb, int R) {
    const size_t rows = (PREFETCH_BYTES + rb - 1) / rb;
    return (rows > (size_t)R ? rows : (size_t)R) * rb;
}

INLINE uint16_t load_u16(const char *p) {
    uint16_t v;
    __builtin_memcpy(&v, p, sizeof v);
    return v;
}

// q8_0, one row, two blocks b, b+1 (68 bytes) per step: two 32-byte loads of quants (lanes 0..7
// block b, 8..15 block b+1), the two scales widened together. (Measured: four rows at a time
// sharing the activation, and 64-byte loads with a byte permute, both read memory slower.)
INLINE float row_q8_0(const char *w, size_t rb, const ActQ8 *a) {
    const int nb = a->cols / QK;
    const __m512i didx = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    const size_t ahead = prefetch_ahead(rb, 1);
    __m512 acc = _mm512_setzero_ps();
    for (int b = 0; b < nb; b += 2) {
        const int two = b + 1 < nb;
        const char *p = w + b * sizeof(BlockQ8_0);
        _mm_prefetch(p + ahead, _MM_HINT_T0); // both ends of the 68 bytes
        _mm_prefetch(p + ahead + 2 * sizeof(BlockQ8_0) - 1, _MM_HINT_T0);
        const __m256i w0 = _mm256_loadu_si256((const __m256i *)(p + 2));
        const __m512i u = _mm512_xor_si512(
            two ? _mm512_inserti64x4(_mm512_castsi256_si512(w0), _mm256_loadu_si256((const __m256i *)(p + 36)), 1)
                : _mm512_zextsi256_si512(w0),
            flip);
        const __m512i x = two ? _mm512_loadu_si512(a->q + b * QK) : _mm512_zextsi256_si512(_mm256_loadu_si256((const __m256i *)(a->q + b * QK)));
        const __m512i init = _mm512_slli_epi32(two ? _mm512_loadu_si512(a->lsum + b * 8)
                                                   : _mm512_maskz_loadu_epi32(0xFF, a->lsum + b * 8), 7);
        const __m512i dot = _mm512_dpbusd_epi32(init, u, x);
        // d_w * d_x of both blocks in lanes 0, 1, then spread over their 8 lanes each
        __m128i h = _mm_cvtsi32_si128(load_u16(p));
        if (two) h = _mm_insert_epi16(h, load_u16(p + sizeof(BlockQ8_0)), 1);
        const __m128 s = _mm_mul_ps(_mm_cvtph_ps(h), _mm_maskz_loadu_ps(two ? 3 : 1, a->d + b));
        acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_permutexvar_ps(didx, _mm512_castps128_ps512(s)), acc);
    }
    return _mm512_reduce_add_ps(acc);
}

// q4_0 in groups of four blocks b..b+3 (72 bytes of a row): bytes 0..63 and 8..71 give the four
// blocks' packed nibbles (16 bytes each, one 128-bit lane per block) and scales (words 0, 9, 18,
// 27); the low nibbles (columns 0..15 of each block) and the high ones (16..31) are multiplied
// by the activation's quants permuted to the same order, into the same int32 lanes.

// one row's group: the nibbles as unsigned bytes (lo: columns 0..15 of each block, hi: 16..31)
// and the scales (lanes 4j..4j+3: block b+j); `left` < 4 blocks: masked loads, zeros past them
INLINE void weights_q4_0(const char *p, int left, __m512i *lo, __m512i *hi, __m512 *dw) {
    const __m512i widx = _mm512_setr_epi32(0x05040302, 0x09080706, 0x0D0C0B0A, 0x11100F0E,
                                           0x17161514, 0x1B1A1918, 0x1F1E1D1C, 0x23222120,
                                           0x29282726, 0x2D2C2B2A, 0x31302F2E, 0x35343332,
                                           0x73727170, 0x77767574, 0x7B7A7978, 0x7F7E7D7C);
    const __m512i sidx = _mm512_setr_epi32(0, 0, 0x00090009, 0x00090009, 0x00120012, 0x00120012,
                                           0x001B001B, 0x001B001B, 0, 0, 0, 0, 0, 0, 0, 0);
    const __m512i low4 = _mm512_set1_epi8(15);
    const int full = left == 4;
    const __m512i l0 = full ? _mm512_loadu_si512(p) : _mm512_maskz_loadu_epi8(first_bytes(left * 18), p);
    const __m512i l1 = full ? _mm512_loadu_si512(p + 8) : _mm512_maskz_loadu_epi8(first_bytes(left * 18 - 8), p + 8);
    const __m512i nib = _mm512_permutex2var_epi8(l0, widx, l1);
    *lo = _mm512_and_si512(nib, low4);
    *hi = _mm512_and_si512(_mm512_srli_epi16(nib, 4), low4);
    *dw = _mm512_cvtph_ps(_mm512_castsi512_si256(_mm512_permutexvar_epi16(sidx, l0)));
}

// q8_0 in the same groups of four blocks b..b+3 (136 bytes of a row), for the GEMM: columns 0..15
// of each block (lo) and 16..31 (hi) gathered from two pairs of 64-byte loads by byte permutes
// (the indices: byte offsets into the group, the second pair loaded from byte 8), w + 128 as
// unsigned bytes; the scales from words 0, 17, 34, 51.
static const uint8_t Q8_LO_IDX[64] = {2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17,
    36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 70, 71, 72, 73, 74, 75, 76,
    77, 78, 79, 80, 81, 82, 83, 84, 85, 104, 105, 106, 107, 108, 109, 110, 111, 112, 113, 114,
    115, 116, 117, 118, 119};
static const uint8_t Q8_HI_IDX[64] = {10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23,
    24, 25, 44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 78, 79, 80, 81, 82,
    83, 84, 85, 86, 87, 88, 89, 90, 91, 92, 93, 112, 113, 114, 115, 116, 117, 118, 119, 120,
    121, 122, 123, 124, 125, 126, 127};
static const uint16_t Q8_SCALE_IDX[32] = {0, 0, 0, 0, 17, 17, 17, 17, 34, 34, 34, 34, 51, 51,
    51, 51, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};

INLINE void weights_q8_0(const char *p, int left, __m512i *lo, __m512i *hi, __m512 *dw) {
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    const int n = left * (int)sizeof(BlockQ8_0);
    const int full = left == 4;
    const __m512i a0 = full ? _mm512_loadu_si512(p) : _mm512_maskz_loadu_epi8(first_bytes(n), p);
    const __m512i a1 = full ? _mm512_loadu_si512(p + 64) : _mm512_maskz_loadu_epi8(first_bytes(n - 64), p + 64);
    const __m512i b0 = full ? _mm512_loadu_si512(p + 8) : _mm512_maskz_loadu_epi8(first_bytes(n - 8), p + 8);
    const __m512i b1 = full ? _mm512_loadu_si512(p + 72) : _mm512_maskz_loadu_epi8(first_bytes(n - 72), p + 72);
    *lo = _mm512_xor_si512(_mm512_permutex2var_epi8(a0, _mm512_loadu_si512(Q8_LO_IDX), a1), flip);
    *hi = _mm512_xor_si512(_mm512_permutex2var_epi8(b0, _mm512_loadu_si512(Q8_HI_IDX), b1), flip);
    *dw = _mm512_cvtph_ps(_mm512_castsi512_si256(
        _mm512_permutex2var_epi16(a0, _mm512_loadu_si512(Q8_SCALE_IDX), a1)));
}

// one token's group, in the weights' order: quants lo / hi, the offset init (each 128-bit lane
// sums to -8 * the block's quant sum) and the activation scales (lanes 4j..4j+3: block b+j)
typedef struct { __m512i lo, hi, init; __m512 dx; } ActGroupQ4;

INLINE ActGroupQ4 act_group(const int8_t *q, const float *d, const int32_t *lsum, int nb, int b, int shift) {
    const __m512i xlo = _mm512_setr_epi32(0x03020100, 0x07060504, 0x0B0A0908, 0x0F0E0D0C,
                                          0x23222120, 0x27262524, 0x2B2A2928, 0x2F2E2D2C,
                                          0x43424140, 0x47464544, 0x4B4A4948, 0x4F4E4D4C,
                                          0x63626160, 0x67666564, 0x6B6A6968, 0x6F6E6D6C);
    const __m512i xhi = _mm512_add_epi8(xlo, _mm512_set1_epi8(16));
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    const __m512i didx = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
    const int left = nb - b < 4 ? nb - b : 4;
    const __m512i q0 = _mm512_maskz_loadu_epi8(first_bytes(left * QK), q + b * QK);
    const __m512i q1 = _mm512_maskz_loadu_epi8(first_bytes(left * QK - 64), q + b * QK + 64);
    // lane 4j + i: 8 * (the lsums 2i, 2i+1 of block b+j)
    const __mmask16 lm0 = (__mmask16)(left >= 2 ? 0xFFFF : 0xFF);
    const __mmask16 lm1 = (__mmask16)(left == 4 ? 0xFFFF : left == 3 ? 0xFF : 0);
    const __m512i s0 = _mm512_maskz_loadu_epi32(lm0, lsum + b * 8);
    const __m512i s1 = _mm512_maskz_loadu_epi32(lm1, lsum + b * 8 + 16);
    ActGroupQ4 g;
    g.lo = _mm512_permutex2var_epi8(q0, xlo, q1);
    g.hi = _mm512_permutex2var_epi8(q0, xhi, q1);
    g.init = _mm512_slli_epi32(_mm512_add_epi32(_mm512_permutex2var_epi32(s0, even, s1),
                                                _mm512_permutex2var_epi32(s0, odd, s1)), shift);
    g.dx = _mm512_permutexvar_ps(didx, _mm512_maskz_loadu_ps((__mmask16)((1u << left) - 1), d + b));
    return g;
}

// acc += the group's products: exact int32 dots of the 4 blocks, then one scale per block
INLINE __m512 group_q4_0(__m512 acc, __m512i lo, __m512i hi, __m512 dw, const ActGroupQ4 *x) {
    const __m512i dot = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(x->init, lo, x->lo), hi, x->hi);
    return _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(dw, x->dx), acc);
}

// decode: R rows . one token, the activation's groups shared by the R rows (packed: x[g] is
// group g, prepared once per product; NULL: each group prepared here, for these R rows)
INLINE void rows_q4_0(int R, float *y, const char *W, size_t rb, const ActQ8 *a, const ActGroupQ4 *packed) {
    const int nb = a->cols / QK;
    __m512 acc[4];
    for (int r = 0; r < R; r++) acc[r] = _mm512_setzero_ps();
    const size_t ahead = prefetch_ahead(rb, R);
    for (int b = 0; b < nb; b += 4) {
        const ActGroupQ4 x = packed ? packed[b / 4] : act_group(a->q, a->d, a->lsum, nb, b, 3);
        const int left = nb - b < 4 ? nb - b : 4;
        for (int r = 0; r < R; r++) {
            const char *p = W + r * rb + b * sizeof(BlockQ4_0);
            // both ends of the group's 72 bytes: one prefetch per group would skip every
            // ninth cache line of the row (72 > 64), and each skipped line stalled a load
            _mm_prefetch(p + ahead, _MM_HINT_T0);
            _mm_prefetch(p + ahead + 4 * sizeof(BlockQ4_0) - 1, _MM_HINT_T0);
            __m512i lo, hi;
            __m512 dw;
            weights_q4_0(p, left, &lo, &hi, &dw);
            acc[r] = group_q4_0(acc[r], lo, hi, dw, &x);
        }
    }
    if (R == 4) store_sums4(y, acc[0], acc[1], acc[2], acc[3]);
    else for (int r = 0; r < R; r++) y[r] = _mm512_reduce_add_ps(acc[r]);
}

// prefill: R rows x T tokens, the activation packed in groups beforehand (x: token k's groups
// at x + k * groups): each row's group unpacked once for T tokens, each token's once for R rows
INLINE void tile_group(DType t, int R, int T, float *Y, size_t ldy, const char *W, size_t rb,
                       const ActGroupQ4 *x, int groups, int nb) {
    __m512 acc[4][4];
    for (int r = 0; r < R; r++)
        for (int k = 0; k < T; k++) acc[r][k] = _mm512_setzero_ps();
    for (int g = 0; g < groups; g++) {
        const int left = nb - 4 * g < 4 ? nb - 4 * g : 4;
        __m512i lo[4], hi[4];
        __m512 dw[4];
        for (int r = 0; r < R; r++) {
            const char *p = W + r * rb + g * 4 * BLOCK_BYTES(t);
            if (t == DTYPE_Q4_0) weights_q4_0(p, left, &lo[r], &hi[r], &dw[r]);
            else weights_q8_0(p, left, &lo[r], &hi[r], &dw[r]);
        }
        for (int k = 0; k < T; k++)
            for (int r = 0; r < R; r++) acc[r][k] = group_q4_0(acc[r][k], lo[r], hi[r], dw[r], x + k * groups + g);
    }
    for (int k = 0; k < T; k++) {
        if (R == 4) {
            store_sums4(Y + (size_t)k * ldy, acc[0][k], acc[1][k], acc[2][k], acc[3][k]);
            continue;
        }
        for (int r = 0; r < R; r++) Y[(size_t)k * ldy + r] = _mm512_reduce_add_ps(acc[r][k]);
    }
}

// --- entry points ------------------------------------------------------------------------------

AVX512 void avx512_quantize_act(const ActQ8 *a, int t, const float *x) {
    const int nb = a->cols / QK;
    int8_t *q = a->q + (size_t)t * a->cols;
    int32_t *ls = a->lsum + (size_t)t * a->cols / 4;
    for (int b = 0; b < nb; b++, x += QK, q += QK, ls += 8) {
        const __m512 x0 = _mm512_loadu_ps(x), x1 = _mm512_loadu_ps(x + 16);
        const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(x0), _mm512_abs_ps(x1)));
        const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        const __m512 vid = _mm512_set1_ps(id);
        // vcvtps2dq rounds to nearest even under the default MXCSR, like nearbyintf
        const __m512i q0 = _mm512_cvtps_epi32(_mm512_mul_ps(x0, vid));
        const __m512i q1 = _mm512_cvtps_epi32(_mm512_mul_ps(x1, vid));
        _mm_storeu_si128((__m128i *)q, _mm512_cvtepi32_epi8(q0));
        _mm_storeu_si128((__m128i *)(q + 16), _mm512_cvtepi32_epi8(q1));
        // lane sums of 4 quants: madd of the bytes with ones (pairs), then pairs of pairs
        const __m256i qb = _mm256_loadu_si256((const __m256i *)q);
        const __m256i s16 = _mm256_maddubs_epi16(_mm256_set1_epi8(1), qb);
        const __m256i s32 = _mm256_madd_epi16(s16, _mm256_set1_epi16(-1));
        _mm256_storeu_si256((__m256i *)ls, s32);
        a->d[(size_t)t * nb + b] = d;
    }
}

AVX512 void avx512_rows(float *y, const Matrix *W, int r0, int r1, const void *x) {
    const size_t rb = dtype_row_bytes(W->dtype, W->cols);
    const char *base = (const char *)W->data;
    switch (W->dtype) {
#define ROWS_FLOAT(T)                                                                          \
    case T:                                                                                    \
        for (int r = r0; r < r1; r++) y[r - r0] = dot_float(T, base + r * rb, x, W->cols);     \
        break;
    ROWS_FLOAT(DTYPE_F32) ROWS_FLOAT(DTYPE_F16) ROWS_FLOAT(DTYPE_BF16)
    case DTYPE_Q8_0:
        for (int r = r0; r < r1; r++) y[r - r0] = row_q8_0(base + r * rb, rb, x);
        break;
    case DTYPE_Q4_0: {
        // the activation's groups prepared once for all this call's rows (on the stack up
        // to 16384 columns: 32 KB; wider rows prepare them per 4 rows)
        const ActQ8 *a = x;
        const int nb = W->cols / QK, groups = (nb + 3) / 4;
        _Alignas(64) ActGroupQ4 stack[groups <= 128 ? groups : 1];
        const ActGroupQ4 *packed = NULL;
        if (groups <= 128) {
            for (int g = 0; g < groups; g++) stack[g] = act_group(a->q, a->d, a->lsum, nb, 4 * g, 3);
            packed = stack;
        }
        int r = r0;
        for (; r + 4 <= r1; r += 4) rows_q4_0(4, y + r - r0, base + r * rb, rb, a, packed);
        for (; r < r1; r++) rows_q4_0(1, y + r - r0, base + r * rb, rb, a, packed);
        break;
    }
    }
}

// Register tiles of 4 rows x 4 tokens, smaller ones at the edges; rows outer, so the 4 rows
// stay in L1 while the tokens of the cache tile (tensor.c) pass them.
#define TILE_CASES(FN, T, ...)                                                                 \
    switch (rr * 4 + kk) {                                                                     \
    case 5: FN(T, 1, 1, __VA_ARGS__); break;  case 6: FN(T, 1, 2, __VA_ARGS__); break;         \
    case 7: FN(T, 1, 3, __VA_ARGS__); break;  case 8: FN(T, 1, 4, __VA_ARGS__); break;         \
    case 9: FN(T, 2, 1, __VA_ARGS__); break;  case 10: FN(T, 2, 2, __VA_ARGS__); break;        \
    case 11: FN(T, 2, 3, __VA_ARGS__); break; case 12: FN(T, 2, 4, __VA_ARGS__); break;        \
    case 13: FN(T, 3, 1, __VA_ARGS__); break; case 14: FN(T, 3, 2, __VA_ARGS__); break;        \
    case 15: FN(T, 3, 3, __VA_ARGS__); break; case 16: FN(T, 3, 4, __VA_ARGS__); break;        \
    case 17: FN(T, 4, 1, __VA_ARGS__); break; case 18: FN(T, 4, 2, __VA_ARGS__); break;        \
    case 19: FN(T, 4, 3, __VA_ARGS__); break; case 20: FN(T, 4, 4, __VA_ARGS__); break;        \
    }

#define GEMM_LOOP(T, TILE, ...)                                                                \
    for (int r = r0; r < r1; r += 4) {                                                         \
        const int rr = r1 - r < 4 ? r1 - r : 4;                                                \
        for (int k = 0; k < n; k += 4) {                                                       \
            const int kk = n - k < 4 ? n - k : 4;                                              \
            TILE_CASES(TILE, T, Y + (size_t)k * ldy + (r - r0), ldy, base + r * rb, rb, __VA_ARGS__) \
        }                                                                                      \
    }

#define FLOAT_X ((const float *)X + (size_t)k * W->cols), W->cols
#define BLOCK_X (&(ActQ8){a->q + (size_t)k * a->cols, a->d + (size_t)k * (a->cols / QK),       \
                          a->lsum + (size_t)k * a->cols / 4, a->cols})

AVX512 void avx512_gemm(float *Y, size_t ldy, const Matrix *W, int r0, int r1, const void *X, int n) {
    const size_t rb = dtype_row_bytes(W->dtype, W->cols);
    const char *base = (const char *)W->data;
    const ActQ8 *a = X;
    switch (W->dtype) {
#define FLOAT_GEMM(T)                                                                          \
    case T:                                                                                    \
        if (n >= OUTER_MIN_TOKENS) gemm_outer(T, Y, ldy, base, rb, r0, r1, X, W->cols, n);     \
        else GEMM_LOOP(T, tile_float, FLOAT_X)                                                 \
        break;
    FLOAT_GEMM(DTYPE_F32) FLOAT_GEMM(DTYPE_F16) FLOAT_GEMM(DTYPE_BF16)
    case DTYPE_Q8_0: case DTYPE_Q4_0: {
        // the n tokens' activation packed in the groups' order once, for all the rows
        const int nb = W->cols / QK, groups = (nb + 3) / 4;
        ActGroupQ4 *packed = aligned_alloc(64, sizeof(ActGroupQ4) * (size_t)n * groups);
        if (!packed) { // the tiles over the unpacked activation
            if (W->dtype == DTYPE_Q8_0) GEMM_LOOP(DTYPE_Q8_0, tile_block, BLOCK_X)
            else GEMM_LOOP(DTYPE_Q4_0, tile_block, BLOCK_X)
            break;
        }
        for (int k = 0; k < n; k++)
            for (int g = 0; g < groups; g++)
                packed[(size_t)k * groups + g] = act_group(a->q + (size_t)k * a->cols, a->d + (size_t)k * nb,
                                                           a->lsum + (size_t)k * a->cols / 4, nb, 4 * g,
                                                           OFFSET_SHIFT(W->dtype));
        if (W->dtype == DTYPE_Q8_0) GEMM_LOOP(DTYPE_Q8_0, tile_group, packed + (size_t)k * groups, groups, nb)
        else GEMM_LOOP(DTYPE_Q4_0, tile_group, packed + (size_t)k * groups, groups, nb)
        free(packed);
        break;
    }
    }
}
#endif
