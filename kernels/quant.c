// Conversions between f32 and the stored dtypes: f16/bf16 scalars, and ggml's reference
// quantizers for q8_0/q4_0 blocks, bit for bit (scripts/quantize.py writes the same in numpy;
// tests/python checks they agree). docs/FORMAT.md "Block types" states the same rules.
//
// Built with -ffp-contract=off (Makefile): `x * id + 8.5f` must round twice, as numpy does,
// not once as a fused multiply-add would.
#include "kernels/tensor.h"

#include <math.h>
#include <string.h>

static uint32_t f32_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static float bits_f32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

// --- f16 / bf16 scalars -------------------------------------------------------------------

float f16_to_f32(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    const uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
    if (exp == 0) // zero or subnormal: man * 2^-24, exact in f32
        return bits_f32(f32_bits((float)man * 0x1p-24f) | sign);
    if (exp == 31) return bits_f32(sign | 0x7f800000u | (man << 13)); // inf / nan
    return bits_f32(sign | ((exp + 112) << 23) | (man << 13));
}

// Round to nearest, ties to even (what numpy's astype(float16) and F16C's vcvtps2ph do).
uint16_t f32_to_f16(float f) {
    const uint32_t x = f32_bits(f), ax = x & 0x7fffffffu;
    const uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    if (ax > 0x7f800000u) return sign | 0x7e00u;   // nan (quiet)
    if (ax >= 0x477ff000u) return sign | 0x7c00u;  // >= 65520 rounds to inf
    if (ax < 0x38800000u)                          // below 2^-14: subnormal (or zero)
        return sign | (uint16_t)nearbyintf(bits_f32(ax) * 0x1p24f); // exact scaling, then RNE
    uint32_t h = ((((ax >> 23) - 112) << 10) | ((ax & 0x7fffffu) >> 13));
    const uint32_t rest = ax & 0x1fffu;
    if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) h++; // a carry into the exponent is right
    return sign | (uint16_t)h;
}

uint16_t f32_to_bf16(float f) {
    const uint32_t x = f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u); // quiet nan
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

// --- ggml's reference block quantizers ------------------------------------------------------

// (int8_t)v for a v the quantizers below keep in range; a NaN or out-of-range v (only from
// non-finite input, which the writers refuse but a hostile activation may carry) becomes 0
// instead of an undefined conversion. The caller reports the non-finite logits it leads to.
static inline int8_t to_int8(float v) {
    return v >= -128.0f && v < 128.0f ? (int8_t)v : 0;
}

// q8_0, per block of 32: amax = max |x|; d = amax / 127 (f32); id = d ? 1/d : 0 (f32);
// q[j] = roundf(x[j] * id) (f32 product, rounded half away from zero); stored d = f16(d).
// (The quants use the f32 d, the block stores its f16 rounding: ggml's rule.)
static void quantize_q8_0(BlockQ8_0 *y, const float *x, int n) {
    for (int b = 0; b < n / QK; b++, x += QK) {
        float amax = 0.0f;
        for (int j = 0; j < QK; j++) amax = fmaxf(amax, fabsf(x[j]));
        const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        y[b].d = f32_to_f16(d);
        for (int j = 0; j < QK; j++) y[b].qs[j] = to_int8(roundf(x[j] * id));
    }
}

// q4_0, per block of 32: m = the first element of largest magnitude (signed);
// d = m / -8 (f32); id = d ? 1/d : 0 (f32); q[j] = min(15, trunc(x[j] * id + 8.5f)) with the
// product and the sum each rounded to f32; stored d = f16(d). Byte j = q[j] | q[j+16] << 4.
static void quantize_q4_0(BlockQ4_0 *y, const float *x, int n) {
    for (int b = 0; b < n / QK; b++, x += QK) {
        float amax = 0.0f, max = 0.0f;
        for (int j = 0; j < QK; j++)
            if (amax < fabsf(x[j])) { amax = fabsf(x[j]); max = x[j]; }
        const float d = max / -8.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
        y[b].d = f32_to_f16(d);
        for (int j = 0; j < QK / 2; j++) {
            const float x0 = x[j] * id, x1 = x[j + QK / 2] * id;
            int q0 = to_int8(x0 + 8.5f), q1 = to_int8(x1 + 8.5f); // both >= 0.5: trunc = floor
            if (q0 > 15) q0 = 15;
            if (q1 > 15) q1 = 15;
            y[b].qs[j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

void quantize_row(DType t, void *dst, const float *src, int n) {
    switch (t) {
    case DTYPE_F32: memcpy(dst, src, sizeof(float) * (size_t)n); break;
    case DTYPE_F16: for (int i = 0; i < n; i++) ((uint16_t *)dst)[i] = f32_to_f16(src[i]); break;
    case DTYPE_BF16: for (int i = 0; i < n; i++) ((uint16_t *)dst)[i] = f32_to_bf16(src[i]); break;
    case DTYPE_Q8_0: quantize_q8_0(dst, src, n); break;
    case DTYPE_Q4_0: quantize_q4_0(dst, src, n); break;
    }
}

void dequantize_row(DType t, float *dst, const void *src, int n) {
    switch (t) {
    case DTYPE_F32: memcpy(dst, src, sizeof(float) * (size_t)n); break;
    case DTYPE_F16: for (int i = 0; i < n; i++) dst[i] = f16_to_f32(((const uint16_t *)src)[i]); break;
    case DTYPE_BF16: for (int i = 0; i < n; i++) dst[i] = bf16_to_f32(((const uint16_t *)src)[i]); break;
    case DTYPE_Q8_0:
        for (int b = 0; b < n / QK; b++) {
            const BlockQ8_0 *blk = (const BlockQ8_0 *)src + b;
            const float d = f16_to_f32(blk->d);
            for (int j = 0; j < QK; j++) dst[b * QK + j] = d * (float)blk->qs[j];
        }
        break;
    case DTYPE_Q4_0:
        for (int b = 0; b < n / QK; b++) {
            const BlockQ4_0 *blk = (const BlockQ4_0 *)src + b;
            const float d = f16_to_f32(blk->d);
            for (int j = 0; j < QK / 2; j++) {
                dst[b * QK + j] = d * (float)((blk->qs[j] & 15) - 8);
                dst[b * QK + j + QK / 2] = d * (float)((blk->qs[j] >> 4) - 8);
            }
        }
        break;
    }
}

// --- dtype facts --------------------------------------------------------------------------

const char *dtype_name(int t) {
    static const char *const names[DTYPE_COUNT] = {"f32", "f16", "bf16", "q8_0", "q4_0"};
    return t >= 0 && t < DTYPE_COUNT ? names[t] : NULL;
}

int dtype_valid(int t) { return t >= 0 && t < DTYPE_COUNT; }

int dtype_is_block(DType t) { return t == DTYPE_Q8_0 || t == DTYPE_Q4_0; }

size_t dtype_row_bytes(DType t, int cols) {
    if (cols < 0) return 0;
    const size_t c = (size_t)cols;
    switch (t) {
    case DTYPE_F32: return 4 * c;
    case DTYPE_F16: case DTYPE_BF16: return 2 * c;
    case DTYPE_Q8_0: return c % QK ? 0 : c / QK * sizeof(BlockQ8_0);
    case DTYPE_Q4_0: return c % QK ? 0 : c / QK * sizeof(BlockQ4_0);
    }
    return 0;
}
