"""What a sweep needs of the machine, checked before any file is touched: an output
path that can be created and renamed into place, the memory of its largest batch of
runs plus the bookkeeping of every run and layer, and the address space (or data
segment) its process maps under a ``ulimit -v`` / ``ulimit -d``. A failed check is
:class:`Refused`, one line with the figure. Importing this module loads nothing heavy:
the command line checks the limits before numpy loads."""

from __future__ import annotations

import errno
import math
import os
import re
import resource
import stat
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastrank.spec import Network, Sweep

#: Bytes a writer adds to the output's name for its staging file (fastrank.store.writer:
#: ``.NAME.PID-RANDOM.tmp``, a pid of up to 7 digits).
STAGING_EXTRA = len("..4194304-0123abcd.tmp")
#: Bytes of bookkeeping per run (its row of the runs table, status, labels) and per layer
#: of a depth (the per-layer widths, twice while laid out), and per measured layer (the
#: schedule's points while built as a Python set).
PER_RUN, PER_LAYER, PER_POINT = 1024, 16, 100
#: Bytes of a new results file before its first row, its layout: measured 29 KB for 16
#: runs, 2.1 MB for 10,000 (the run columns and status), with a margin. A folder
#: without that much space, or a smaller file size limit, is refused up front: the
#: sweep could not start (the writer would remove its file after the first failed write).
LAYOUT_BYTES, LAYOUT_PER_RUN = 64 << 10, 256


class Refused(ValueError):
    """The sweep cannot run here as asked (output path, memory, a limit, a thread count):
    one line saying why."""


def check_output(path: Path, runs: int) -> None:
    """Refuse an output path that a writer could not create and rename into place: a
    name or path too long once staged, a missing, read-only or full folder, and an
    existing symbolic link or anything but a regular file (replacing those would destroy
    them). Whether an existing file may be replaced is the caller's question."""
    try:
        _check_output(path, runs)
    except OSError as exc:  # what the checks' own system calls meet
        raise Refused(f"cannot write {path}: {exc.strerror or exc}") from None


def _check_output(path: Path, runs: int) -> None:
    folder, existing = path.absolute().parent, 0
    path_max = os.pathconf("/", "PC_PATH_MAX")
    if len(os.fsencode(folder / path.name)) + STAGING_EXTRA >= path_max:
        raise Refused(f"cannot write {path}: {os.strerror(errno.ENAMETOOLONG)} (a path of at "
                      f"most {path_max - STAGING_EXTRA - 1} bytes)")
    if os.path.lexists(path):
        st = os.lstat(path)
        mode = st.st_mode
        if stat.S_ISLNK(mode):
            raise Refused(f"{path} is a symbolic link (to {os.readlink(path)}): name the "
                          "file itself")
        if not stat.S_ISREG(mode):
            raise Refused(f"{path} is {_kind(mode)}, not a results file: choose another -o")
        existing = st.st_size  # a replacement or a resume is staged beside it
    if not folder.is_dir():
        raise Refused(f"cannot write {path}: {os.strerror(errno.ENOENT)} (no folder {folder})")
    name_max = os.pathconf(folder, "PC_NAME_MAX")
    if len(os.fsencode(path.name)) + STAGING_EXTRA > name_max:
        raise Refused(f"cannot write {path}: {os.strerror(errno.ENAMETOOLONG)} "
                      f"({len(os.fsencode(path.name))} bytes; at most "
                      f"{name_max - STAGING_EXTRA} here)")
    fs = os.statvfs(folder)
    if fs.f_flag & os.ST_RDONLY:
        raise Refused(f"cannot write {path}: {os.strerror(errno.EROFS)}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise Refused(f"cannot write {path}: {os.strerror(errno.EACCES)} (in {folder})")
    layout = LAYOUT_BYTES + LAYOUT_PER_RUN * runs
    free, needed = fs.f_bavail * fs.f_frsize, layout + existing
    if free < needed:
        raise Refused(f"cannot write {path}: {os.strerror(errno.ENOSPC)} ({size(free)} free, "
                      f"about {size(needed)} needed before the first row)")
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit != resource.RLIM_INFINITY and limit < max(layout, existing):
        raise Refused(f"cannot write {path}: the file size limit (ulimit -f) is "
                      f"{size(limit)}, and the file takes about {size(max(layout, existing))} "
                      "before its first row")


def _kind(mode: int) -> str:
    kinds = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
             (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
             (stat.S_ISSOCK, "a socket"))
    return next((text for test, text in kinds if test(mode)), "a special file")


def check_memory(sweep: Sweep) -> None:
    """Refuse a sweep that needs more memory than the machine has available."""
    available = available_memory()
    needed, why = memory_needed(sweep)
    if available is not None and needed > available:
        raise Refused(f"the sweep needs about {size(needed, up=True)} of memory ({why}) "
                      f"and {size(available)} are available: lower the width, batch, depth "
                      "or seeds, or pass --force to try anyway")


def check_device_memory(sweep: Sweep, backend) -> None:
    """Refuse a GPU sweep one of whose networks does not fit in the device's free memory
    even one seed at a time (fastrank.gpu.plan.batch_bytes), and one whose cap on
    seeds per batch (``backend.batch_cap``, --gpu-batch) does not fit; bigger groups of
    seeds are split into batches that fit (GPUBackend.max_batch)."""
    from fastrank.gpu.plan import batch_bytes, plan_batch

    dev = backend.dev
    free = dev.free_memory()
    if free is None:
        return
    seeds, cap = len(sweep.seeds), backend.batch_cap
    where = f"device {getattr(dev, 'device_id', 0)} has {size(free)} free"
    for net in sweep.networks():
        if (needed := batch_bytes(net, 1, sweep.tangents)) > free:
            raise Refused(f"the sweep needs about {size(needed, up=True)} of GPU memory for "
                          f"one seed of {net.label()} and {where}: lower the width or the batch")
        count = min(cap or 1, seeds)
        if (needed := batch_bytes(net, count, sweep.tangents)) > free:
            fit = plan_batch(net, free, None, sweep.tangents)
            raise Refused(f"the sweep needs about {size(needed, up=True)} of GPU memory for "
                          f"{count} seeds of {net.label()} at once (--gpu-batch {cap}) and "
                          f"{where}: lower --gpu-batch (at most {fit} fit), the width or the "
                          "batch")


def memory_needed(sweep: Sweep) -> tuple[int, str]:
    """Bytes a sweep holds at its peak, and what they are: the largest batch of runs
    simulated together (every seed of one configuration, as the CPU backend runs them:
    per seed the representation, the next layer's buffer and the copies the spectra
    take, and the tangents with their pushed copy (float64 at most); once the weights,
    and the Gram matrix and its eigensolver's work), plus the bookkeeping of every run
    and of every depth's layers and measured layers. Computed from the sizes alone:
    nothing depth-long is built."""
    networks = sweep.networks()
    seeds = len(sweep.seeds)
    batch, widest = max(((_batch_bytes(net, seeds, sweep.tangents), net) for net in networks),
                        key=lambda b: b[0])
    depths = {net.depth for net in networks}
    layers = sum(PER_LAYER * d + PER_POINT * _points(sweep, d) for d in depths)
    runs = sweep.n_runs
    why = (f"{size(batch)} for {seeds} run{'s' * (seeds > 1)} of {widest.label()} at once, "
           f"{size(layers + PER_RUN * runs)} of bookkeeping for {runs:,} runs of up to "
           f"{max(depths):,} layers")
    return batch + layers + PER_RUN * runs, why


def _batch_bytes(net: Network, seeds: int, tangents: int = 0) -> int:
    item = 4 if net.dtype == "float32" else 8
    d, n = max(_widest(net), net.in_dim), net.batch
    k = min(d, n)
    carried = 2 * (tangents + 1) * 8 if tangents else 0  # the tangents and their pushed copy
    per_seed = d * n * (3 * item + 8 + carried)
    return seeds * per_seed + d * d * item + 2 * k * k * 8


def _widest(net: Network) -> int:
    return max(net.width) if isinstance(net.width, tuple) else net.width


def _points(sweep: Sweep, depth: int) -> int:
    """An upper bound of the schedule's measured layers at ``depth``."""
    s = sweep.schedule
    return (2 + len(s.layers) + (depth // s.every if s.every else 0) + (s.log or 0)
            + (depth // s.cheap_every + 1 if s.cheap_every else 0))


#: The limits on a process's mappings, met as a failed mmap wherever one happens (SciPy's
#: OpenBLAS then retries its work buffer forever, LLVM aborts, a library fails to load),
#: and their names in the shell. They bound VmSize and VmData of /proc/self/status: the
#: two figures, in that order, of every (VmSize, VmData) pair below.
LIMITS = ((resource.RLIMIT_AS, "address-space limit (ulimit -v)"),
          (resource.RLIMIT_DATA, "data-segment limit (ulimit -d)"))
MIB = 1 << 20
#: (VmSize, VmData) a CPU sweep maps beyond the command line's modules: numba, LLVM and
#: SciPy's OpenBLAS with its first work buffer (LIBRARIES); the compiled kernels read
#: from numba's cache and their first calls (KERNELS), or compiled there instead, once
#: per install (COMPILE). Measured with numba 0.68, llvmlite 0.50 and SciPy 1.17:
#: 236/53, 58-73 and up to 290 MiB.
LIBRARIES, KERNELS, COMPILE = (240 * MIB, 56 * MIB), (80 * MIB, 80 * MIB), (320 * MIB, 320 * MIB)
#: (VmSize, VmData) of the command line before numpy loads, with numpy and its OpenBLAS:
#: less than this cannot run any command (measured 103/54 MiB).
STARTUP = (112 * MIB, 64 * MIB)
#: OpenBLAS's work buffer, mapped once by each thread that calls it (BUFFER_SIZE of
#: numpy's and SciPy's wheels).
BLAS_BUFFER = 32 * MIB
#: Address space glibc reserves for each malloc arena (HEAP_MAX_SIZE on 64-bit systems).
ARENA = 64 * MIB
#: mallopt's parameter for the most malloc arenas (glibc's malloc.h).
M_ARENA_MAX = -8
_arenas_shared = False


def memory_limits() -> list[tuple[str, int, int]]:
    """The finite limits of :data:`LIMITS`: (name, bytes, index of the figure it bounds
    in the (VmSize, VmData) pairs)."""
    found = []
    for i, (which, name) in enumerate(LIMITS):
        soft = resource.getrlimit(which)[0]
        if soft != resource.RLIM_INFINITY:
            found.append((name, soft, i))
    return found


def check_startup() -> None:
    """Refuse, before numpy loads, a limit that cannot hold numpy and the command line
    (numpy's OpenBLAS fails in its own words, or a module in a traceback)."""
    for name, limit, i in memory_limits():
        if limit < STARTUP[i]:
            raise Refused(f"the {name} is {size(limit)}; fastrank needs about "
                          f"{size(STARTUP[i], up=True)} to start: raise it")


def share_arenas() -> None:
    """Under a memory limit, every thread allocates from one malloc arena: glibc gives
    each new thread an arena of its own, 64 MiB of address space the threads' BLAS
    buffers then lack, and fastrank's compiled loops allocate nothing per layer. Before
    any thread starts; a user's MALLOC_ARENA_MAX wins; nothing changes but with glibc."""
    global _arenas_shared
    if _arenas_shared or not memory_limits() or _user_arenas() is not None:
        return
    import ctypes

    try:
        _arenas_shared = ctypes.CDLL(None).mallopt(M_ARENA_MAX, 1) == 1
    except (OSError, AttributeError):  # no mallopt: not glibc
        pass


def _user_arenas() -> int | None:
    try:
        return max(int(os.environ["MALLOC_ARENA_MAX"]), 1)
    except (KeyError, ValueError):
        return None


def numba_threads() -> int:
    """The threads numba will run: NUMBA_NUM_THREADS (more than the CPUs is allowed),
    else every CPU this process may use. A value that is not a count is Refused in one
    line (numba warns with a traceback and ignores it, or fails at its first kernel)."""
    from fastrank import blas

    text = os.environ.get("NUMBA_NUM_THREADS")
    if text is not None and not re.fullmatch(r"\s*\+?0*[1-9]\d*\s*", text):
        raise Refused(f"NUMBA_NUM_THREADS={text!r} is not a thread count: set it to an "
                      f"integer >= 1 (this machine has {blas.cores()} CPUs) or unset it")
    if "numba" in sys.modules:  # its pool's size was read when numba loaded
        return sys.modules["numba"].config.NUMBA_NUM_THREADS
    return int(text) if text is not None else blas.cores()


def check_limits(sweep: Sweep | None, loaded: bool = False) -> None:
    """Refuse a CPU sweep whose process would outgrow its address-space or data-segment
    limit: what cannot be mapped under one ends in a spin (SciPy's OpenBLAS retrying a
    work buffer), an abort (LLVM) or a library's misleading error. Checked before numba
    and SciPy's BLAS load, counting them from measured sizes, and again with ``loaded``
    once the CPU backend has loaded them (counting what is mapped, whether the kernels
    must be compiled, and which BLAS threads the sweep wakes). ``sweep`` None: a resumed
    file's own sweep, counted without its runs."""
    numba_threads()  # a bad NUMBA_NUM_THREADS is refused with or without a limit
    limits = memory_limits()
    if not limits:
        return
    parts = limits_needed(sweep, loaded)
    for name, limit, i in limits:
        needed = sum(part[i] for _, part in parts)
        if needed <= limit:
            continue
        why = ", ".join(f"{size(part[i])} for {what}" for what, part in parts if part[i])
        fewer = sum(part[i] for _, part in limits_needed(sweep, loaded, threads=1))
        hint = (f", or run on one thread (NUMBA_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1: "
                f"about {size(fewer, up=True)})" if fewer <= limit else "")
        raise Refused(f"the {name} is {size(limit)}; this sweep needs about "
                      f"{size(needed, up=True)} "
                      f"({why}): raise it{hint}")


def limits_needed(sweep: Sweep | None, loaded: bool = False,
                  threads: int | None = None) -> list[tuple[str, tuple[int, int]]]:
    """What a CPU sweep's process maps at its peak, as (what, (VmSize, VmData) bytes):
    this process with numba, LLVM and the BLAS libraries; compiling the kernels where
    numba's cache lacks them (known once ``loaded``); numba's threads (a stack each;
    those that call BLAS a work buffer, and a malloc arena unless :func:`share_arenas`);
    the OpenBLAS pools' threads to come (a stack and a buffer each); the runs
    (:func:`memory_needed`). ``threads``: for that many numba and OpenBLAS threads."""
    from fastrank import blas

    mapped = tuple(now + (0 if loaded else more)
                   for now, more in zip(_status(), LIBRARIES, strict=True))
    parts = [("this process with numba and the BLAS libraries", mapped)]
    wide, wakes = _paths(sweep) if loaded and sweep is not None else (False, False)
    if loaded and not _kernels_cached(wide):
        parts.append(("compiling the kernels (once per install)", COMPILE))
    else:
        parts.append(("the compiled kernels", KERNELS))
    count = numba_threads() if threads is None else threads
    working = count if wide or sweep is None else min(count, len(sweep.seeds))
    own = (count - 1) * _thread_stack(openmp=True) + (working - 1) * BLAS_BUFFER
    arenas = 0 if _arenas_shared else (min(working, _user_arenas() or working) - 1) * ARENA
    parts.append((f"{count} numba thread{'s' * (count > 1)}", (own + arenas, own)))
    start, usual = (1, 1) if threads is not None else blas.pool_sizes()
    pool = (0 if loaded else start - 1) + (2 * (usual - start) if wakes else 0)
    pool_bytes = pool * (_thread_stack(openmp=False) + BLAS_BUFFER)
    parts.append((f"{pool} OpenBLAS thread{'s' * (pool > 1)}", (pool_bytes, pool_bytes)))
    if sweep is not None:
        runs = memory_needed(sweep)[0]
        parts.append(("the runs", (runs, runs)))
    return parts


def _kernels_cached(wide: bool) -> bool:
    """kernels.cpu.compiled_before, imported only once numba has loaded (that package
    loads numba, which the first check must come before)."""
    from fastrank.kernels.cpu import compiled_before

    return compiled_before(wide)


def _status() -> tuple[int, int]:
    """(VmSize, VmData) of this process in bytes; zeros where /proc cannot be read."""
    found = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmSize", "VmData"):
                    found[key] = int(value.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return found.get("VmSize", 0), found.get("VmData", 0)


def _paths(sweep: Sweep) -> tuple[bool, bool]:
    """Whether any network of ``sweep`` runs in the wide kernel (every numba thread calls
    BLAS), and whether any wakes OpenBLAS's pools (fastrank.blas.usual): networks run
    layer by layer, spectra above tuning.SMALL_EIGEN_MAX, the Gram tier outside the wide
    kernel."""
    from fastrank import tuning
    from fastrank.backends.cpu import uses_depth_kernel, uses_wide_kernel

    wide = wakes = False
    for net in sweep.networks():
        in_wide = uses_wide_kernel(net)
        wide |= in_wide
        wakes |= ((not in_wide and not uses_depth_kernel(net, len(sweep.seeds)))
                  or min(_widest(net), net.batch) > tuning.SMALL_EIGEN_MAX
                  or bool(sweep.schedule.cheap_every and not in_wide))
    return wide, wakes


def _thread_stack(openmp: bool) -> int:
    """Address space of a new thread's stack: for OpenMP's, OMP_STACKSIZE where set (KiB,
    or a number with a B, K, M or G suffix); else glibc's default, the stack limit
    (ulimit -s), or 2 MiB where that is unlimited."""
    units = {"b": 0, "": 10, "k": 10, "m": 20, "g": 30}
    for name in ("OMP_STACKSIZE", "GOMP_STACKSIZE") if openmp else ():
        found = re.fullmatch(r"\s*(\d+)\s*([bkmg]?)\s*", os.environ.get(name, ""), re.I)
        if found:
            return int(found[1]) << units[found[2].lower()]
    soft = resource.getrlimit(resource.RLIMIT_STACK)[0]
    return 2 * MIB if soft == resource.RLIM_INFINITY else soft


def under_limit(error: BaseException) -> str | None:
    """The memory limits in force (``the address-space limit (ulimit -v) of 300 MiB``)
    for an error that one explains: a MemoryError, or a library or mapping that failed
    for lack of memory; else None."""
    limits = memory_limits()
    unmapped = (isinstance(error, MemoryError) or getattr(error, "errno", None) == errno.ENOMEM
                or isinstance(error, (OSError, ImportError))
                and any(words in str(error).lower() for words in
                        ("map segment", "cannot allocate memory", "load shared object")))
    if not (limits and unmapped):
        return None
    return " and ".join(f"the {name} of {size(limit)}" for name, limit, _ in limits)


def available_memory() -> int | None:
    """Bytes this process may still take: the kernel's MemAvailable, lowered to what the
    cgroup (v2) leaves; None where neither can be read."""
    found = []
    try:
        with open("/proc/meminfo") as f:
            found += [int(line.split()[1]) * 1024 for line in f
                      if line.startswith("MemAvailable:")]
    except (OSError, ValueError, IndexError):
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            found.append(int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text()))
    except (OSError, ValueError):
        pass
    return max(min(found), 0) if found else None


def size(n: float, up: bool = False) -> str:
    """Bytes for people: 7.45 GiB, to three significant digits (four from 1000 to 1023);
    ``up``: rounded up, for a need, so that the amount named is enough."""
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
    i = 0
    while n >= 1024 and i < len(units) - 1:
        n, i = n / 1024, i + 1
    if up and n > 0:
        step = 10.0 ** (math.floor(math.log10(n)) - 2)
        n = math.ceil(round(n / step, 6)) * step
    return f"{n:.{max(3, len(str(int(n + 0.5))))}g} {units[i]}"
