"""Tunables in one place (tests patch them to force one code path on tiny inputs)."""

#: Widest constant-width float32 network run by the whole-depth compiled kernel
#: (kernels/cpu/depth.py); wider ones go layer by layer through BLAS.
SMALL_WIDTH_MAX = 128

#: Smallest layer (entries of H) whose normalisation pass runs across threads.
PARALLEL_MIN_SIZE = 1 << 16
