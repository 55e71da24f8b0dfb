"""OpenBLAS's thread pools: at one thread for the compiled kernels, at their usual count
for numpy's own products, and started at one thread by the sweep commands.

OpenBLAS starts its pool when its library loads, and the pool's threads spin before
they sleep (about 0.1 s of CPU each); numpy loads one copy and SciPy another (the one
numba's kernels call). Most sweeps use neither pool: the compiled kernels make one
product per numba thread. So the command line loads them with one thread
(:func:`loading_at_one_thread`, unless the user set a BLAS thread count), and
:func:`usual` raises them, around each product that uses the pool, to the count OpenBLAS
would have chosen. Every product then runs at the same thread count (which can change
its last bits) whether the command line or a library user started the process.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys

#: What OpenBLAS reads for its thread count, in its order: a user's setting wins.
THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS")
#: The count :func:`usual` raises the libraries to, once they were loaded at one thread;
#: None: the libraries keep the count they loaded with.
_usual: int | None = None


def cores() -> int:
    """The CPUs this process may run on: OpenBLAS's own thread count without a setting."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def _one_thread_environment():
    before = os.environ.get("OPENBLAS_NUM_THREADS")
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    try:
        yield
    finally:  # subprocesses get the user's environment
        if before is None:
            del os.environ["OPENBLAS_NUM_THREADS"]
        else:
            os.environ["OPENBLAS_NUM_THREADS"] = before


@contextlib.contextmanager
def loading_at_one_thread():
    """numpy, imported inside the block, loads its OpenBLAS with one thread, and SciPy's
    loads so later (:func:`libraries`); :func:`usual` raises both where a product uses
    them. Nothing changes when numpy is loaded already or a thread count is set."""
    global _usual
    if "numpy" in sys.modules or any(os.environ.get(v) for v in THREAD_VARIABLES):
        yield
        return
    with _one_thread_environment():
        yield
    if "numpy" in sys.modules:
        _usual = cores()


def pool_sizes() -> tuple[int, int]:
    """The threads of each OpenBLAS pool as it loads, and inside :func:`usual`: one and
    the usual count where the command line loads them, else what OpenBLAS reads (a user's
    count, or every CPU). Each thread maps a stack and a work buffer (fastrank.preflight
    counts them)."""
    if _usual:
        return 1, _usual
    for name in THREAD_VARIABLES:
        try:
            count = int(os.environ.get(name, ""))
        except ValueError:
            continue
        if count >= 1:
            return count, count
    return cores(), cores()


@functools.cache
def libraries() -> list:
    """threadpoolctl's handles on the loaded BLAS libraries: numpy's, and SciPy's copy that
    numba's compiled kernels call (loaded here first, so that it is among them)."""
    if _usual:
        with _one_thread_environment():
            _load_cython_blas()
    import scipy.linalg.cython_lapack  # noqa: F401  (a no-op once loaded)
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController().select(user_api="blas").lib_controllers


def _load_cython_blas() -> None:
    """SciPy's BLAS and LAPACK for Cython (all that numba's kernels call of SciPy) loaded
    as modules of their own, without running scipy.linalg's __init__: that imports all of
    scipy.linalg and SciPy's array API layer, a good part of a small sweep's start, for
    two modules that need none of it. A later ``import scipy.linalg`` finds them loaded (only
    the package attribute ``scipy.linalg.cython_blas`` is then missing), so this runs in
    the command line's processes only; anything unexpected falls back to the import."""
    import importlib.machinery
    import importlib.util

    if "scipy.linalg" in sys.modules:  # the package is loaded: the plain import is free
        return
    try:
        import scipy

        folder = os.path.join(os.path.dirname(scipy.__file__), "linalg")
        for name in ("cython_blas", "cython_lapack"):  # lapack cimports blas: blas first
            full = f"scipy.linalg.{name}"
            if full in sys.modules:
                continue
            found = importlib.machinery.PathFinder.find_spec(name, [folder])
            spec = importlib.util.spec_from_file_location(full, found.origin)
            module = importlib.util.module_from_spec(spec)
            sys.modules[full] = module
            try:
                spec.loader.exec_module(module)
            except BaseException:
                del sys.modules[full]
                raise
    except Exception:  # noqa: BLE001 - SciPy laid out otherwise: the plain import does it
        pass


@contextlib.contextmanager
def threads(n: int, libs: list | None = None):
    """Every BLAS library (or those of ``libs``) at ``n`` threads inside the block, put
    back after it. Through the libraries' own setters: a threadpoolctl limit re-inspects
    every library on each entry, which a sweep measuring thousands of small layers would
    pay each time."""
    libs = libraries() if libs is None else libs
    before = [lib.num_threads for lib in libs]
    for lib, count in zip(libs, before, strict=True):
        if count != n:
            lib.set_num_threads(n)
    try:
        yield
    finally:
        for lib, count in zip(libs, before, strict=True):
            if count != n:
                lib.set_num_threads(count)


def one_thread():
    """Every BLAS library at one thread inside the block (one product per numba thread)."""
    return threads(1)


@functools.cache
def _openblas() -> list:
    """The loaded OpenBLAS libraries: those OPENBLAS_NUM_THREADS started at one thread
    (another BLAS, e.g. MKL, loaded with its own count and is left to it)."""
    return [lib for lib in libraries() if lib.internal_api == "openblas"]


def usual():
    """Every BLAS library at its usual thread count inside the block: the count OpenBLAS
    would have chosen, where the command line loaded it at one thread; else unchanged."""
    return threads(_usual, _openblas()) if _usual else contextlib.nullcontext()


def usual_threads() -> int:
    """The thread count of the products inside :func:`usual` (recorded with each run)."""
    return max(_usual if _usual and lib.internal_api == "openblas" else lib.num_threads
               for lib in libraries())


def restore() -> None:
    """The libraries at their usual count from here on, for commands that report or
    benchmark the process's thread counts rather than run sweeps."""
    global _usual
    if _usual:
        from threadpoolctl import ThreadpoolController

        for lib in ThreadpoolController().select(internal_api="openblas").lib_controllers:
            lib.set_num_threads(_usual)
        _usual = None
