// Eigenvalues of a stack of small symmetric matrices (the float64 Gram matrices of
// narrow networks), one matrix per block, by cyclic two-sided Jacobi in shared memory.
//
// cuSOLVER's batched syevj takes matrices up to 32 x 32, and one syevd call per seed
// costs a launch sequence and a host round trip each: at d = 64 and a thousand seeds the
// spectra would cost far more than the layers. Here each block holds its k x k matrix
// (k <= FR_JACOBI_MAX) in shared memory and applies the k/2 disjoint rotations of one
// round-robin step at once (the circle method pairs every index with every other in
// m - 1 steps, m = k rounded up to even, the extra index of odd k sitting out). A
// rotation is skipped when |a_pq| <= FR_JACOBI_TOL sqrt(|a_pp a_qq|); the iteration stops
// after a sweep without rotations. Eigenvalues come out unsorted in w[s * k ...].
#include "common.cuh"

#define FR_JACOBI_TOL 0x1p-52

// Pair i of round-robin step ``round`` among m (even) indices, p < q.
__device__ __forceinline__ void fr_jacobi_pair(int round, int i, int m, int* p, int* q)
{
    const int a = i == 0 ? 0 : (i - 1 + round) % (m - 1) + 1;
    const int b = (m - 2 - i + round) % (m - 1) + 1;
    *p = a < b ? a : b;
    *q = a < b ? b : a;
}

extern "C" __global__ void jacobi_eigvalsh(const double* g, int k, int max_sweeps, double* w)
{
    __shared__ double a[FR_JACOBI_MAX * FR_JACOBI_MAX];
    __shared__ double rot_c[FR_JACOBI_MAX / 2];
    __shared__ double rot_s[FR_JACOBI_MAX / 2];
    __shared__ int rotated;
    const fr_i64 s = blockIdx.x;
    const double* gs = g + s * k * k;
    for (int t = threadIdx.x; t < k * k; t += blockDim.x) a[t] = gs[t];
    const int m = k + (k & 1);
    const int half = m / 2;
    for (int sweep = 0; sweep < max_sweeps; ++sweep) {
        if (threadIdx.x == 0) rotated = 0;
        __syncthreads();
        for (int round = 0; round < m - 1; ++round) {
            for (int i = threadIdx.x; i < half; i += blockDim.x) {
                int p, q;
                fr_jacobi_pair(round, i, m, &p, &q);
                double c = 1.0, sn = 0.0;
                if (q < k) {
                    const double apq = a[p * k + q], app = a[p * k + p], aqq = a[q * k + q];
                    if (apq != 0.0 && fabs(apq) > FR_JACOBI_TOL * sqrt(fabs(app) * fabs(aqq))) {
                        const double tau = (aqq - app) / (2.0 * apq);
                        const double t = (tau >= 0.0 ? 1.0 : -1.0) / (fabs(tau) + sqrt(1.0 + tau * tau));
                        c = 1.0 / sqrt(1.0 + t * t);
                        sn = t * c;
                        rotated = 1;   // every writer writes 1
                    }
                }
                rot_c[i] = c;
                rot_s[i] = sn;
            }
            __syncthreads();
            // rows p and q of J^T A
            for (int e = threadIdx.x; e < half * k; e += blockDim.x) {
                const int i = e / k, j = e % k;
                const double c = rot_c[i], sn = rot_s[i];
                if (sn == 0.0) continue;
                int p, q;
                fr_jacobi_pair(round, i, m, &p, &q);
                const double ap = a[p * k + j], aq = a[q * k + j];
                a[p * k + j] = c * ap - sn * aq;
                a[q * k + j] = sn * ap + c * aq;
            }
            __syncthreads();
            // columns p and q of (J^T A) J
            for (int e = threadIdx.x; e < half * k; e += blockDim.x) {
                const int i = e / k, r = e % k;
                const double c = rot_c[i], sn = rot_s[i];
                if (sn == 0.0) continue;
                int p, q;
                fr_jacobi_pair(round, i, m, &p, &q);
                const double ap = a[r * k + p], aq = a[r * k + q];
                a[r * k + p] = c * ap - sn * aq;
                a[r * k + q] = sn * ap + c * aq;
            }
            __syncthreads();
        }
        const int done = !rotated;
        __syncthreads();   // everyone has read ``rotated`` before thread 0 resets it
        if (done) break;   // uniform
    }
    for (int t = threadIdx.x; t < k; t += blockDim.x) w[s * k + t] = a[t * k + t];
}
