// One layer's work after the GEMM, on a stack of S matrices Z (d x N each, C order):
// the residual update, normalisation and activation in the network's order, in place,
// with the float64 sum of squares of the result, as kernels/cpu/layer.py computes them
// (statistics and the normalised value in float64, rounded once to the storage type);
// then the bookkeeping of Batch.account (log-norm, rescaling factor, failure) on the
// device, and the rescaling. Nothing here waits for the host, so a whole layer, and a
// run of layers, can be captured in a CUDA graph.
//
// Seeds whose failed[s] >= 0 are left alone by every kernel.
#include "common.cuh"

// rows_pass: one warp per row (feature) of every matrix, blockDim / 32 rows per block:
// rows = S * d rows in all, grid = ceil(rows / (blockDim / 32)) blocks; the row sums are
// warp shuffles, no barrier. z <- h + gamma z when residual; then act-first or not;
// batch norm of the row (norm 1: centred, biased variance; norm 2: mean square only), or
// none (norm 0). part[s * d + row] = sum of squares of the finished row.
template <class T>
__device__ __forceinline__ void fr_rows_pass(T* z, const T* h, T gamma, int residual, int rows,
                                             int d, int n, int norm, int act, int act_first,
                                             double eps, double* part, const fr_i64* failed)
{
    const unsigned r = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (r >= (unsigned)rows) return;                       // uniform over the warp
    if (failed && failed[r / (unsigned)d] >= 0) return;    // uniform over the warp
    const int lane = threadIdx.x & 31;
    T* zr = z + (fr_i64)r * n;
    const T* hr = residual ? h + (fr_i64)r * n : zr;
    const bool stats = norm == FR_NORM_BN || norm == FR_NORM_BN_RMS;

    double sum = 0.0;
    const bool first_pass = residual || act_first || norm == FR_NORM_BN;   // uniform
    for (int j = lane; first_pass && j < n; j += 32) {
        T x = zr[j];
        if (residual) x = fr_add(hr[j], fr_mul(x, gamma));
        if (act_first) x = fr_activate(x, act);
        if (residual || act_first) zr[j] = x;
        sum = FR_DADD(sum, (double)x);
    }
    double mean = 0.0, inv = 1.0;
    if (stats) {
        if (norm == FR_NORM_BN) mean = fr_warp_sum(sum) / n;
        double var = 0.0;
        for (int j = lane; j < n; j += 32) {
            const double c = FR_DSUB((double)zr[j], mean);
            var = FR_DADD(var, FR_DMUL(c, c));
        }
        var = fr_warp_sum(var);
        inv = 1.0 / sqrt(var / n + eps);
    }
    double sq = 0.0;
    for (int j = lane; j < n; j += 32) {
        T x = zr[j];
        if (stats) x = (T)FR_DMUL(FR_DSUB((double)x, mean), inv);
        if (!act_first) x = fr_activate(x, act);
        zr[j] = x;
        const double x64 = (double)x;
        sq = FR_DADD(sq, FR_DMUL(x64, x64));
    }
    sq = fr_warp_sum(sq);
    if (lane == 0) part[r] = sq;
}

extern "C" __global__ void rows_pass_f32(float* z, const float* h, float gamma, int residual,
                                         int rows, int d, int n, int norm, int act,
                                         int act_first, double eps, double* part,
                                         const fr_i64* failed)
{
    fr_rows_pass<float>(z, h, gamma, residual, rows, d, n, norm, act, act_first, eps, part,
                        failed);
}

extern "C" __global__ void rows_pass_f64(double* z, const double* h, double gamma, int residual,
                                         int rows, int d, int n, int norm, int act,
                                         int act_first, double eps, double* part,
                                         const fr_i64* failed)
{
    fr_rows_pass<double>(z, h, gamma, residual, rows, d, n, norm, act, act_first, eps, part,
                         failed);
}

// cols_pass: layer norm, one thread per column (sample) of every matrix, columns of one
// seed in blocks_per_seed consecutive blocks; part[s * n + j] = the column's sum of squares.
template <class T>
__device__ __forceinline__ void fr_cols_pass(T* z, const T* h, T gamma, int residual, int d,
                                             int n, int blocks_per_seed, int act, int act_first,
                                             double eps, double* part, const fr_i64* failed)
{
    const fr_i64 s = (fr_i64)blockIdx.x / blocks_per_seed;
    const int j = (int)((fr_i64)blockIdx.x % blocks_per_seed) * blockDim.x + threadIdx.x;
    if (j >= n || (failed && failed[s] >= 0)) return;   // no barriers in this kernel
    T* zc = z + (fr_i64)s * d * n + j;
    const T* hc = residual ? h + (fr_i64)s * d * n + j : zc;
    double mean = 0.0;
    for (int i = 0; i < d; ++i) {
        T x = zc[(fr_i64)i * n];
        if (residual) x = fr_add(hc[(fr_i64)i * n], fr_mul(x, gamma));
        if (act_first) x = fr_activate(x, act);
        if (residual || act_first) zc[(fr_i64)i * n] = x;
        mean = FR_DADD(mean, (double)x);
    }
    mean /= d;
    double var = 0.0;
    for (int i = 0; i < d; ++i) {
        const double c = FR_DSUB((double)zc[(fr_i64)i * n], mean);
        var = FR_DADD(var, FR_DMUL(c, c));
    }
    const double inv = 1.0 / sqrt(var / d + eps);
    double sq = 0.0;
    for (int i = 0; i < d; ++i) {
        T x = (T)FR_DMUL(FR_DSUB((double)zc[(fr_i64)i * n], mean), inv);
        if (!act_first) x = fr_activate(x, act);
        zc[(fr_i64)i * n] = x;
        const double x64 = (double)x;
        sq = FR_DADD(sq, FR_DMUL(x64, x64));
    }
    part[s * n + j] = sq;
}

extern "C" __global__ void cols_pass_f32(float* z, const float* h, float gamma, int residual,
                                         int d, int n, int blocks_per_seed, int act,
                                         int act_first, double eps, double* part,
                                         const fr_i64* failed)
{
    fr_cols_pass<float>(z, h, gamma, residual, d, n, blocks_per_seed, act, act_first, eps,
                        part, failed);
}

extern "C" __global__ void cols_pass_f64(double* z, const double* h, double gamma, int residual,
                                         int d, int n, int blocks_per_seed, int act,
                                         int act_first, double eps, double* part,
                                         const fr_i64* failed)
{
    fr_cols_pass<double>(z, h, gamma, residual, d, n, blocks_per_seed, act, act_first, eps,
                         part, failed);
}

// account: one block per seed. sumsq = sum of the seed's k partial sums; then, as
// Batch.account: a non-finite or zero sumsq stops the seed at this layer (failed,
// reason); a rescaled network adds 0.5 log(sumsq) to its log-norm and gets the factor
// 1/sqrt(sumsq); any other sets its log-norm to 0.5 log(sumsq), factor 1. The layer is
// *layer_ptr + layer_value (layer_value without a counter); with ``done`` (a zeroed
// counter of blocks) the last block to finish moves the layer counter on by layer_value
// once every block has read it, so a layer needs no launch of its own for that.
extern "C" __global__ void account(const double* part, int k, fr_i64* layer_ptr,
                                   fr_i64 layer_value, unsigned* done, int rescale,
                                   double* log_norm, fr_i64* failed, fr_i64* reason,
                                   double* factor)
{
    const fr_i64 s = blockIdx.x;
    const fr_i64 layer = layer_ptr ? *layer_ptr + layer_value : layer_value;
    const bool live = failed[s] < 0;   // read by every thread before thread 0 may write it
    double v = 0.0;
    for (int t = threadIdx.x; live && t < k; t += blockDim.x) v = FR_DADD(v, part[s * k + t]);
    if (live) v = fr_block_sum(v);     // uniform over the block
    if (threadIdx.x != 0) return;
    if (live && (!isfinite(v) || v == 0.0)) {
        failed[s] = layer;
        reason[s] = isfinite(v) ? FR_VANISHED : FR_NON_FINITE;
        factor[s] = 1.0;
    } else if (live) {
        log_norm[s] = rescale ? log_norm[s] + 0.5 * log(v) : 0.5 * log(v);
        factor[s] = rescale ? 1.0 / sqrt(v) : 1.0;
    }
    if (done) {
        __threadfence();   // this block's read of the counter precedes its ticket
        if (atomicAdd(done, 1u) == gridDim.x - 1) {
            *layer_ptr = layer;
            *done = 0;
        }
    }
}

// scale: z[s] <- z[s] * factor[s] (product in float64, rounded once), for live seeds whose
// factor is not 1; blocks_per_seed consecutive blocks per seed, grid-stride inside.
template <class T>
__device__ __forceinline__ void fr_scale(T* z, fr_i64 n, int blocks_per_seed,
                                         const double* factor, const fr_i64* failed)
{
    const unsigned s = blockIdx.x / (unsigned)blocks_per_seed;
    if (failed[s] >= 0) return;
    const double f = factor[s];
    if (f == 1.0) return;
    T* zs = z + (fr_i64)s * n;
    const fr_i64 step = (fr_i64)blocks_per_seed * blockDim.x;
    for (fr_i64 i = (fr_i64)(blockIdx.x - s * (unsigned)blocks_per_seed) * blockDim.x
                    + threadIdx.x; i < n; i += step)
        zs[i] = (T)FR_DMUL((double)zs[i], f);
}

extern "C" __global__ void scale_f32(float* z, fr_i64 n, int blocks_per_seed,
                                     const double* factor, const fr_i64* failed)
{
    fr_scale<float>(z, n, blocks_per_seed, factor, failed);
}

extern "C" __global__ void scale_f64(double* z, fr_i64 n, int blocks_per_seed,
                                     const double* factor, const fr_i64* failed)
{
    fr_scale<double>(z, n, blocks_per_seed, factor, failed);
}
