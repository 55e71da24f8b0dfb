"""What a sweep needs of the machine, checked before any file is touched: an output
path that can be created and renamed into place, and the memory of its largest batch of
runs plus the bookkeeping of every run and layer. A failed check is :class:`Refused`,
one line with the figure."""

from __future__ import annotations

import errno
import os
import resource
import stat
from pathlib import Path

from fastrank.spec import Network, Sweep

#: Bytes a writer adds to the output's name for its staging file (fastrank.store.writer:
#: ``.NAME.PID-RANDOM.tmp``, a pid of up to 7 digits).
STAGING_EXTRA = len("..4194304-0123abcd.tmp")
#: Bytes of bookkeeping per run (its row of the runs table, status, labels) and per layer
#: of a depth (the per-layer widths, twice while laid out), and per measured layer (the
#: schedule's points while built as a Python set).
PER_RUN, PER_LAYER, PER_POINT = 1024, 16, 100
#: Bytes of a new results file before its first row, its layout: measured 29 KB for 16
#: runs, 2.1 MB for 10,000 (the run columns and status), with a margin. A write that
#: fails while the layout is made cannot be recovered from (HDF5 crashes closing it),
#: so a folder without that much space, or a smaller file size limit, is refused.
LAYOUT_BYTES, LAYOUT_PER_RUN = 64 << 10, 256


class Refused(ValueError):
    """The sweep cannot run here as asked (output path, memory): one line saying why."""


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
        raise Refused(f"the sweep needs about {size(needed)} of memory ({why}) and "
                      f"{size(available)} are available: lower the width, batch, depth "
                      "or seeds, or pass --force to try anyway")


def memory_needed(sweep: Sweep) -> tuple[int, str]:
    """Bytes a sweep holds at its peak, and what they are: the largest batch of runs
    simulated together (every seed of one configuration, as the CPU backend runs them:
    per seed the representation, the next layer's buffer and the copies the spectra
    take; once the weights, and the Gram matrix and its eigensolver's work), plus the
    bookkeeping of every run and of every depth's layers and measured layers. Computed
    from the sizes alone: nothing depth-long is built."""
    networks = sweep.networks()
    seeds = len(sweep.seeds)
    batch, widest = max(((_batch_bytes(net, seeds), net) for net in networks),
                        key=lambda b: b[0])
    depths = {net.depth for net in networks}
    layers = sum(PER_LAYER * d + PER_POINT * _points(sweep, d) for d in depths)
    runs = sweep.n_runs
    why = (f"{size(batch)} for {seeds} run{'s' * (seeds > 1)} of {widest.label()} at once, "
           f"{size(layers + PER_RUN * runs)} of bookkeeping for {runs:,} runs of up to "
           f"{max(depths):,} layers")
    return batch + layers + PER_RUN * runs, why


def _batch_bytes(net: Network, seeds: int) -> int:
    item = 4 if net.dtype == "float32" else 8
    width = max(net.width) if isinstance(net.width, tuple) else net.width
    d, n = max(width, net.in_dim), net.batch
    k = min(d, n)
    per_seed = d * n * (3 * item + 8)
    return seeds * per_seed + d * d * item + 2 * k * k * 8


def _points(sweep: Sweep, depth: int) -> int:
    """An upper bound of the schedule's measured layers at ``depth``."""
    s = sweep.schedule
    return (2 + len(s.layers) + (depth // s.every if s.every else 0) + (s.log or 0)
            + (depth // s.cheap_every + 1 if s.cheap_every else 0))


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


def size(n: float) -> str:
    """Bytes for people: 7.45 GiB."""
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")
    i = 0
    while n >= 1024 and i < len(units) - 1:
        n, i = n / 1024, i + 1
    return f"{n:.3g} {units[i]}"
