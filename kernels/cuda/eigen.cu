// Eigenvalues of a stack of small symmetric float64 matrices (the Gram matrices of
// narrow networks, k <= FR_EIGEN_MAX), one matrix per block: Householder reduction to
// tridiagonal form, then bisection by Sturm counts, one thread per eigenvalue.
//
// Where the matrix lives: a k x k float64 matrix is 128 KiB at k = 128 (its packed
// lower triangle 64.5 KiB), more than the 48 KiB of static shared memory every device
// gives a block. So the matrix is reduced in place in global memory (it stays in L1/L2
// while its block runs; each step reads and writes the trailing block once) and only
// the vectors of the steps and the tridiagonal sit in shared memory (6.5 KiB).
// Every thread owns whole columns of the matrix (column c belongs to thread c mod
// blockDim): each step's product B v and rank-2 update run down the owned columns, so a
// warp reads and writes whole rows (coalesced), and only the row a step reduces is read
// by threads that did not write it (after a barrier).
//
// The input is read from its lower triangle (as LAPACK's and CuPy's eigvalsh with
// UPLO='L'), divided by its largest entry (squares neither overflow nor underflow) and
// mirrored, then destroyed. Bisection is embarrassingly parallel and converges in a
// bounded number of halvings (about 55), to an absolute 2^-52 of the tridiagonal's
// Gershgorin bound: each eigenvalue within a few k eps ||A|| of the exact one, as
// LAPACK's. Eigenvalues come out ascending in w[s * k ...]; status[s] is FR_OK, or
// FR_NON_FINITE for a matrix with a non-finite entry (its eigenvalues NaN), or
// FR_EIGEN_UNCONVERGED when an eigenvalue's interval was still wide after
// FR_EIGEN_BISECTIONS halvings (only a NaN produced on the way does that).
#include "common.cuh"

#define FR_EIGEN_BISECTIONS 128
#define FR_EPS 0x1p-52
#define FR_SAFMIN 0x1p-1022

// Largest |v| over the block (NaN if any v is NaN), returned to every thread. Every
// thread must call it.
__device__ __forceinline__ double fr_block_max_abs(double v)
{
    __shared__ double warp_max[32];
    v = fabs(v);
    const unsigned lane = threadIdx.x & 31u;
    const unsigned warp = threadIdx.x >> 5;
    for (unsigned offset = 16; offset > 0; offset >>= 1) {
        const double u = __shfl_down_sync(FR_FULL_MASK, v, offset);
        v = (u > v || u != u) ? u : v;
    }
    if (lane == 0) warp_max[warp] = v;
    __syncthreads();
    double m = 0.0;
    for (unsigned i = 0; i < (blockDim.x >> 5); ++i) {
        const double u = warp_max[i];
        m = (u > m || u != u) ? u : m;
    }
    __syncthreads();   // warp_max may be reused by the next call
    return m;
}

// Eigenvalues of A (k x k), one matrix per block (grid = number of matrices, any block
// size that is a multiple of 32). ``a``: the matrices, destroyed; ``w``: k per matrix,
// ascending; ``status``: one per matrix (see the top of this file).
extern "C" __global__ void householder_eigvalsh(double* a, int k, double* w, int* status)
{
    // a step's Householder vector v (v[j+1] = 1) and u = p - (tau/2)(p.v) v, p = tau B v:
    // those of the pending update and the new ones
    __shared__ double vec[4][FR_EIGEN_MAX];
    __shared__ double diag[FR_EIGEN_MAX];
    __shared__ double off[FR_EIGEN_MAX];  // off-diagonal, then its square
    __shared__ int unconverged;
    const fr_i64 s = blockIdx.x;
    double* as = a + s * k * k;
    double* ws = w + s * k;

    // scale by the largest entry of the lower triangle, mirrored into the upper one
    double big = 0.0;
    for (int c = threadIdx.x; c < k; c += blockDim.x)
        for (int r = c; r < k; ++r) {
            const double x = fabs(as[(fr_i64)r * k + c]);
            big = (x > big || x != x) ? x : big;
        }
    big = fr_block_max_abs(big);
    if (!(big <= 1.79769313486231570815e308) || big == 0.0) {   // non-finite, or zero
        for (int t = threadIdx.x; t < k; t += blockDim.x) ws[t] = big == 0.0 ? 0.0 : big - big;
        if (threadIdx.x == 0) status[s] = big == 0.0 ? FR_OK : FR_NON_FINITE;
        return;   // uniform
    }
    const double inv = 1.0 / big;
    for (int c = threadIdx.x; c < k; c += blockDim.x)
        for (int r = c; r < k; ++r) {
            const double x = as[(fr_i64)r * k + c] * inv;
            as[(fr_i64)r * k + c] = x;
            as[(fr_i64)c * k + r] = x;   // row c, column r: touched by no other thread now
        }
    if (threadIdx.x == 0) unconverged = 0;
    __syncthreads();   // the mirrored upper triangle is read by its columns' owners

    // Householder: step j maps row j's x = A[j, j+1:] onto beta e_1 and updates the
    // trailing block B = A[j+1:, j+1:] to B - v u^T - u v^T. That update is applied
    // lazily, in the next step's one pass over the block (which forms B' v' with the
    // updated rows as it goes): one read and one write of the block per step, not two
    // reads and a write. (v, u) is the update pending, (vn, un) the step's new one.
    double* v = vec[0];
    double* u = vec[1];
    double* vn = vec[2];
    double* un = vec[3];
    for (int c = threadIdx.x; c < k; c += blockDim.x) v[c] = u[c] = 0.0;
    __syncthreads();
    for (int j = 0; j + 2 < k; ++j) {
        const int lo = j + 1;
        double part = 0.0;
        for (int c = threadIdx.x; c < k; c += blockDim.x) {   // row j, pending update
            if (c < j) continue;
            double* x = as + (fr_i64)j * k + c;
            *x -= fma(v[j], u[c], u[j] * v[c]);
            if (c > lo) part = fma(*x, *x, part);
            if (c == j) diag[j] = *x;
        }
        const double sigma = fr_block_sum(part);   // its barriers publish row j
        const double alpha = as[(fr_i64)j * k + lo];
        const double norm = sqrt(alpha * alpha + sigma);
        const double beta = alpha >= 0.0 ? -norm : norm;
        const double tau = sigma == 0.0 ? 0.0 : (beta - alpha) / beta;   // 0: nothing to do
        const double scale = sigma == 0.0 ? 0.0 : 1.0 / (alpha - beta);
        if (threadIdx.x == 0) off[j] = sigma == 0.0 ? alpha : beta;
        for (int c = threadIdx.x; c < k; c += blockDim.x)
            vn[c] = c < lo || sigma == 0.0 ? 0.0 : c == lo ? 1.0 : as[(fr_i64)j * k + c] * scale;
        __syncthreads();
        // the pending update of rows lo.., and p = tau B v column by column (B symmetric)
        double pv = 0.0;
        for (int c = threadIdx.x; c < k; c += blockDim.x) {
            if (c < lo) continue;
            const double vc = v[c], uc = u[c];
            double acc = 0.0;
            for (int r = lo; r < k; ++r) {
                double* x = as + (fr_i64)r * k + c;
                const double b = *x - fma(v[r], uc, u[r] * vc);
                *x = b;
                acc = fma(b, vn[r], acc);
            }
            un[c] = tau * acc;
            pv = fma(tau * acc, vn[c], pv);
        }
        const double half = -0.5 * tau * fr_block_sum(pv);   // all are done with v, u
        for (int c = threadIdx.x; c < k; c += blockDim.x)
            un[c] = c < lo ? 0.0 : fma(half, vn[c], un[c]);
        double* t = v; v = vn; vn = t;
        t = u; u = un; un = t;
        __syncthreads();
    }
    for (int c = threadIdx.x; c < k; c += blockDim.x)   // the last pending update
        for (int r = k > 2 ? k - 2 : 0; c >= k - 2 && r < k; ++r)
            as[(fr_i64)r * k + c] -= fma(v[r], u[c], u[r] * v[c]);
    for (int c = threadIdx.x; c < k; c += blockDim.x) {   // the last 2 x 2 (or 1 x 1)
        if (c >= k - 2) diag[c] = as[(fr_i64)c * k + c];
        if (c == k - 2) off[c] = as[(fr_i64)(c + 1) * k + c];
    }
    __syncthreads();

    // Gershgorin bounds of the tridiagonal, then squared off-diagonal
    double gl = 1.79769313486231570815e308, gu = -gl;
    for (int i = 0; i < k; ++i) {
        const double radius = (i > 0 ? fabs(off[i - 1]) : 0.0) + (i + 1 < k ? fabs(off[i]) : 0.0);
        gl = fmin(gl, diag[i] - radius);
        gu = fmax(gu, diag[i] + radius);
    }
    double max_e2 = 0.0;
    for (int i = 0; i + 1 < k; ++i) max_e2 = fmax(max_e2, off[i] * off[i]);
    __syncthreads();   // everyone has read ``off`` before it is squared
    for (int i = threadIdx.x; i + 1 < k; i += blockDim.x) off[i] *= off[i];
    __syncthreads();
    const double bound = fmax(fabs(gl), fabs(gu));
    const double pivmin = FR_SAFMIN * fmax(1.0, max_e2);
    const double tol = FR_EPS * bound + pivmin;
    const double widen = 2.0 * (k + 1) * FR_EPS * bound + 2.0 * pivmin;
    gl -= widen;
    gu += widen;

    // eigenvalue t: the point where the count of eigenvalues below x passes t
    for (int t = threadIdx.x; t < k; t += blockDim.x) {
        double lo = gl, hi = gu;
        int steps = 0;
        while (hi - lo > tol && steps < FR_EIGEN_BISECTIONS) {
            const double x = 0.5 * (lo + hi);
            int below = 0;
            double q = diag[0] - x;
            if (fabs(q) <= pivmin) q = -pivmin;
            below += q < 0.0;
            for (int i = 1; i < k; ++i) {
                q = (diag[i] - x) - off[i - 1] / q;
                if (fabs(q) <= pivmin) q = -pivmin;
                below += q < 0.0;
            }
            if (below > t) hi = x;
            else lo = x;
            ++steps;
        }
        if (!(hi - lo <= tol)) unconverged = 1;   // every writer writes 1
        ws[t] = 0.5 * (lo + hi) * big;
    }
    __syncthreads();
    if (threadIdx.x == 0) status[s] = unconverged ? FR_EIGEN_UNCONVERGED : FR_OK;
}
