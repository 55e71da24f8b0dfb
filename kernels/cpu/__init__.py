"""numba kernels for the CPU backend.

numba's OpenMP threads spin for a while after each parallel region, and so do BLAS
threads after a GEMM; alternating the two on few cores then costs up to 60x (measured
at d = 128 on 2 cores). :func:`start_threads` launches numba's threads with passive
waiting and puts the environment back at once, so that other OpenMP runtimes in the
process keep their own behaviour. A user's own setting wins. fastrank calls it before its
first parallel kernel (not at import, so that importing fastrank changes nothing for
others); anything that starts numba's pool earlier (numba.set_num_threads, another
parallel numba function) starts it with the spinning default, so call this first.
One caveat stays: an OpenMP library shared with numba (torch's wheels use the same
libgomp) then waits passively too, which slows its small parallel regions.
"""

import os

_started = False


def start_threads() -> None:
    """Launch numba's worker threads, those of an OpenMP layer waiting passively."""
    global _started
    if _started:
        return
    saved = os.environ.get("OMP_WAIT_POLICY")
    if saved is None:  # libgomp reads it once, when numba's OpenMP pool is loaded
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    try:
        from numba.np.ufunc.parallel import _launch_threads

        _launch_threads()
    finally:
        if saved is None:
            del os.environ["OMP_WAIT_POLICY"]
    _started = True



def compiled_before() -> bool:
    """Whether numba's on-disk cache holds the whole-depth kernel for this Python: if
    not, the first sweep compiles every kernel (about 20 s of CPU, once per machine and
    install). A guess from numba's cache index (numba keeps it in __pycache__ beside the
    source, or in a user cache folder where that is read-only); True when it cannot tell."""
    try:
        from fastrank.kernels.cpu import depth

        return os.path.exists(depth.advance._cache._cache_file._index_path)
    except Exception:  # numba's cache layout is not public: never stop a sweep over it
        return True
