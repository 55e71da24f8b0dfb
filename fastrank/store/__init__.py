"""The results file: one HDF5 file per sweep, the product every backend delivers into
(format: docs/format.md).

* schema.py - format version 3: names, dimensions, chunking, the layout;
* writer.py - the one writer: creation, resume, batched commits;
* write_failure.py - a failed write: WriteFailed, and the file closed writing no more;
* opening.py - a file opened to read: strict, or SWMR while written or after a kill;
* layout.py - the on-disk layouts of versions 2 and 3 read alike, and the status rules;
* reader.py - open() -> Results, for versions 2 and 3;
* run.py - Run, one run's status and arrays.

One writer per file is enforced by fastrank.lock.
"""

from fastrank.store.opening import DamagedFile
from fastrank.store.reader import Results, open
from fastrank.store.run import NoTangents, Run
from fastrank.store.schema import ROW_DATASETS, run_id
from fastrank.store.write_failure import WriteFailed
from fastrank.store.writer import SweepMismatch, Writer

__all__ = ["DamagedFile", "NoTangents", "ROW_DATASETS", "Results", "Run", "SweepMismatch",
           "WriteFailed", "Writer", "open", "run_id"]
