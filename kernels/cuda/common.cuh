// Helpers shared by fastrank's CUDA kernels: arithmetic in either float type with one
// rounding per operation, the activations, and a block-wide float64 sum.
//
// Every kernel is launched on a 1-D grid of 1-D blocks whose size is a multiple of 32
// (at most 1024); block-level barriers and shuffles are always reached by every thread
// of a block (early exits are uniform over a block), which is also what lets
// host_emulation.cuh run the same kernels on a CPU.
#ifndef FASTRANK_COMMON_CUH
#define FASTRANK_COMMON_CUH

#include "philox.cuh"

#define FR_FULL_MASK 0xffffffffu
#if defined(__CUDA_ARCH__)
#define FR_NAN __longlong_as_double(0x7ff8000000000000LL)
#define FR_INF __longlong_as_double(0x7ff0000000000000LL)
#else
#define FR_NAN NAN
#define FR_INF HUGE_VAL
#endif

// The norm and activation codes (FR_NORM_*, FR_ACT_*), the failure reasons
// (FR_NON_FINITE, FR_VANISHED, FR_EIGEN_UNCONVERGED) and the limits are defined in front of the program by
// fastrank.gpu.program, generated from fastrank/codes.py.

__device__ __forceinline__ float fr_add(float a, float b) { return FR_FADD(a, b); }
__device__ __forceinline__ double fr_add(double a, double b) { return FR_DADD(a, b); }
__device__ __forceinline__ float fr_sub(float a, float b) { return FR_FSUB(a, b); }
__device__ __forceinline__ double fr_sub(double a, double b) { return FR_DSUB(a, b); }
__device__ __forceinline__ float fr_mul(float a, float b) { return FR_FMUL(a, b); }
__device__ __forceinline__ double fr_mul(double a, double b) { return FR_DMUL(a, b); }
__device__ __forceinline__ float fr_tanh(float x) { return tanhf(x); }
__device__ __forceinline__ double fr_tanh(double x) { return tanh(x); }

// relu as the CPU computes it: x if x > 0 else x * 0 (so -0.0 for negatives, NaN stays).
template <class T>
__device__ __forceinline__ T fr_activate(T x, int act)
{
    if (act == FR_ACT_RELU) return x > T(0) ? x : fr_mul(x, T(0));
    if (act == FR_ACT_TANH) return fr_tanh(x);
    return x;
}

// Sum of v over the warp, returned to every lane (a butterfly: every lane adds the same
// pairs in the same order, so all get the same bits). Every lane of the warp must call it.
__device__ __forceinline__ double fr_warp_sum(double v)
{
    for (unsigned mask = 16; mask > 0; mask >>= 1)
        v = FR_DADD(v, __shfl_xor_sync(FR_FULL_MASK, v, mask));
    return v;
}

// Sum of v over the block, returned to every thread. Every thread must call it.
__device__ __forceinline__ double fr_block_sum(double v)
{
    __shared__ double warp_sums[32];
    const unsigned lane = threadIdx.x & 31u;
    const unsigned warp = threadIdx.x >> 5;
    for (unsigned offset = 16; offset > 0; offset >>= 1)
        v = FR_DADD(v, __shfl_down_sync(FR_FULL_MASK, v, offset));
    if (lane == 0) warp_sums[warp] = v;
    __syncthreads();
    // every warp reduces the per-warp sums (only warp 0's result is used), so that the
    // shuffles are reached by the whole block
    v = threadIdx.x < (blockDim.x >> 5) ? warp_sums[threadIdx.x] : 0.0;
    for (unsigned offset = 16; offset > 0; offset >>= 1)
        v = FR_DADD(v, __shfl_down_sync(FR_FULL_MASK, v, offset));
    __syncthreads();
    if (threadIdx.x == 0) warp_sums[0] = v;
    __syncthreads();
    const double total = warp_sums[0];
    __syncthreads();   // warp_sums may be reused by the next call
    return total;
}

#endif  // FASTRANK_COMMON_CUH
