"""The results file: one HDF5 file per sweep, the product every backend delivers into
(format: docs/format.md).

* schema.py - format version 3: names, dimensions, chunking, the layout;
* writer.py - the one writer: creation, resume, batched commits, failures;
* opening.py - a file opened to read: strict, or SWMR while written or after a kill;
* reader.py - open() -> Results -> Run, for versions 2 and 3.

One writer per file is enforced by fastrank.lock.
"""

from fastrank.store.reader import DamagedFile, Results, Run, open
from fastrank.store.schema import ROW_DATASETS, run_id
from fastrank.store.writer import SweepMismatch, WriteFailed, Writer

__all__ = ["DamagedFile", "ROW_DATASETS", "Results", "Run", "SweepMismatch", "WriteFailed",
           "Writer", "open", "run_id"]
