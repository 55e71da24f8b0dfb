// A measured layer's row on the device, from the solver's output to what the file
// stores: the spectrum (singular values, descending), the log-norm, the six scalar
// measures and the rank_tau counts, as fastrank.propagate and
// fastrank.kernels.cpu.measures compute them on the host. One thread per seed; rows of
// seeds that stopped are NaN (counts -1), as the host leaves them.

#include "common.cuh"

// spectrum_rows: seed s's row of the spectra of a measured layer. ``values`` holds k
// numbers per seed: the eigenvalues of the Gram matrix, ascending, when ``squared``
// (singular values sqrt(max(v, 0)), reversed), else singular values, descending. A
// live seed whose solver status is not FR_OK stops here: failed[s] = layer, reason the
// status (FR_NON_FINITE, or FR_EIGEN_UNCONVERGED): never an unconverged value stored.
// out: kmax per seed (NaN past k); log_out[s]: the seed's log-norm, NaN if it stopped.
extern "C" __global__ void spectrum_rows(const double* values, const int* status, int seeds,
                                         int k, int squared, fr_i64 layer, double* out,
                                         int kmax, const double* log_norm, double* log_out,
                                         fr_i64* failed, fr_i64* reason)
{
    const int s = blockIdx.x * blockDim.x + threadIdx.x;
    if (s >= seeds) return;
    double* row = out + (fr_i64)s * kmax;
    bool live = failed[s] < 0;
    if (live && status[s] != FR_OK) {
        failed[s] = layer;
        reason[s] = status[s];
        live = false;
    }
    const double* v = values + (fr_i64)s * k;
    for (int j = 0; j < kmax; ++j) {
        double x = FR_NAN;
        if (live && j < k) x = squared ? sqrt(fmax(v[k - 1 - j], 0.0)) : v[j];
        row[j] = x;
    }
    log_out[s] = live ? log_norm[s] : FR_NAN;
}

// measure_rows: the measures of each seed's spectrum (k singular values, descending, in
// rows kmax apart) of a d x n matrix, in the order and arithmetic of the host's
// measure_rows, so the same spectrum gives the same numbers: scalars (6 per seed, in
// fastrank.measures.SCALARS order) and, per tau, the eigenvalues of H H^T above tau
// times their mean over d. ``eps``: machine epsilon of the network's dtype. A seed
// whose log-norm is NaN (no row) gets NaN scalars and counts of -1.
extern "C" __global__ void measure_rows(const double* spectra, int seeds, int k, int kmax,
                                        int d, int n, double eps, const double* taus,
                                        int n_taus, const double* log_norm, double* scalars,
                                        double* counts)
{
    const int r = blockIdx.x * blockDim.x + threadIdx.x;
    if (r >= seeds) return;
    double* out = scalars + (fr_i64)r * 6;
    double* cnt = counts + (fr_i64)r * n_taus;
    if (isnan(log_norm[r])) {
        for (int c = 0; c < 6; ++c) out[c] = c == 1 ? -1.0 : FR_NAN;
        for (int t = 0; t < n_taus; ++t) cnt[t] = -1.0;
        return;
    }
    const double* s = spectra + (fr_i64)r * kmax;
    const double top = s[0], last = s[k - 1];
    double ratio2 = 0.0, ratio4 = 0.0, total = 0.0, total2 = 0.0;
    const double tol = FR_DMUL(FR_DMUL(top, (double)(d > n ? d : n)), eps);
    int above = 0;
    for (int j = 0; j < k; ++j) {
        if (top > 0) {
            const double q = s[j] / top;
            const double x = FR_DMUL(q, q);
            ratio2 = FR_DADD(ratio2, x);
            ratio4 = FR_DADD(ratio4, FR_DMUL(x, x));
        }
        total = FR_DADD(total, s[j]);
        total2 = FR_DADD(total2, FR_DMUL(s[j], s[j]));
        if (s[j] > tol) ++above;
    }
    double entropy = 0.0;
    double gap2 = (double)(n - k) / (double)((fr_i64)n * n);
    for (int j = 0; j < k; ++j) {
        const double p = s[j] / total;
        if (p > 0) entropy = FR_DSUB(entropy, FR_DMUL(p, log(p)));
        const double e = FR_DSUB(FR_DMUL(s[j], s[j]) / total2, 1.0 / n);
        gap2 = FR_DADD(gap2, FR_DMUL(e, e));
    }
    out[0] = top > 0 ? FR_DMUL(ratio2, ratio2) / ratio4 : 0.0;
    out[1] = above;
    out[2] = total > 0 ? exp(entropy) : 0.0;
    out[3] = top > 0 ? ratio2 : 0.0;
    out[4] = total2 > 0 ? sqrt(fmax(gap2, 0.0)) : FR_NAN;
    out[5] = last > 0 ? top / last : FR_INF;
    const double mean = total2 / d;
    for (int t = 0; t < n_taus; ++t) {
        int c = 0;
        const double bar = FR_DMUL(taus[t], mean);
        for (int j = 0; j < k; ++j)
            if (FR_DMUL(s[j], s[j]) > bar) ++c;
        cnt[t] = c;
    }
}
