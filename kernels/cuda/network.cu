// Small networks whole on the chip: a stretch of layers of a stack of S float32 networks
// of constant width d and batch N (both at most FR_NET_MAX), one block per network, in
// one launch. Per layer, in the block: the weights drawn from the same Philox stream and
// conversions as rng.cu's fills (bitwise theirs), a tile of rows of W at a time; Z = W H
// by one explicit float32 FMA per term (fmaf: --fmad=false only stops the compiler from
// fusing on its own), acc = fma(W[i,k], H[k,j], acc) for k = 0, 1, ... in order; the
// residual update, normalisation and activation in the network's order and the float64
// sums of squares, as layer.cu's rows_pass / cols_pass compute them (one thread per row,
// or per column for layer norm, summing in order); then account's bookkeeping and scale's
// rescaling. H leaves the chip only at the layers asked for and at the end.
//
// Shared memory, dynamic: H and Z, d rows of ld = N | 1 floats each (an odd stride: a
// warp's threads reading a row each, or a column each, meet no bank conflict), then, from
// the next multiple of 4 floats, FR_NET_WTILE floats of weights: 4 (round4(2 d ld) +
// FR_NET_WTILE) bytes for the launch; static: the per-line sums of squares and 2 flags.
#include "common.cuh"


// extern __shared__ memory; host_emulation.cuh defines its own for the CPU.
#ifndef FR_DYNAMIC_SHARED
#define FR_DYNAMIC_SHARED(T, name) extern __shared__ T name[]
#endif

// Rows of W drawn per tile: as many as FR_NET_WTILE holds, a multiple of 4 so that every
// tile starts at a Philox block (4 numbers) of the stream.
__device__ __forceinline__ int fr_net_tile_rows(int d) { return (FR_NET_WTILE / d) & ~3; }

// Four weights of a column of the tile, one 16-byte shared load.
struct alignas(16) fr_net_f4 { float w[4]; };

// Z rows r0 .. r0 + rows - 1 of layer ``layer``'s W H. The tile of W (numbers r0 d ... of
// the stream, w = x mul for normals, u mul - sub for uniforms) is kept column-major with
// a column stride rs = rows rounded up to 4. Each warp makes 4 rows of Z at a time, each
// lane the columns lane, lane + 32, ... of them: per term k, one broadcast 16-byte load
// of W and a conflict-free load of H per column serve 4 products each.
__device__ __forceinline__ void fr_net_product(float* zs, const float* hs, float* ws, int d,
                                               int n, int ld, int r0, int rows, fr_u64 seed,
                                               fr_u32 stream, fr_u32 layer, int uniform,
                                               float mul, float sub)
{
    const int count = rows * d;
    const int rs = (rows + 3) & ~3;
    const fr_u64 first = (fr_u64)r0 * d / 4;
    for (int b = threadIdx.x; 4 * b < count; b += blockDim.x) {
        const fr_words w = fr_stream_block(seed, stream, layer, first + b);
        float x[4];
        if (uniform) {
            for (int t = 0; t < 4; ++t)
                x[t] = FR_FSUB(FR_FMUL(fr_uniform_f32(w.x[t]), mul), sub);
        } else {
            fr_normals4_f32(w, x);
            for (int t = 0; t < 4; ++t) x[t] = FR_FMUL(x[t], mul);
        }
        for (int t = 0; t < 4; ++t) {
            const int e = 4 * b + t, i = e / d;
            if (e < count) ws[(e - i * d) * rs + i] = x[t];
        }
    }
    __syncthreads();
    const int lane = threadIdx.x & 31;
    const int chunks = (n + 31) / 32;
    for (int g = threadIdx.x >> 5; 4 * g < rows; g += blockDim.x >> 5) {
        float acc[4][FR_NET_MAX / 32];
#pragma unroll
        for (int r = 0; r < 4; ++r)
#pragma unroll
            for (int c = 0; c < FR_NET_MAX / 32; ++c) acc[r][c] = 0.0f;
        for (int k = 0; k < d; ++k) {
            const fr_net_f4 w = *reinterpret_cast<const fr_net_f4*>(ws + k * rs + 4 * g);
            const float* hk = hs + k * ld + lane;
#pragma unroll
            for (int c = 0; c < FR_NET_MAX / 32; ++c) {
                if (c >= chunks) break;
                const float x = lane + 32 * c < n ? hk[32 * c] : 0.0f;
#pragma unroll
                for (int r = 0; r < 4; ++r) acc[r][c] = fmaf(w.w[r], x, acc[r][c]);
            }
        }
#pragma unroll
        for (int r = 0; r < 4; ++r)
#pragma unroll
            for (int c = 0; c < FR_NET_MAX / 32; ++c)
                if (4 * g + r < rows && lane + 32 * c < n)
                    zs[(r0 + 4 * g + r) * ld + lane + 32 * c] = acc[r][c];
    }
    __syncthreads();   // the tile of weights is overwritten next
}

// rows_pass on row r of Z (stride 1) or cols_pass on column r (stride ld): m values;
// h: the previous layer's same row or column. Returns the float64 sum of squares.
__device__ __forceinline__ double fr_net_line(float* z, const float* h, int m, int stride,
                                              float gamma, int residual, int norm, int act,
                                              int act_first, double eps)
{
    const bool ln = norm == FR_NORM_LN;
    const bool stats = ln || norm == FR_NORM_BN || norm == FR_NORM_BN_RMS;
    const bool centred = ln || norm == FR_NORM_BN;
    double sum = 0.0;
    for (int q = 0; q < m && (residual || act_first || centred); ++q) {
        float x = z[q * stride];
        if (residual) x = fr_add(h[q * stride], fr_mul(x, gamma));
        if (act_first) x = fr_activate(x, act);
        z[q * stride] = x;
        sum = FR_DADD(sum, (double)x);
    }
    double mean = 0.0, inv = 1.0;
    if (stats) {
        if (centred) mean = sum / m;
        double var = 0.0;
        for (int q = 0; q < m; ++q) {
            const double c = FR_DSUB((double)z[q * stride], mean);
            var = FR_DADD(var, FR_DMUL(c, c));
        }
        inv = 1.0 / sqrt(var / m + eps);
    }
    double sq = 0.0;
    for (int q = 0; q < m; ++q) {
        float x = z[q * stride];
        if (stats) x = (float)FR_DMUL(FR_DSUB((double)x, mean), inv);
        if (!act_first) x = fr_activate(x, act);
        z[q * stride] = x;
        sq = FR_DADD(sq, FR_DMUL((double)x, (double)x));
    }
    return sq;
}

// h: (S, d, N) in and out (layer first_layer - 1 in, the stretch's last layer out);
// layers: how many; slot[l] >= 0: layer first_layer + l goes to measured[slot[l]] (slots
// of S d N floats, seed-major). Weights: stream ``stream``, init ``uniform`` (0: normal),
// w = x mul (- sub). Norm, activation, order, residual gamma, eps and rescale as the
// layer kernels take them; log_norm, failed, reason and factor as account keeps them.
// Seeds with failed[s] >= 0 are left alone; a seed that fails stops at that layer.
extern "C" __global__ void network_f32(float* h, int d, int n, int layers, fr_i64 first_layer,
                                       const int* slot, float* measured, const fr_u64* seeds,
                                       fr_u32 stream, int uniform, float mul, float sub,
                                       int norm, int act, int act_first, int residual,
                                       float gamma, double eps, int rescale, double* log_norm,
                                       fr_i64* failed, fr_i64* reason, double* factor)
{
    FR_DYNAMIC_SHARED(float, fr_net_shared);
    __shared__ double part[FR_NET_MAX];
    __shared__ double scale;
    __shared__ int stop;
    const fr_i64 s = blockIdx.x;
    if (failed[s] >= 0) return;   // read by every thread before thread 0 may write it
    const int ld = n | 1;
    float* hs = fr_net_shared;
    float* zs = hs + d * ld;
    float* ws = hs + ((2 * d * ld + 3) & ~3);   // 16-byte aligned
    const fr_i64 size = (fr_i64)d * n;
    float* hg = h + s * size;
    for (int e = threadIdx.x; e < d * n; e += blockDim.x) hs[e / n * ld + e % n] = hg[e];
    const int tile = fr_net_tile_rows(d);
    const bool ln = norm == FR_NORM_LN;
    const int lines = ln ? n : d;
    for (int l = 0; l < layers; ++l) {
        const fr_i64 layer = first_layer + l;
        __syncthreads();   // H complete
        for (int r0 = 0; r0 < d; r0 += tile)
            fr_net_product(zs, hs, ws, d, n, ld, r0, d - r0 < tile ? d - r0 : tile, seeds[s],
                           stream, (fr_u32)layer, uniform, mul, sub);
        for (int r = threadIdx.x; r < lines; r += blockDim.x)
            part[r] = ln ? fr_net_line(zs + r, hs + r, d, ld, gamma, residual, norm, act,
                                       act_first, eps)
                         : fr_net_line(zs + r * ld, hs + r * ld, n, 1, gamma, residual, norm,
                                       act, act_first, eps);
        __syncthreads();
        if (threadIdx.x == 0) {   // account
            double v = 0.0;
            for (int q = 0; q < lines; ++q) v = FR_DADD(v, part[q]);
            stop = !isfinite(v) || v == 0.0;
            scale = 1.0;
            if (stop) {
                failed[s] = layer;
                reason[s] = isfinite(v) ? FR_VANISHED : FR_NON_FINITE;
            } else if (rescale) {
                log_norm[s] += 0.5 * log(v);
                scale = 1.0 / sqrt(v);
            } else {
                log_norm[s] = 0.5 * log(v);
            }
            factor[s] = scale;
        }
        __syncthreads();
        if (stop) return;   // uniform: every thread read the flag after the barrier
        const double f = scale;
        const int to = slot[l];
        float* out = to >= 0 ? measured + ((fr_i64)to * gridDim.x + s) * size : nullptr;
        for (int e = threadIdx.x; e < d * n; e += blockDim.x) {
            float* z = zs + e / n * ld + e % n;
            if (f != 1.0) *z = (float)FR_DMUL((double)*z, f);
            if (out) out[e] = *z;
        }
        float* t = hs;
        hs = zs;
        zs = t;
    }
    __syncthreads();
    for (int e = threadIdx.x; e < d * n; e += blockDim.x) hg[e] = hs[e / n * ld + e % n];
}
