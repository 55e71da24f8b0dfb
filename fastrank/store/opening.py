"""Opening a results file for reading, safely: strictly when finished, as a SWMR reader
when a writer holds it or a killed writer left it, as h5py and h5netcdf open files (so
the same file may be open through them in this process), never hanging on a file cut
short and never calling a live file's passing states damage (docs/format.md, Reading).
What damage raises when the file is read is named here too (:data:`DAMAGE`,
:data:`EDITED`, :func:`damage_as`).
"""

from __future__ import annotations

import builtins
import contextlib
import ctypes
import errno
import functools
import json
import os
import time

import h5py

from fastrank.errors import errno_of, one_line, os_reason
from fastrank.lock import writer_alive
from fastrank.store import schema
from fastrank.version import FORMAT_NAME, FORMAT_VERSION, __version__

#: How long a read of a file that a writer holds is retried when it meets a chunk or a
#: header being rewritten (a checksum that fails once, then passes).
LIVE_RETRY_S = 2.0
#: Why a strict open fails on a file that a writer left, killed or after a failed write
#: (its superblock still flags it open for writing, or records space the write never
#: filled): the SWMR reader opens those, and checksums guard what it reads.
_LEFT_BY_A_WRITER = ("already open for write", "truncated file")
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


class DamagedFile(ValueError):
    """A results file that cannot be read as written (truncated, corrupted)."""


#: What h5py raises on damaged files: a failed metadata checksum opening an object is a
#: KeyError, iterating a group a RuntimeError, a failed data checksum an OSError, a
#: flipped byte in a string a decode error.
DAMAGE = (KeyError, OSError, RuntimeError, UnicodeDecodeError, json.JSONDecodeError)
#: What reading an edited file's metadata raises besides: values of the wrong type or
#: shape, indexes out of range.
EDITED = (*DAMAGE, IndexError, TypeError, ValueError)


def _check_format(f: h5py.File, path: str) -> None:
    name = schema.text(f.attrs.get("format", ""))
    if name != FORMAT_NAME:
        raise ValueError(f"{path} is not a fastrank results file (format attr {name!r})")
    raw = f.attrs.get("format_version", 0)
    try:
        version = int(raw)
    except (TypeError, ValueError):
        raise ValueError(f"{path} has an invalid format version {raw!r}") from None
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{path} has format version {version}, newer than this fastrank "
            f"{__version__} reads ({FORMAT_VERSION}): upgrade fastrank"
        )
    if version < 1:
        raise ValueError(f"{path} has an invalid format version {version}")


def _closed(path: str) -> bool:
    """Whether the file's superblock (version 2 or 3, as fastrank writes) says its writer
    closed it: a writer that died leaves the consistency flags set. A closed file that
    HDF5 finds shorter than it recorded was truncated afterwards, and a SWMR reader
    would read what was cut off as zeros (which pass Fletcher32 in uncompressed chunks)."""
    with builtins.open(path, "rb") as fh:
        head = fh.read(12)
    return head[:8] == _HDF5_SIGNATURE and head[8] >= 2 and head[11] == 0


def open_file(path, writing: bool | None = None) -> h5py.File:
    """The HDF5 file of a results file, read-only: strictly when finished, as a SWMR
    reader when a writer holds it (``writing``; default: ask its lock) or left it.

    Opened as h5py and h5netcdf open files (HDF5's own file locking), so the same file
    may be open through h5py or xarray in this process too. A file a writer holds is
    in flux: a failed open is retried for up to LIVE_RETRY_S. A file no writer holds
    cannot change: HDF5 reads its metadata once (SWMR readers retry a failed checksum
    with back-off, for many minutes on a file cut short)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    if not h5py.is_hdf5(path):
        raise ValueError(f"{path} is not an HDF5 file, so not a fastrank results file")
    if writing is None:
        writing = writer_alive(path)
    if writing:
        return retried(lambda: _checked_open(path, swmr=True, live=True), live=True)
    try:
        return _checked_open(path, swmr=False, live=False)
    except _LeftByAWriter:
        return _checked_open(path, swmr=True, live=False)


class _LeftByAWriter(Exception):
    """A strict open failed the way a file that a writer left fails (see
    _LEFT_BY_A_WRITER): it is read as a SWMR reader instead."""


def retried(read, live: bool):
    """``read()``; while ``live`` (a writer holds the file), a read that meets a chunk
    or header being rewritten is retried for up to LIVE_RETRY_S before it counts as
    damage. A file that no writer holds does not change: its failures are final."""
    deadline = time.monotonic() + LIVE_RETRY_S
    while True:
        try:
            return read()
        except (*EDITED, DamagedFile):
            if not live or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


@contextlib.contextmanager
def damage_as(message: str):
    """A checksum mismatch or an unreadable or edited object met inside, as one
    DamagedFile line: ``message`` and the error; a DamagedFile (already naming what
    failed) passes as it is."""
    try:
        yield
    except DamagedFile:
        raise
    except EDITED as exc:
        raise DamagedFile(f"{message} ({one_line(exc, typed=True)})") from None


def _checked_open(path: str, swmr: bool, live: bool) -> h5py.File:
    """The file opened (:func:`_opened`), its format checked and, for a SWMR reader, its
    chunks checked against its length; damage as DamagedFile."""
    try:
        f = _opened(path, swmr, live)
    except OSError as exc:
        raise _open_error(path, exc, swmr) from None
    try:
        _check_format(f, path)
        cut = _chunk_past_the_end(f) if swmr else None
        if cut:
            raise DamagedFile(f"{path} is damaged: cut short ({cut})")
    except DAMAGE as exc:  # the root group's own header, say, fails its checksum
        f.close()
        raise DamagedFile(f"{path} is damaged: {one_line(exc)}") from None
    except BaseException:
        f.close()
        raise
    return f


def _open_error(path: str, exc: OSError, swmr: bool) -> Exception:
    """What a failed open means: a file a writer left (strict open only), a file the
    system will not let us read (not damage), or damage."""
    text = str(exc)
    if not swmr and any(m in text for m in _LEFT_BY_A_WRITER) and not _closed(path):
        return _LeftByAWriter()
    if "unable to lock file" in text:
        return OSError(f"{path} is locked by another program writing it with HDF5 "
                       f"({os_reason(exc)}): read it once that program has closed it")
    if errno_of(exc) in _NOT_DAMAGE:
        return OSError(f"cannot read {path}: {os_reason(exc)}")
    return DamagedFile(f"{path} is damaged: {one_line(exc)}")


#: System errors opening a file that say nothing about its contents.
_NOT_DAMAGE = (errno.EACCES, errno.EPERM, errno.EMFILE, errno.ENFILE, errno.ENOMEM)
#: HDF5 opens a file once per process: a second open must ask for the first one's
#: SWMR and locking flags. The first open is fastrank's own or a user's (h5py, h5netcdf).
_FLAG_CLASH = ("flag values don't match", "SWMR read access flag not the same")
#: File locking as (use, ignore where the file system has none): HDF5's default (from
#: HDF5_USE_FILE_LOCKING), then every other setting a user's open may have asked for.
_LOCKINGS = (None, (True, True), (True, False), (False, False), (False, True))


def _opened(path: str, swmr: bool, live: bool) -> h5py.File:
    """``path`` opened read-only with the flags of any open of it in this process.

    With ``swmr`` and not ``live`` (a file that a killed writer left), HDF5 reads each
    piece of metadata once instead of retrying a failed checksum. If this process has
    the file open already without SWMR (a finished file a user opened with h5py), the
    SWMR read becomes a strict one, as it must to share that open."""
    clash = None
    for reader_swmr in dict.fromkeys((swmr, False)):
        for locking in _LOCKINGS:
            fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
            fapl.set_libver_bounds(h5py.h5f.LIBVER_EARLIEST, h5py.h5f.LIBVER_LATEST)
            if locking is not None:
                fapl.set_file_locking(*locking)
            if reader_swmr and not live:
                _read_metadata_once(fapl)
            flags = h5py.h5f.ACC_RDONLY | (h5py.h5f.ACC_SWMR_READ if reader_swmr else 0)
            try:
                return h5py.File(h5py.h5f.open(os.fsencode(path), flags, fapl=fapl))
            except OSError as exc:
                if not any(m in str(exc) for m in _FLAG_CLASH):
                    if locking is None and "unable to lock file" in str(exc) and \
                            errno_of(exc) in _NO_LOCKS:
                        continue  # a file system without locks: open without them
                    raise
                clash = clash or exc
    raise clash


#: What HDF5's failed lock says when the file system does not do file locks.
_NO_LOCKS = (errno.ENOSYS, errno.ENOLCK, errno.EOPNOTSUPP)


@functools.cache
def _metadata_read_attempts():
    """HDF5's H5Pset_metadata_read_attempts, which h5py does not wrap, from the HDF5
    library h5py is linked to (found through one of h5py's own extension modules)."""
    function = ctypes.CDLL(h5py.h5p.__file__).H5Pset_metadata_read_attempts
    function.argtypes, function.restype = (ctypes.c_int64, ctypes.c_uint), ctypes.c_int
    return function


def _read_metadata_once(fapl: h5py.h5p.PropFAID) -> None:
    if _metadata_read_attempts()(fapl.id, 1) < 0:
        raise OSError("HDF5 refused H5Pset_metadata_read_attempts")


def _chunk_past_the_end(f: h5py.File) -> str | None:
    """Where a dataset of the root group has a chunk beyond the end of the file, or None.

    A SWMR reader is not refused a file shorter than its recorded length, and reads what
    a cut removed as zeros, which pass Fletcher32 in an uncompressed chunk: a killed
    writer's file cut afterwards read changed rows silently. A chunk that the file's
    index lists was on disk before the index (the writer flushes data first), so one
    that ends past the end of the file means the file was cut. The file's length is
    taken after its index is read (a live writer only lengthens it meanwhile), from the
    open file itself (a resume may have put a new file at its name)."""
    ends = {}
    for name in f:
        dsid = f[name].id
        if not isinstance(dsid, h5py.h5d.DatasetID) or dsid.get_create_plist().get_layout() \
                != h5py.h5d.CHUNKED:
            continue
        found = [0]
        try:
            dsid.chunk_iter(lambda info, found=found: found.append(info.byte_offset + info.size))
        except NotImplementedError:  # h5py built on HDF5 < 1.14: one call per chunk
            found += [info.byte_offset + info.size for info in
                      map(dsid.get_chunk_info, range(dsid.get_num_chunks()))]
        ends[name] = max(found)
    size = os.fstat(f.id.get_vfd_handle()).st_size
    for name, end in ends.items():
        if end > size:
            return f"{name}: a chunk ends at byte {end}, the file has {size}"
    return None
