"""``fastrank env``: the software and hardware a sweep would run on."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata

import click

from fastrank.cli.group import cli
from fastrank.errors import one_line
from fastrank.version import GPU_INSTALL_HINT


@cli.command()
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object (the same keys and texts) instead, for scripts.")
def env(as_json):
    """Versions, threads, BLAS and CUDA devices.

    With --json, stdout is one JSON object whose keys and string values are the lines
    the plain output prints: fastrank, python, cpu, numpy, numba, h5py, click, blas,
    OPENBLAS_CORETYPE, cuda.
    """
    import h5py
    import numba
    import numpy

    from fastrank.version import FORMAT_VERSION, __version__

    lines = [
        ("fastrank", f"{__version__} (results format {FORMAT_VERSION})"),
        ("python", f"{sys.version.split()[0]} on {platform.platform()}"),
        ("cpu", f"{platform.machine()}, {os.cpu_count()} logical cores"),
        ("numpy", numpy.__version__),
        ("numba", f"{numba.__version__}, {numba.get_num_threads()} threads "
                  f"(threading layer setting: {numba.config.THREADING_LAYER})"),
        ("h5py", f"{h5py.__version__} (HDF5 {h5py.version.hdf5_version})"),
        ("click", metadata.version("click")),
        ("blas", _blas()),
        ("OPENBLAS_CORETYPE", os.environ.get("OPENBLAS_CORETYPE", "(unset)")),
        ("cuda", _cuda()),
    ]
    if as_json:
        import json

        click.echo(json.dumps(dict(lines), indent=2))
        return
    width = max(len(k) for k, _ in lines)
    for key, value in lines:
        click.echo(f"{key.ljust(width)}  {value}")


def _blas() -> str:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        import numpy

        cfg = numpy.show_config(mode="dicts").get("Build Dependencies", {}).get("blas", {})
        return f"{cfg.get('name', '?')} {cfg.get('version', '')} (threadpoolctl not installed)"
    pools = [p for p in threadpool_info() if p.get("user_api") == "blas"]
    return "; ".join(
        f"{p['internal_api']} {p.get('version')} {p.get('architecture', '')}, "
        f"{p['num_threads']} threads" for p in pools
    ) or "none found"


def _cuda() -> str:
    """CUDA driver, CuPy and every device, each said even when the others are missing."""
    driver = _driver_version()
    parts = [f"driver {driver}" if driver else "no CUDA driver found"]
    try:
        import cupy
    except ModuleNotFoundError as exc:
        if exc.name == "cupy":
            parts.append(f"cupy not installed ({GPU_INSTALL_HINT})")
        else:
            parts.append(f"cupy does not load (missing module {exc.name})")
        return "; ".join(parts)
    except Exception as exc:  # a broken install: say so rather than fail
        parts.append(f"cupy does not load ({one_line(exc)})")
        return "; ".join(parts)
    rt = cupy.cuda.runtime
    try:
        v = rt.runtimeGetVersion()
        parts.append(f"cupy {cupy.__version__} (CUDA runtime {v // 1000}.{v % 1000 // 10})")
    except Exception:
        parts.append(f"cupy {cupy.__version__}")
    try:
        n = rt.getDeviceCount()
    except Exception as exc:  # no driver, no device: say why
        parts.append(f"no usable device ({one_line(exc)})")
        return "; ".join(parts)
    if n == 0:
        parts.append("no device")
    for i in range(n):
        try:
            p = rt.getDeviceProperties(i)
            name = p["name"].decode() if isinstance(p["name"], bytes) else p["name"]
            parts.append(f"device {i}: {name}, compute capability {p['major']}.{p['minor']}, "
                         f"{p['totalGlobalMem'] / 2**30:.0f} GiB")
        except Exception as exc:
            parts.append(f"device {i}: unreadable ({one_line(exc)})")
    return "; ".join(parts)


def _driver_version() -> str | None:
    """The CUDA version the installed driver supports, from libcuda itself (no CuPy needed)."""
    import ctypes

    for name in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        version = ctypes.c_int()
        try:
            if lib.cuDriverGetVersion(ctypes.byref(version)) == 0 and version.value:
                return f"{version.value // 1000}.{version.value % 1000 // 10} (CUDA)"
        except AttributeError:
            return None
    return None
