"""The shared codes: stated once in fastrank.codes, restated nowhere else, and the failure
rule applied alike by the Python bookkeeping, the compiled whole-depth kernel and the
CUDA program (run on the host stand-in)."""

import re

import numpy as np
import pytest

from fastrank import codes
from fastrank.backends.base import Batch
from fastrank.gpu import program
from fastrank.kernels.cpu import depth
from fastrank.spec import Network

SUMS = [1.0, 1e-300, 5e-324, 0.0, -0.0, np.inf, -np.inf, np.nan, 1e308]
EXPECTED = [codes.OK, codes.OK, codes.OK, codes.VANISHED, codes.VANISHED, codes.NON_FINITE,
            codes.NON_FINITE, codes.NON_FINITE, codes.OK]


def test_the_rule():
    assert [codes.failure(x) for x in SUMS] == EXPECTED


def test_the_compiled_rule_and_the_bookkeeping_follow_it():
    assert [depth.failure(x) for x in SUMS] == EXPECTED
    batch = Batch(Network(width=4, depth=1), np.zeros(len(SUMS), np.uint64), None, 0,
                  np.zeros(len(SUMS)), np.full(len(SUMS), -1, np.int64),
                  np.zeros(len(SUMS), np.int64))
    for i, x in enumerate(SUMS):
        batch.account(i, 7, x)
    assert batch.reason.tolist() == EXPECTED
    assert batch.failed_layer.tolist() == [7 if e else -1 for e in EXPECTED]


def test_the_cuda_account_kernel_follows_it():
    from fastrank.gpu.testing import HostDevice

    try:
        dev = HostDevice()
    except Exception as exc:  # no C++ compiler on this machine
        pytest.skip(f"no host build of the CUDA program: {exc}")
    s = len(SUMS)
    part = np.array(SUMS, np.float64)
    failed, reason = np.full(s, -1, np.int64), np.zeros(s, np.int64)
    log_norm, factor = np.zeros(s), np.ones(s)
    dev.launch("account", s, 32, (part, np.int32(1), None, np.int64(7), None, np.int32(1),
                                  log_norm, failed, reason, factor))
    assert reason.tolist() == EXPECTED
    assert failed.tolist() == [7 if e else -1 for e in EXPECTED]


def test_the_cuda_sources_restate_no_shared_code():
    """Every shared code reaches CUDA through the generated #define lines only."""
    names = re.findall(r"#define (FR_\w+)", codes.cuda_defines())
    assert len(names) == len(codes.NORMS) + len(codes.ACTIVATIONS) + 7
    for source in program.source_names():
        text = program.source(source)
        for name in names:
            assert not re.search(rf"#\s*define\s+{name}\b", text), (source, name)
        # the kernels compare codes by name, never by number
        assert not re.search(r"\b(norm|act)\s*[=!]=\s*\d", text), source
    assert program.program().startswith(codes.cuda_defines())
