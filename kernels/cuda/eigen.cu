// Eigenvalues of a stack of small symmetric float64 matrices (the Gram matrices of
// narrow networks, k <= FR_EIGEN_MAX), one matrix per block: Householder reduction to
// tridiagonal form, then bisection by Sturm counts, one thread per eigenvalue; and the
// singular values of small float64 matrices the same way (bidiagonal_svdvals, at the end).
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

// Whether a matrix whose largest |entry| is ``big`` is answered without solving: a zero
// matrix (k zeros, FR_OK) or a non-finite one (k NaNs, FR_NON_FINITE). Uniform over the
// block, as ``big`` is.
__device__ __forceinline__ bool fr_answered_by_scale(double big, int k, double* w, int* status)
{
    if (big <= 1.79769313486231570815e308 && big != 0.0) return false;
    for (int t = threadIdx.x; t < k; t += blockDim.x) w[t] = big == 0.0 ? 0.0 : big - big;
    if (threadIdx.x == 0) *status = big == 0.0 ? FR_OK : FR_NON_FINITE;
    return true;
}

// Eigenvalues first .. first + count - 1 (in ascending order) of the symmetric
// tridiagonal matrix with diagonal diag[0..n) and off-diagonal off[0..n-1) (shared
// memory; off is squared in place), by bisection on Sturm counts, one thread per
// eigenvalue, to an absolute 2^-52 of the Gershgorin bound: w[i] = scale * eigenvalue
// first + i (first + count - 1 - i when ``descending``). Returns to every thread whether
// every interval closed within FR_EIGEN_BISECTIONS halvings. Every thread must call it.
__device__ bool fr_tridiagonal_bisect(const double* diag, double* off, int n, int first,
                                      int count, bool descending, double scale, double* w)
{
    __shared__ int unconverged;
    if (threadIdx.x == 0) unconverged = 0;
    double gl = 1.79769313486231570815e308, gu = -gl;   // Gershgorin bounds
    for (int i = 0; i < n; ++i) {
        const double radius = (i > 0 ? fabs(off[i - 1]) : 0.0) + (i + 1 < n ? fabs(off[i]) : 0.0);
        gl = fmin(gl, diag[i] - radius);
        gu = fmax(gu, diag[i] + radius);
    }
    double max_e2 = 0.0;
    for (int i = 0; i + 1 < n; ++i) max_e2 = fmax(max_e2, off[i] * off[i]);
    __syncthreads();   // everyone has read ``off`` before it is squared
    for (int i = threadIdx.x; i + 1 < n; i += blockDim.x) off[i] *= off[i];
    __syncthreads();
    const double bound = fmax(fabs(gl), fabs(gu));
    const double pivmin = FR_SAFMIN * fmax(1.0, max_e2);
    const double tol = FR_EPS * bound + pivmin;
    const double widen = 2.0 * (n + 1) * FR_EPS * bound + 2.0 * pivmin;
    gl -= widen;
    gu += widen;

    // eigenvalue t: the point where the count of eigenvalues below x passes t
    for (int i = threadIdx.x; i < count; i += blockDim.x) {
        const int t = first + i;
        double lo = gl, hi = gu;
        int steps = 0;
        while (hi - lo > tol && steps < FR_EIGEN_BISECTIONS) {
            const double x = 0.5 * (lo + hi);
            int below = 0;
            double q = diag[0] - x;
            if (fabs(q) <= pivmin) q = -pivmin;
            below += q < 0.0;
            for (int j = 1; j < n; ++j) {
                q = (diag[j] - x) - off[j - 1] / q;
                if (fabs(q) <= pivmin) q = -pivmin;
                below += q < 0.0;
            }
            if (below > t) hi = x;
            else lo = x;
            ++steps;
        }
        if (!(hi - lo <= tol)) unconverged = 1;   // every writer writes 1
        w[descending ? count - 1 - i : i] = 0.5 * (lo + hi) * scale;
    }
    __syncthreads();
    const bool converged = !unconverged;
    __syncthreads();   // read by all before a later call resets it
    return converged;
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
    if (fr_answered_by_scale(big, k, ws, status + s)) return;   // uniform
    const double inv = 1.0 / big;
    for (int c = threadIdx.x; c < k; c += blockDim.x)
        for (int r = c; r < k; ++r) {
            const double x = as[(fr_i64)r * k + c] * inv;
            as[(fr_i64)r * k + c] = x;
            as[(fr_i64)c * k + r] = x;   // row c, column r: touched by no other thread now
        }
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

    const bool converged = fr_tridiagonal_bisect(diag, off, k, 0, k, false, big, ws);
    if (threadIdx.x == 0) status[s] = converged ? FR_OK : FR_EIGEN_UNCONVERGED;
}

// Singular values of a stack of small float64 matrices A (k x m, k <= m, k <= FR_EIGEN_MAX,
// row-major), one matrix per block: Golub-Kahan bidiagonalisation by Householder
// reflections in place in global memory (alternately from the right, zeroing row j past
// its diagonal, a warp per row for the update, and from the left, zeroing column j below
// its subdiagonal, a thread per column), then the k largest eigenvalues of the 2k x 2k
// Golub-Kahan tridiagonal (zero diagonal, off-diagonal alpha_0, beta_0, alpha_1, ...,
// whose eigenvalues are +-sigma) by the same bisection as householder_eigvalsh: each
// singular value within a few k eps sigma_max of the exact one, as LAPACK's SVD. The
// matrix is scaled by its largest entry first, and destroyed. w: k per matrix,
// descending; status as householder_eigvalsh's.
extern "C" __global__ void bidiagonal_svdvals(double* a, int k, int m, double* w, int* status)
{
    __shared__ double tgk_diag[2 * FR_EIGEN_MAX];
    __shared__ double tgk_off[2 * FR_EIGEN_MAX];
    __shared__ double u[FR_EIGEN_MAX];   // the left reflector, by row
    const fr_i64 s = blockIdx.x;
    double* as = a + s * k * m;
    double* ws = w + s * k;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    const fr_i64 size = (fr_i64)k * m;

    double big = 0.0;
    for (fr_i64 i = threadIdx.x; i < size; i += blockDim.x) {
        const double x = fabs(as[i]);
        big = (x > big || x != x) ? x : big;
    }
    big = fr_block_max_abs(big);
    if (fr_answered_by_scale(big, k, ws, status + s)) return;   // uniform
    const double inv = 1.0 / big;
    for (fr_i64 i = threadIdx.x; i < size; i += blockDim.x) as[i] *= inv;
    for (int i = threadIdx.x; i < 2 * k; i += blockDim.x) tgk_diag[i] = 0.0;
    __syncthreads();

    for (int j = 0; j < k; ++j) {
        // from the right: row j's x = A[j, j:] onto alpha e_j; v = (1, x[1:] / (x0 - alpha))
        // kept in row j, applied to rows j+1.. (y <- y - tau (y . v) v)
        double* row = as + (fr_i64)j * m;
        double part = 0.0;
        for (int c = j + 1 + threadIdx.x; c < m; c += blockDim.x) part = fma(row[c], row[c], part);
        const double sigma = fr_block_sum(part);   // its barriers publish row j
        const double x0 = row[j];
        const double norm = sqrt(x0 * x0 + sigma);
        const double alpha = sigma == 0.0 ? x0 : (x0 >= 0.0 ? -norm : norm);
        const double tau = sigma == 0.0 ? 0.0 : (alpha - x0) / alpha;
        const double scale = sigma == 0.0 ? 0.0 : 1.0 / (x0 - alpha);
        __syncthreads();   // row j read by all before its tail becomes v
        for (int c = j + 1 + threadIdx.x; c < m; c += blockDim.x) row[c] *= scale;
        if (threadIdx.x == 0) tgk_off[2 * j] = alpha;
        __syncthreads();
        for (int r0 = j + 1; tau != 0.0 && r0 < k; r0 += warps) {   // the same trips per warp
            const int r = r0 + warp;
            double* y = as + (fr_i64)(r < k ? r : j) * m;
            double dot = 0.0;
            for (int c = j + lane; r < k && c < m; c += 32)
                dot = fma(y[c], c == j ? 1.0 : row[c], dot);
            dot = fr_warp_sum(dot) * tau;
            for (int c = j + lane; r < k && c < m; c += 32)
                y[c] = fma(-dot, c == j ? 1.0 : row[c], y[c]);
        }
        __syncthreads();
        if (j + 1 == k) break;   // uniform

        // from the left: column j's x = A[j+1:, j] onto beta e_{j+1}; u as above, applied
        // to columns j+1.. of rows j+1..
        for (int r = j + 1 + threadIdx.x; r < k; r += blockDim.x) u[r] = as[(fr_i64)r * m + j];
        __syncthreads();
        part = 0.0;
        for (int r = j + 2 + threadIdx.x; r < k; r += blockDim.x) part = fma(u[r], u[r], part);
        const double sigma2 = fr_block_sum(part);
        const double y0 = u[j + 1];
        const double norm2 = sqrt(y0 * y0 + sigma2);
        const double beta = sigma2 == 0.0 ? y0 : (y0 >= 0.0 ? -norm2 : norm2);
        const double tau2 = sigma2 == 0.0 ? 0.0 : (beta - y0) / beta;
        const double scale2 = sigma2 == 0.0 ? 0.0 : 1.0 / (y0 - beta);
        __syncthreads();   // u[j + 1] read by all before u becomes the reflector
        for (int r = j + 1 + threadIdx.x; r < k; r += blockDim.x)
            u[r] = r == j + 1 ? 1.0 : u[r] * scale2;
        if (threadIdx.x == 0) tgk_off[2 * j + 1] = beta;
        __syncthreads();
        for (int c = j + 1 + threadIdx.x; tau2 != 0.0 && c < m; c += blockDim.x) {
            double dot = 0.0;
            for (int r = j + 1; r < k; ++r) dot = fma(as[(fr_i64)r * m + c], u[r], dot);
            dot *= tau2;
            for (int r = j + 1; r < k; ++r) {
                double* x = as + (fr_i64)r * m + c;
                *x = fma(-dot, u[r], *x);
            }
        }
        __syncthreads();
    }

    const bool converged = fr_tridiagonal_bisect(tgk_diag, tgk_off, 2 * k, k, k, true, big, ws);
    for (int t = threadIdx.x; t < k; t += blockDim.x) ws[t] = fmax(ws[t], 0.0);   // +-0
    if (threadIdx.x == 0) status[s] = converged ? FR_OK : FR_EIGEN_UNCONVERGED;
}
