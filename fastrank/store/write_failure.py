"""A write to a results file that fails (a full disk, the file size limit, an I/O error):
:class:`WriteFailed`, whose one line says what became of the file; and closing the
writer's file (:func:`close_file`), also after such a failure without writing anything
more to it (:func:`abandon`), so that on disk it stays as the failure left it, as after
a kill at that write.
"""

from __future__ import annotations

import contextlib
import os

import h5py

from fastrank.errors import errno_of, os_reason


class WriteFailed(OSError):
    """HDF5 could not write to the file (disk full, file size limit, I/O error). The
    message says so in one line, with the system's reason (its ``errno`` is the
    system's error number) and what became of the file: every row committed before is
    kept (a resume continues it), or a new file that held none is removed, or a resume
    that failed while rebuilding the file left it as it was."""


#: What became of the file after a failed write (the end of WriteFailed's message).
KEPT = "every committed row is kept: --resume continues it"
REMOVED = "no row was committed, so no file is left"
AS_IT_WAS = "{path} is as it was"
RESUMABLE = "{path} is as it was: --resume continues it"
#: What h5py raises when HDF5 fails to write: an OSError from a write, a RuntimeError
#: from a flush or a close (a metadata cache left broken by a failed flush answers
#: anything after with KeyErrors and ValueErrors too; the writer stops at the first).
HDF5_ERRORS = (OSError, RuntimeError)


def write_failed(path, cause: BaseException, outcome: str) -> WriteFailed:
    """The WriteFailed of a failed write to ``path`` that raised ``cause``: one line
    with the system's reason (from the errno in HDF5's text) and ``outcome``."""
    exc = WriteFailed(f"writing {path} failed: {os_reason(cause)}; "
                      f"{outcome.format(path=path)}")
    exc.errno = errno_of(cause)
    return exc


def _write_nowhere(f: h5py.File) -> None:
    """Point an open file's descriptor at /dev/null, after a write to it failed: from
    here on nothing reaches the file on disk, which stays as the failure left it -- as
    after a kill at that write, which the format survives."""
    null = os.open(os.devnull, os.O_RDWR)
    try:
        os.dup2(null, f.id.get_vfd_handle())
    except Exception:  # noqa: BLE001 - a closed or odd handle: nothing left to protect
        pass
    finally:
        os.close(null)


def _settle(f: h5py.File) -> None:
    """Make an open file whose write failed closable, writing nothing more to disk.

    A flush that fails half-way leaves HDF5's metadata cache with its list of dirty
    entries still enabled, and every later flush and close -- a dataset's, the file's
    -- then fails on it ("slist already enabled?") before writing anything; h5py's
    objects fail the same way when freed (tracebacks at exit), and a file left open
    so crashes the interpreter's exit. One more flush goes through that list and ends
    it (its own first step fails on the flag, the rest proceeds): with the file
    written nowhere (:func:`_write_nowhere`) it cannot fail to write, and after it
    the file closes like any other."""
    _write_nowhere(f)
    for _ in range(3):
        try:
            f.flush()
            return
        except HDF5_ERRORS:
            continue


def close_file(f: h5py.File) -> None:
    """Close an open file: its datasets, then the file. A dataset that will not close
    (a failed flush left the metadata cache broken) closes once the file is settled.
    The file's own close is its last write (the superblock, saying it was closed): if
    that fails, HDF5 has freed the file nonetheless and it must not be touched again
    (asking for its descriptor, or flushing it, would crash)."""
    kinds = h5py.h5f.OBJ_LOCAL | h5py.h5f.OBJ_DATASET | h5py.h5f.OBJ_GROUP | \
        h5py.h5f.OBJ_DATATYPE | h5py.h5f.OBJ_ATTR
    for attempt in range(2):
        try:
            for oid in h5py.h5f.get_obj_ids(f.id, kinds):
                while oid.valid:
                    h5py.h5i.dec_ref(oid)
            break
        except HDF5_ERRORS:
            if attempt:
                raise
            _settle(f)
    f.close()


def abandon(f: h5py.File) -> None:
    """Close a file whose write failed, writing nothing more to it; never fails."""
    with contextlib.suppress(Exception):
        _settle(f)
    with contextlib.suppress(Exception):
        close_file(f)
