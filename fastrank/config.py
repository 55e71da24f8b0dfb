"""Tunables in one place (tests patch them to force one code path on tiny inputs)."""

#: Widest constant-width float32 network run by the whole-depth compiled kernel
#: (kernels/cpu/depth.py) whatever its seeds; wider ones go layer by layer through BLAS.
SMALL_WIDTH_MAX = 128

#: Widest network run by the whole-depth kernel when it has a seed for every numba
#: thread; wider float32 Gaussian networks run in the wide kernel (kernels/cpu/wide.py).
#: Measured on 2 cores (BN + ReLU, 200 layers): 1.8x / 1.5x faster than layer by layer
#: at d = 256 with 8 / 2 seeds, 1.4x at d = 512; with one seed the per-layer path is
#: faster (0.94x: the kernel runs one seed per thread). Both paths give the same bits.
SEEDED_WIDTH_MAX = 512

#: Smallest layer (entries of H) whose normalisation pass runs across threads.
PARALLEL_MIN_SIZE = 1 << 16

#: Largest matrix whose eigenvalues (or singular values) LAPACK computes with one BLAS
#: thread. Measured on 2 cores (eigvalsh): a second thread gains 0-25% up to k = 512 on a
#: quiet machine and costs up to 7x on a busy one (k = 256: 3.6 ms vs 24 ms).
SMALL_EIGEN_MAX = 512

#: Seconds of work the depth loop aims to hand a backend in one call (a stretch of
#: measured layers, fastrank.propagate.iter_batch): long enough that the Python around
#: each call is noise, short enough for progress and for commits about once a second.
STRETCH_S = 0.05

#: Most bytes of spectra one stretch holds (measured layers x seeds x singular values).
STRETCH_BYTES = 64 << 20
