// Random fills of a stack of matrices, one per seed: out[s * n + i] = number i of the
// (seeds[s], stream, layer) stream, times ``mul`` (minus ``sub`` for uniforms), exactly
// as fastrank.init makes weights and inputs on the CPU.
//
// Grid: 1-D, blocks_per_seed blocks for each seed (seed s owns blocks
// s * blocks_per_seed ...); each thread makes whole Philox blocks (grid-stride within
// its seed). The layer is *layer_ptr + layer_value when layer_ptr is not null (a counter
// kept on the device, so a captured CUDA graph can be replayed for layer after layer),
// else layer_value. Seeds whose failed[s] >= 0 are skipped (failed may be null). The
// seed of a block is a 32-bit division (a grid has fewer than 2^31 blocks).
#include "common.cuh"

__device__ __forceinline__ fr_u32 fr_layer_of(const fr_i64* layer_ptr, fr_i64 layer_value)
{
    return (fr_u32)(layer_ptr ? *layer_ptr + layer_value : layer_value);
}

#define FR_FILL_PROLOGUE                                                                  \
    const unsigned s = blockIdx.x / (unsigned)blocks_per_seed;                            \
    const fr_i64 first = (fr_i64)(blockIdx.x - s * (unsigned)blocks_per_seed) * blockDim.x \
                         + threadIdx.x;                                                   \
    const fr_i64 step = (fr_i64)blocks_per_seed * blockDim.x;                             \
    if (failed && failed[s] >= 0) return;                                                 \
    const fr_u64 seed = seeds[s];                                                         \
    const fr_u32 layer = fr_layer_of(layer_ptr, layer_value);

// float32 normals, 4 per Philox block, times mul (float32 product, as init.weights).
extern "C" __global__ void fill_normal_f32(float* out, fr_i64 n, const fr_u64* seeds,
                                           int blocks_per_seed, fr_u32 stream,
                                           const fr_i64* layer_ptr, fr_i64 layer_value,
                                           float mul, const fr_i64* failed)
{
    FR_FILL_PROLOGUE
    float* o = out + (fr_i64)s * n;
    const fr_i64 nblocks = (n + 3) / 4;
    for (fr_i64 b = first; b < nblocks; b += step) {
        float z[4];
        fr_normals4_f32(fr_stream_block(seed, stream, layer, (fr_u64)b), z);
        const fr_i64 base = 4 * b;
        for (int t = 0; t < 4; ++t)
            if (base + t < n) o[base + t] = FR_FMUL(z[t], mul);
    }
}

// float64 normals, 2 per Philox block, times mul.
extern "C" __global__ void fill_normal_f64(double* out, fr_i64 n, const fr_u64* seeds,
                                           int blocks_per_seed, fr_u32 stream,
                                           const fr_i64* layer_ptr, fr_i64 layer_value,
                                           double mul, const fr_i64* failed)
{
    FR_FILL_PROLOGUE
    double* o = out + (fr_i64)s * n;
    const fr_i64 nblocks = (n + 1) / 2;
    for (fr_i64 b = first; b < nblocks; b += step) {
        double z[2];
        fr_normals2_f64(fr_stream_block(seed, stream, layer, (fr_u64)b), z);
        const fr_i64 base = 2 * b;
        o[base] = FR_DMUL(z[0], mul);
        if (base + 1 < n) o[base + 1] = FR_DMUL(z[1], mul);
    }
}

// float32 uniforms u in [0, 1), 4 per block: u * mul - sub (each rounded, as init.weights).
extern "C" __global__ void fill_uniform_f32(float* out, fr_i64 n, const fr_u64* seeds,
                                            int blocks_per_seed, fr_u32 stream,
                                            const fr_i64* layer_ptr, fr_i64 layer_value,
                                            float mul, float sub, const fr_i64* failed)
{
    FR_FILL_PROLOGUE
    float* o = out + (fr_i64)s * n;
    const fr_i64 nblocks = (n + 3) / 4;
    for (fr_i64 b = first; b < nblocks; b += step) {
        const fr_words w = fr_stream_block(seed, stream, layer, (fr_u64)b);
        const fr_i64 base = 4 * b;
        for (int t = 0; t < 4; ++t)
            if (base + t < n) o[base + t] = FR_FSUB(FR_FMUL(fr_uniform_f32(w.x[t]), mul), sub);
    }
}

// float64 uniforms, 2 per block (53 bits from a word pair): u * mul - sub.
extern "C" __global__ void fill_uniform_f64(double* out, fr_i64 n, const fr_u64* seeds,
                                            int blocks_per_seed, fr_u32 stream,
                                            const fr_i64* layer_ptr, fr_i64 layer_value,
                                            double mul, double sub, const fr_i64* failed)
{
    FR_FILL_PROLOGUE
    double* o = out + (fr_i64)s * n;
    const fr_i64 nblocks = (n + 1) / 2;
    for (fr_i64 b = first; b < nblocks; b += step) {
        const fr_words w = fr_stream_block(seed, stream, layer, (fr_u64)b);
        const fr_i64 base = 2 * b;
        o[base] = FR_DSUB(FR_DMUL(fr_uniform_f64(w.x[0], w.x[1]), mul), sub);
        if (base + 1 < n) o[base + 1] = FR_DSUB(FR_DMUL(fr_uniform_f64(w.x[2], w.x[3]), mul), sub);
    }
}

// Raw uint32 words (for checking the stream itself against the CPU).
extern "C" __global__ void fill_uint32(fr_u32* out, fr_i64 n, const fr_u64* seeds,
                                       int blocks_per_seed, fr_u32 stream,
                                       const fr_i64* layer_ptr, fr_i64 layer_value,
                                       const fr_i64* failed)
{
    FR_FILL_PROLOGUE
    fr_u32* o = out + (fr_i64)s * n;
    const fr_i64 nblocks = (n + 3) / 4;
    for (fr_i64 b = first; b < nblocks; b += step) {
        const fr_words w = fr_stream_block(seed, stream, layer, (fr_u64)b);
        const fr_i64 base = 4 * b;
        for (int t = 0; t < 4; ++t)
            if (base + t < n) o[base + t] = w.x[t];
    }
}
