// Philox4x32-10 and the number conversions of fastrank's random streams, written once
// for the GPU (NVRTC / nvcc) and for the host (gcc / g++), so the same text can be
// checked on a machine without a GPU against the numba implementation
// (kernels/cpu/philox.py, whose module docstring defines the streams).
//
// Exactness: the uint32 words and the uniforms are integer work and exact scalings;
// the float32 normals use only + - * / and sqrt, each rounded once (on the device by
// the __f*_rn intrinsics, which the compiler never fuses into FMAs; on the host the
// file must be compiled with -ffp-contract=off), in exactly the order of
// normal_chunk_f32, so they match the CPU bitwise. The float64 normals call log, cos
// and sin of the platform's math library and agree with the CPU to rounding only.
#ifndef FASTRANK_PHILOX_CUH
#define FASTRANK_PHILOX_CUH

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define FR_HD __host__ __device__ __forceinline__
#else
#include <math.h>
#include <string.h>
#define FR_HD static inline
#endif

typedef unsigned int fr_u32;
typedef unsigned long long fr_u64;
typedef long long fr_i64;

// ---------------------------------------------------------------------------------
// Correctly rounded arithmetic, one rounding per operation, never contracted.
// ---------------------------------------------------------------------------------
#if defined(__CUDA_ARCH__)
#define FR_FADD(a, b) __fadd_rn((a), (b))
#define FR_FSUB(a, b) __fsub_rn((a), (b))
#define FR_FMUL(a, b) __fmul_rn((a), (b))
#define FR_FDIV(a, b) __fdiv_rn((a), (b))
#define FR_FSQRT(a) __fsqrt_rn(a)
#define FR_DADD(a, b) __dadd_rn((a), (b))
#define FR_DSUB(a, b) __dsub_rn((a), (b))
#define FR_DMUL(a, b) __dmul_rn((a), (b))
#define FR_F2U(x) __float_as_uint(x)
#define FR_U2F(x) __uint_as_float(x)
#else
#define FR_FADD(a, b) ((float)(a) + (float)(b))
#define FR_FSUB(a, b) ((float)(a) - (float)(b))
#define FR_FMUL(a, b) ((float)(a) * (float)(b))
#define FR_FDIV(a, b) ((float)(a) / (float)(b))
#define FR_FSQRT(a) sqrtf(a)
#define FR_DADD(a, b) ((double)(a) + (double)(b))
#define FR_DSUB(a, b) ((double)(a) - (double)(b))
#define FR_DMUL(a, b) ((double)(a) * (double)(b))
FR_HD fr_u32 fr_float_bits(float x) { fr_u32 u; memcpy(&u, &x, sizeof u); return u; }
FR_HD float fr_bits_float(fr_u32 u) { float x; memcpy(&x, &u, sizeof x); return x; }
#define FR_F2U(x) fr_float_bits(x)
#define FR_U2F(x) fr_bits_float(x)
#endif

// ---------------------------------------------------------------------------------
// Philox4x32-10 (Salmon et al., SC'11): counter (c0..c3), key (k0, k1) -> 4 words.
// ---------------------------------------------------------------------------------
#define FR_PHILOX_M0 0xD2511F53u
#define FR_PHILOX_M1 0xCD9E8D57u
#define FR_PHILOX_W0 0x9E3779B9u
#define FR_PHILOX_W1 0xBB67AE85u

typedef struct { fr_u32 x[4]; } fr_words;

FR_HD fr_words fr_philox4x32_10(fr_u32 c0, fr_u32 c1, fr_u32 c2, fr_u32 c3, fr_u32 k0, fr_u32 k1)
{
    for (int round = 0; round < 10; ++round) {
        fr_u64 p0 = (fr_u64)FR_PHILOX_M0 * c0;
        fr_u64 p1 = (fr_u64)FR_PHILOX_M1 * c2;
        fr_u32 n0 = (fr_u32)(p1 >> 32) ^ c1 ^ k0;
        fr_u32 n2 = (fr_u32)(p0 >> 32) ^ c3 ^ k1;
        c1 = (fr_u32)p1;
        c3 = (fr_u32)p0;
        c0 = n0;
        c2 = n2;
        k0 += FR_PHILOX_W0;
        k1 += FR_PHILOX_W1;
    }
    fr_words w;
    w.x[0] = c0; w.x[1] = c1; w.x[2] = c2; w.x[3] = c3;
    return w;
}

// Block ``block`` of the (seed, stream, layer) stream: key = seed (lo, hi), counter =
// (block lo, block hi, layer, stream).
FR_HD fr_words fr_stream_block(fr_u64 seed, fr_u32 stream, fr_u32 layer, fr_u64 block)
{
    return fr_philox4x32_10((fr_u32)block, (fr_u32)(block >> 32), layer, stream,
                            (fr_u32)seed, (fr_u32)(seed >> 32));
}

// ---------------------------------------------------------------------------------
// Word -> number conversions.
// ---------------------------------------------------------------------------------

// float32 uniform in [0, 1): the top 24 bits, (x >> 8) * 2**-24 (exact).
FR_HD float fr_uniform_f32(fr_u32 x) { return FR_FMUL((float)(int)(x >> 8), 0x1p-24f); }

// 53-bit integer from the top 27 bits of xa and the top 26 bits of xb.
FR_HD fr_u64 fr_m53(fr_u32 xa, fr_u32 xb) { return ((fr_u64)(xa >> 5) << 26) | (fr_u64)(xb >> 6); }

// float64 uniform in [0, 1): m53 * 2**-53 (exact).
FR_HD double fr_uniform_f64(fr_u32 xa, fr_u32 xb) { return FR_DMUL((double)fr_m53(xa, xb), 0x1p-53); }

// Constants of normal_chunk_f32, as the float32 values the CPU uses (bit for bit).
#define FR_LN2_HI 0x1.62e4p-1f
#define FR_LN2_LO 0x1.7f7d1cp-20f
#define FR_SQRT2 0x1.6a09e6p+0f
#define FR_HALF_PI 0x1.921fb6p+0f
#define FR_L3 0x1.555556p-2f
#define FR_L5 0x1.99999ap-3f
#define FR_L7 0x1.24924ap-3f
#define FR_L9 0x1.c71c72p-4f
#define FR_S3 (-0x1.555556p-3f)
#define FR_S5 0x1.111112p-7f
#define FR_S7 (-0x1.a01a02p-13f)
#define FR_S9 0x1.71de3ap-19f
#define FR_S11 (-0x1.ae6456p-26f)
#define FR_C2 (-0x1.0p-1f)
#define FR_C4 0x1.555556p-5f
#define FR_C6 (-0x1.6c16c2p-10f)
#define FR_C8 0x1.a01a02p-16f
#define FR_C10 (-0x1.27e4fcp-22f)
#define FR_C12 0x1.1eed8ep-29f

// float32 Box-Muller of one word pair, as normal_chunk_f32 computes it:
// r = sqrt(-2 ln u1) with u1 = (float(xa >> 8) + 0.5) 2**-24 and fastrank's own log;
// (cos, sin) of 2 pi u2 from the quadrant (top 2 of the 24 bits of xb) and a polynomial
// on [0, pi/2) of the 22 bits below them.
FR_HD void fr_box_muller_f32(fr_u32 xa, fr_u32 xb, float* z0, float* z1)
{
    const float u1 = FR_FMUL(FR_FADD((float)(int)(xa >> 8), 0.5f), 0x1p-24f);
    const fr_u32 bits = FR_F2U(u1);
    float m = FR_U2F((bits & 0x7FFFFFu) | 0x3F800000u);   // u1 = m 2**e, m in [1, 2)
    float e = (float)((int)(bits >> 23) - 127);
    if (m > FR_SQRT2) {
        m = FR_FMUL(m, 0.5f);
        e = FR_FADD(e, 1.0f);
    }
    const float s = FR_FDIV(FR_FSUB(m, 1.0f), FR_FADD(m, 1.0f));
    const float s2 = FR_FMUL(s, s);
    // poly = 1 + s2 (L3 + s2 (L5 + s2 (L7 + s2 L9))), innermost first
    float poly = FR_FMUL(s2, FR_L9);
    poly = FR_FMUL(s2, FR_FADD(FR_L7, poly));
    poly = FR_FMUL(s2, FR_FADD(FR_L5, poly));
    poly = FR_FMUL(s2, FR_FADD(FR_L3, poly));
    poly = FR_FADD(1.0f, poly);
    // ln u1 = e LN2_HI + (2 s poly + e LN2_LO)
    const float ln = FR_FADD(FR_FMUL(e, FR_LN2_HI),
                             FR_FADD(FR_FMUL(FR_FMUL(2.0f, s), poly), FR_FMUL(e, FR_LN2_LO)));
    const float r = FR_FSQRT(FR_FMUL(-2.0f, ln));

    const fr_u32 k = xb >> 8;
    const fr_u32 q = k >> 22;
    const float a = FR_FMUL(FR_FMUL(FR_FADD((float)(int)(k & 0x3FFFFFu), 0.5f), 0x1p-22f), FR_HALF_PI);
    const float a2 = FR_FMUL(a, a);
    // sn = a (1 + a2 (S3 + a2 (S5 + a2 (S7 + a2 (S9 + a2 S11)))))
    float sn = FR_FMUL(a2, FR_S11);
    sn = FR_FMUL(a2, FR_FADD(FR_S9, sn));
    sn = FR_FMUL(a2, FR_FADD(FR_S7, sn));
    sn = FR_FMUL(a2, FR_FADD(FR_S5, sn));
    sn = FR_FMUL(a2, FR_FADD(FR_S3, sn));
    sn = FR_FMUL(a, FR_FADD(1.0f, sn));
    // cs = 1 + a2 (C2 + a2 (C4 + a2 (C6 + a2 (C8 + a2 (C10 + a2 C12)))))
    float cs = FR_FMUL(a2, FR_C12);
    cs = FR_FMUL(a2, FR_FADD(FR_C10, cs));
    cs = FR_FMUL(a2, FR_FADD(FR_C8, cs));
    cs = FR_FMUL(a2, FR_FADD(FR_C6, cs));
    cs = FR_FMUL(a2, FR_FADD(FR_C4, cs));
    cs = FR_FMUL(a2, FR_FADD(FR_C2, cs));
    cs = FR_FADD(1.0f, cs);
    // rotate by q quarter turns: (cos, sin) of (a + q pi/2)
    const int odd = (q & 1u) == 1u;
    float c = odd ? sn : cs;
    float sv = odd ? cs : sn;
    if (((q + 1u) & 2u) == 2u) c = -c;   // quadrants 1 and 2
    if ((q & 2u) == 2u) sv = -sv;        // quadrants 2 and 3
    *z0 = FR_FMUL(r, c);
    *z1 = FR_FMUL(r, sv);
}

// The 4 float32 normals of block b: z[4b], z[4b+1] from (x0, x1); z[4b+2], z[4b+3]
// from (x2, x3).
FR_HD void fr_normals4_f32(fr_words w, float* z)
{
    fr_box_muller_f32(w.x[0], w.x[1], &z[0], &z[1]);
    fr_box_muller_f32(w.x[2], w.x[3], &z[2], &z[3]);
}

// The 2 float64 normals of a block (53-bit uniforms, libm log/cos/sin).
FR_HD void fr_normals2_f64(fr_words w, double* z)
{
    const double u1 = FR_DMUL(FR_DADD((double)fr_m53(w.x[0], w.x[1]), 0.5), 0x1p-53);
    const double u2 = FR_DMUL(FR_DADD((double)fr_m53(w.x[2], w.x[3]), 0.5), 0x1p-53);
    const double r = sqrt(FR_DMUL(-2.0, log(u1)));
    const double t = FR_DMUL(0x1.921fb54442d18p+2, u2);   // float64(2 pi)
    z[0] = FR_DMUL(r, cos(t));
    z[1] = FR_DMUL(r, sin(t));
}

#endif  // FASTRANK_PHILOX_CUH
