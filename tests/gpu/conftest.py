"""Tests that need a CUDA device. Every test here is skipped, with the reason printed,
where none is usable: the gate is cupy.cuda.runtime.getDeviceCount(), not whether CuPy
imports (CuPy installs and imports fine on machines without a GPU or driver)."""

from pathlib import Path

import pytest

HERE = Path(__file__).parent


def _why_no_device() -> str | None:
    try:
        import cupy
    except Exception as exc:  # not installed, or a broken install
        return f"no CUDA device usable: CuPy does not import ({' '.join(str(exc).split())})"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # no driver, driver too old for CuPy's runtime, ...
        return f"no CUDA device usable: {type(exc).__name__}: {' '.join(str(exc).split())}"
    if count == 0:
        return "no CUDA device usable: cupy.cuda.runtime.getDeviceCount() == 0"
    return None


NO_DEVICE = _why_no_device()


def pytest_report_header(config):
    return f"tests/gpu: {'skipped, ' + NO_DEVICE if NO_DEVICE else 'CUDA device found'}"


def pytest_collection_modifyitems(config, items):
    for item in items:
        if HERE in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.gpu)
            if NO_DEVICE:
                item.add_marker(pytest.mark.skip(reason=NO_DEVICE))
