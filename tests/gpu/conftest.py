"""The GPU suite runs over two devices: ``host``, the CPU stand-in (always, also in CI:
the CUDA kernels built for the CPU, numpy for the libraries, CuPy's capture rules), and
``cuda``, the real one through CuPy where a device is usable (skipped with the reason
elsewhere: the gate is cupy.cuda.runtime.getDeviceCount(), not whether CuPy imports,
since CuPy installs and imports fine on machines without a GPU or driver).

Tests that take the ``device`` fixture run once per device; ``device.backend(**options)``
builds a GPUBackend on it.
"""

from __future__ import annotations

import pytest

from fastrank.gpu import GPUBackend


def why_no_cuda() -> str | None:
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


NO_CUDA = why_no_cuda()


def pytest_report_header(config):
    cuda = f"no device: {NO_CUDA}" if NO_CUDA else "a CUDA device"
    return f"tests/gpu: the host stand-in, and {cuda}"


class Target:
    """One device of the suite: its kind, its array module, and backends built on it."""

    def __init__(self, kind: str):
        self.kind = kind
        if kind == "host":
            from fastrank.gpu.testing import HostDevice, HostKernels

            HostKernels()  # builds the host library once (g++), or raises CompileError
            self._host_device = HostDevice
        self.dev = self.backend().dev

    @property
    def xp(self):
        return self.dev.xp

    def backend(self, graphs: bool | None = None, **options) -> GPUBackend:
        """A GPUBackend on this device; ``graphs`` as GPUBackend's (None: the default);
        on the stand-in, ``block``: its threads per block (default one warp: the
        emulation runs a fiber per thread), ``capture_safe_gemm``: HostDevice's."""
        safe_gemm = options.pop("capture_safe_gemm", True)  # the stand-in's rules only
        block = options.pop("block", 32)
        if self.kind == "host":  # small blocks: the emulation runs one fiber per thread
            dev = self._host_device(block=block, eigen_block=32, graphs=graphs is not False,
                                    capture_safe_gemm=safe_gemm)
            options.pop("tf32", None)
            return GPUBackend(dev=dev, graphs=graphs, **options)
        return GPUBackend(graphs=graphs, **options)


@pytest.fixture(scope="session", params=["host", "cuda"])
def device(request) -> Target:
    if request.param == "cuda" and NO_CUDA:
        pytest.skip(NO_CUDA)
    if request.param == "host":
        from fastrank.gpu.program import CompileError

        try:
            return Target("host")
        except CompileError as exc:
            pytest.skip(f"no host build of the CUDA kernels: {exc}")
    return Target("cuda")


@pytest.fixture(scope="session")
def nvrtc():
    """fastrank's NVRTC library (tests that compile the CUDA sources are skipped where it
    is unavailable)."""
    from fastrank.gpu import program

    try:
        lib, path = program.nvrtc()
    except OSError as exc:
        pytest.skip(f"NVRTC unavailable, CUDA sources not compiled: {exc}")
    print(f"NVRTC {program.nvrtc_version()} from {path}")
    return lib


@pytest.fixture(scope="session")
def cuda(device) -> Target:
    """The real device only (tests of what only CUDA has: TF32, CuPy's refusals, ...)."""
    if device.kind != "cuda":
        pytest.skip("needs a CUDA device")
    return device


@pytest.fixture
def unless_cuda():
    """Skips the test where a CUDA device is usable (tests of the no-device answers)."""
    if not NO_CUDA:
        pytest.skip("this machine has a CUDA device")
