"""numba kernels for the CPU backend.

numba's OpenMP threads spin for a while after each parallel region, and so do BLAS
threads after a GEMM; alternating the two on few cores then costs many times the work.
:func:`start_threads` launches numba's threads with passive waiting and puts the
environment back at once, so that other OpenMP runtimes in the process keep their own
behaviour. A user's own setting wins. fastrank calls it before its
first parallel kernel (not at import, so that importing fastrank changes nothing for
others); anything that starts numba's pool earlier (numba.set_num_threads, another
parallel numba function) starts it with the spinning default, so call this first.
One caveat stays: an OpenMP library shared with numba (torch's wheels use the same
libgomp) then waits passively too, which slows its small parallel regions.

numba keeps the compiled kernels beside their sources (``__pycache__``) or, where the
install is read-only, in its user cache folder (``~/.cache/numba``). Where that cannot be
written either (a container's read-only home), numba would refuse to load any kernel, so
importing this package first gives it a folder of the user's own in the temporary
directory. A user's NUMBA_CACHE_DIR wins.
"""

import contextlib
import os
import stat
import tempfile

_started = False


def _writable(folder: str) -> bool:
    """Whether numba can keep its cache in ``folder`` (numba's own test: create it, write)."""
    try:
        os.makedirs(folder, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError:
        return False
    return True


def _private_folder() -> str:
    """A folder in the temporary directory that only this user can write, kept across
    runs (the kernels compile once per boot); a new one where that name is someone else's
    (numba loads what it finds there)."""
    path = os.path.join(tempfile.gettempdir(), f"fastrank-numba-{os.getuid()}")
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    info = os.lstat(path)
    if stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() and not info.st_mode & 0o022:
        return path
    return tempfile.mkdtemp(prefix="fastrank-numba-")


def _place_cache() -> str:
    """Where the compiled kernels are kept and why, as the first sweep's notice ends
    ('' beside their sources or in the user's NUMBA_CACHE_DIR); where numba has no
    folder it can write, it is given one first."""
    from numba.core import config
    from numba.misc.appdirs import AppDirs

    import fastrank  # fastrank/codes.py holds a kernel too

    sources = (__file__, fastrank.__file__)
    if config.CACHE_DIR or all(_writable(os.path.join(os.path.dirname(p), "__pycache__"))
                               for p in sources):
        return ""
    user = AppDirs(appname="numba", appauthor=False).user_cache_dir
    if _writable(user):
        return f"; kept in {user}: the install folder is read-only"
    try:
        folder = _private_folder()
    except OSError:  # no writable temporary directory either: numba says so
        return ""
    # In the environment too: numba rereads its settings from there when a NUMBA_
    # variable changes, and worker processes inherit it.
    os.environ["NUMBA_CACHE_DIR"] = config.CACHE_DIR = folder
    return f"; kept in {folder}: the install folder and {user} are read-only"


#: The end of the first sweep's notice: where the compiled kernels are kept, when that is
#: not beside their sources.
CACHE_NOTE = _place_cache()


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



def compiled_before(wide: bool = False) -> bool:
    """Whether numba's on-disk cache holds the whole-depth kernel (and, with ``wide``,
    the wide one) for this Python: if not, the first sweep compiles them (about 20 s of
    CPU, once per machine and install). A guess from numba's cache index (numba keeps it
    in __pycache__ beside the source, or in a user cache folder where that is
    read-only); True when it cannot tell."""
    try:
        from fastrank.kernels.cpu import depth

        kernels = [depth.advance]
        if wide:  # imported only then: a module of kernels maps memory of its own
            from fastrank.kernels.cpu import wide as wide_kernel

            kernels.append(wide_kernel.advance)
        return all(os.path.exists(k._cache._cache_file._index_path) for k in kernels)
    except Exception:  # numba's cache layout is not public: never stop a sweep over it
        return True
