"""One writer per results file: an advisory lock on a sidecar next to the file.

The writer of ``dir/r.h5`` holds an exclusive ``flock`` on ``dir/.r.h5.lock`` (which
names its pid and host) from before it checks or stages anything until it closes; the
operating system releases it when the process dies, however it dies, so a lock is never
stale. A second writer gets :class:`WriterLocked` with the holder in one line. Readers
only probe the lock (a shared lock taken and dropped at once) to learn whether a writer
is alive; a writer that meets a probe retries for a moment rather than failing.

While it holds the lock the writer also removes staging files (``.r.h5.*.tmp``) that
killed writers left behind: only the lock holder stages, so any other is stale.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import os
import re
import socket
import time

#: How long a writer retries a lock that is held (readers' probes last microseconds).
RETRY_S = 2.0


class WriterLocked(RuntimeError):
    """Another process is writing this results file (the message names it)."""


def sidecar(path) -> str:
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(folder, f".{name}.lock")


def staging_files(path) -> list[str]:
    """The staging files of ``path`` (``.NAME.PID-RANDOM.tmp``, fastrank.store.writer),
    and not those of another output whose name starts with this one's."""
    folder, name = os.path.split(os.path.abspath(path))
    own = re.compile(rf"\.{re.escape(name)}\.\d+-[0-9a-f]{{8}}\.tmp")
    candidates = glob.glob(os.path.join(folder, f".{glob.escape(name)}.*.tmp"))
    return [p for p in candidates if own.fullmatch(os.path.basename(p))]


def _holder(fd: int) -> str:
    with contextlib.suppress(OSError):
        text = os.pread(fd, 256, 0).decode("utf-8", "replace").split()
        if len(text) >= 2:
            return f"pid {text[0]} on host {text[1]}"
    return "another process"


class WriterLock:
    """The exclusive lock of one results file's writer (a context manager)."""

    def __init__(self, path):
        self.path = os.fspath(path)
        self._fd: int | None = None

    def acquire(self) -> WriterLock:
        name = sidecar(self.path)
        deadline = time.monotonic() + RETRY_S
        while True:
            fd = os.open(name, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(fd)
                os.close(fd)
                if time.monotonic() > deadline:
                    raise WriterLocked(f"{self.path} is being written by {holder}") from None
                time.sleep(0.005)
                continue
            try:  # the sidecar may have been removed by the previous holder meanwhile
                same = os.path.samestat(os.fstat(fd), os.stat(name))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        self._fd = fd
        try:  # naming the holder fails on a full disk: the sidecar goes, the error stays
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        except BaseException:
            self.release()
            raise
        for stale in staging_files(self.path):
            with contextlib.suppress(OSError):
                os.unlink(stale)
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(sidecar(self.path))
        os.close(self._fd)  # closing drops the flock
        self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> WriterLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def writer_alive(path) -> bool:
    """Whether a process holds the writer's lock of ``path`` right now."""
    try:
        fd = os.open(sidecar(path), os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)  # drops the probe's shared lock, if taken
    return False
