"""Tunables in one place: the widths and sizes where the code changes path, and the
length of a stretch (tests patch them to force one code path on tiny inputs)."""

#: Widest constant-width float32 network run by the whole-depth compiled kernel
#: (kernels/cpu/depth.py) whatever its seeds; wider ones go layer by layer through BLAS.
SMALL_WIDTH_MAX = 128

#: Widest network run by the whole-depth kernel when it has a seed for every numba
#: thread; wider float32 Gaussian networks run in the wide kernel (kernels/cpu/wide.py).
#: Up to this width a seed per thread beats going layer by layer; with fewer seeds than
#: threads the per-layer path wins (the kernel runs one seed per thread, the others idle).
#: Both paths give the same bits.
SEEDED_WIDTH_MAX = 512

#: Smallest layer (entries of H) whose normalisation pass runs across threads.
PARALLEL_MIN_SIZE = 1 << 16

#: Largest matrix whose eigenvalues (or singular values) LAPACK computes with one BLAS
#: thread: up to it a second thread gains little on a quiet machine and costs several
#: times over on a busy one.
SMALL_EIGEN_MAX = 512

#: Seconds of work the depth loop aims to hand a backend in one call (a stretch of
#: measured layers, fastrank.propagate.iter_batch): long enough that the Python around
#: each call is noise, short enough for progress and for commits about once a second.
STRETCH_S = 0.05

#: Most bytes of spectra one stretch holds (measured layers x seeds x singular values).
STRETCH_BYTES = 64 << 20
