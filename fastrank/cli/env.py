"""``fastrank env``: the software and hardware a sweep would run on."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata

import click

from fastrank.cli import cli


@cli.command()
def env():
    """Versions, threads, BLAS and CUDA devices."""
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
    try:
        import cupy
    except ImportError:
        return "cupy not installed (pip install fastrank[gpu-cuda12] or [gpu-cuda13])"
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # no driver, no device: say why
        return f"cupy {cupy.__version__}, no usable device ({exc})"
    names = [cupy.cuda.runtime.getDeviceProperties(i)["name"].decode() for i in range(n)]
    return f"cupy {cupy.__version__}, {n} device(s): {', '.join(names)}"
