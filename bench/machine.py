"""The machine a benchmark runs on, and the one place that fixes thread counts.

Every implementation is timed with the same number of threads: numba's pool
(``numba.set_num_threads``), every BLAS/OpenMP pool threadpoolctl can see
(``threadpool_limits``), torch's intra-op pool (``torch.set_num_threads``) and, for
XLA, which has no thread-count setting, the CPU affinity of the worker process (plus
``--xla_cpu_multi_thread_eigen=false`` for one thread). What each library actually
ended up with is read back and reported, not assumed.
"""

from __future__ import annotations

import os
import platform
import re
import sys
from importlib import metadata

from fastrank.version import __version__

#: Libraries whose versions go into every result, besides fastrank's (the package's own:
#: its distribution name differs).
VERSIONED = ("numpy", "numba", "llvmlite", "torch", "jax", "jaxlib", "threadpoolctl", "psutil",
             "matplotlib")

XLA_ONE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"


def logical_cores() -> int:
    """CPUs this process may run on (affinity-aware where the OS tells)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _cpuinfo() -> dict:
    """First processor's fields of /proc/cpuinfo (Linux), else {}."""
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read().split("\n\n")[0]
    except OSError:
        return {}
    fields = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields


def cpu_description() -> dict:
    info = _cpuinfo()
    flags = set(info.get("flags", "").split())
    simd = [f for f in ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_bf16",
                        "avx512_fp16", "amx_tile") if f in flags]
    try:
        import psutil

        physical = psutil.cpu_count(logical=False)
        memory = psutil.virtual_memory().total
    except ImportError:
        physical, memory = None, None
    return {
        "model": info.get("model name") or platform.processor() or platform.machine(),
        "vendor": info.get("vendor_id"),
        "family_model_stepping": "/".join(
            info.get(k, "?") for k in ("cpu family", "model", "stepping")) if info else None,
        "arch": platform.machine(),
        "simd": simd,
        "logical_cores": os.cpu_count(),
        "usable_cores": logical_cores(),
        "physical_cores": physical,
        "memory_bytes": memory,
        "hypervisor": "hypervisor" in flags,
    }


def versions() -> dict:
    out = {"python": sys.version.split()[0], "fastrank": __version__}
    for name in VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def blas_pools() -> list[dict]:
    """threadpoolctl's view of the loaded BLAS and OpenMP libraries (kernel included)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return [{"error": "threadpoolctl not installed"}]
    keys = ("user_api", "internal_api", "version", "architecture", "threading_layer",
            "num_threads", "prefix")
    pools = []
    for p in threadpool_info():
        entry = {k: p.get(k) for k in keys if p.get(k) is not None}
        entry["file"] = os.path.basename(p.get("filepath", ""))
        pools.append(entry)
    return pools


def describe() -> dict:
    """Machine, OS, library versions and BLAS of this process (numpy loaded)."""
    import numpy  # noqa: F401  (so that threadpoolctl sees numpy's BLAS)

    return {
        "cpu": cpu_description(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "versions": versions(),
        "blas": blas_pools(),
        "env": {k: os.environ.get(k) for k in (
            "OPENBLAS_CORETYPE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS",
            "MKL_NUM_THREADS", "NUMBA_NUM_THREADS", "NUMBA_THREADING_LAYER", "XLA_FLAGS",
        )},
    }


def short_name(description: dict | None = None) -> str:
    """``intel-xeon-2c``-style name of the machine for result files."""
    cpu = (description or {}).get("cpu") or cpu_description()
    model = cpu.get("model") or "cpu"
    model = re.sub(r"\((R|TM|tm|r)\)|\bCPU\b|\bProcessor\b|@.*$|\d+-Core|\bwith\b.*$", " ",
                   model)
    words = [w for w in re.split(r"[^A-Za-z0-9]+", model.lower()) if w][:4]
    return "-".join([*words, f"{cpu.get('usable_cores') or logical_cores()}c"])


def initial_environ() -> dict | None:
    """The environment this process started with, before any import changed os.environ
    (Linux: /proc/self/environ); None where the OS does not tell."""
    try:
        with open("/proc/self/environ", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    env = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            env[key.decode(errors="replace")] = value.decode(errors="replace")
    return env


def restore_initial_environ() -> dict:
    """Undo what imports did to os.environ, so that every competitor starts from the
    environment the process was given (fastrank restores what it sets itself; this guards
    against any library that does not). Returns the changes undone, as {name: value set
    by the import}."""
    initial = initial_environ()
    if initial is None:
        return {}
    undone = {}
    for key in set(os.environ) | set(initial):
        now, then = os.environ.get(key), initial.get(key)
        if now != then:
            undone[key] = now
            if then is None:
                del os.environ[key]
            else:
                os.environ[key] = then
    return undone


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


class BackgroundLoad:
    """How busy the machine was with other work while a task ran: the CPU time of the
    whole system (psutil) minus this process and its children, as a fraction of the
    usable cores' wall time; and the hypervisor's steal time (virtual machines)."""

    def __enter__(self) -> BackgroundLoad:
        self.result = None
        self._start = self._sample()
        return self

    def __exit__(self, *exc) -> None:
        end = self._sample()
        if self._start is None or end is None:
            return
        wall = end["wall"] - self._start["wall"]
        cores = os.cpu_count() or 1
        d = {k: end[k] - self._start[k] for k in end}
        other = d["busy"] - d["ours"]
        self.result = {
            "other_busy_fraction": round(max(other, 0.0) / (wall * cores), 3) if wall else None,
            "steal_fraction": round(d["steal"] / (wall * cores), 3) if wall else None,
        }

    @staticmethod
    def _sample():
        try:
            import resource
            import time

            import psutil
        except ImportError:
            return None
        t = psutil.cpu_times()
        busy = sum(getattr(t, k, 0.0) for k in ("user", "nice", "system", "irq", "softirq",
                                                 "guest", "guest_nice"))
        ours = 0.0
        for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
            r = resource.getrusage(who)
            ours += r.ru_utime + r.ru_stime
        return {"wall": time.perf_counter(), "busy": busy, "ours": ours,
                "steal": getattr(t, "steal", 0.0)}


class Threads:
    """Fix every thread pool of this process at ``n``; read back what took effect.

    Call :meth:`apply` after importing the library under test (threadpoolctl only sees
    loaded libraries); :meth:`restore` undoes what apply changed (in-process runs).
    """

    def __init__(self, n: int, numba: bool = True):
        self.n = int(n)
        self.numba = numba  # False: leave numba's pool unstarted (competitors' processes)
        self._limits = None
        self._numba_before = None
        self._torch_before = None

    def apply(self) -> Threads:
        if self.numba and "numba" in sys.modules:
            import numba

            from fastrank.kernels.cpu import start_threads

            start_threads()  # as fastrank starts its pool, before set_num_threads can

            self._numba_before = numba.get_num_threads()
            numba.set_num_threads(self.n)
        if "torch" in sys.modules:
            import torch

            self._torch_before = torch.get_num_threads()
            torch.set_num_threads(self.n)
        try:
            from threadpoolctl import threadpool_limits

            self._limits = threadpool_limits(limits=self.n)
        except ImportError:
            self._limits = None
        return self

    def restore(self) -> None:
        if self._limits is not None:
            self._limits.restore_original_limits()
        if self._numba_before is not None:
            import numba

            numba.set_num_threads(self._numba_before)
        if self._torch_before is not None:
            import torch

            torch.set_num_threads(self._torch_before)

    def report(self) -> dict:
        """The thread counts in effect now, per library."""
        out: dict = {"requested": self.n}
        if self.numba and "numba" in sys.modules:
            import numba

            from fastrank.kernels.cpu import start_threads

            start_threads()  # as fastrank starts its pool, before set_num_threads can

            out["numba"] = numba.get_num_threads()
            try:
                out["numba_threading_layer"] = numba.threading_layer()
            except ValueError:  # no parallel kernel has run yet
                out["numba_threading_layer"] = None
        out["OMP_WAIT_POLICY"] = os.environ.get("OMP_WAIT_POLICY")
        out["pools"] = [
            {k: p.get(k) for k in ("internal_api", "architecture", "num_threads", "file")}
            for p in blas_pools()
        ]
        if "torch" in sys.modules:
            import torch

            out["torch"] = torch.get_num_threads()
            out["torch_cpu_capability"] = _try(lambda: torch.backends.cpu.get_cpu_capability())
            out["torch_blas"] = _torch_blas(torch)
        if "jax" in sys.modules:
            out["jax"] = jax_threads(self.n)
        try:
            out["affinity"] = sorted(os.sched_getaffinity(0))
        except AttributeError:
            pass
        return out


def jax_threads(n: int) -> str:
    flags = os.environ.get("XLA_FLAGS", "")
    usable = logical_cores()
    how = "XLA default pool over all usable cores"
    if "xla_cpu_multi_thread_eigen=false" in flags:
        how = "XLA single-threaded (xla_cpu_multi_thread_eigen=false)"
    return f"{how}; {usable} usable cores (affinity); XLA_FLAGS={flags!r}"


def configure_jax_env(n: int) -> None:
    """Before jax is imported: one thread needs XLA_FLAGS (affinity does the rest)."""
    if n == 1 and "xla_cpu_multi_thread_eigen" not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + XLA_ONE_THREAD).strip()


def pin_to(n: int) -> None:
    """Restrict this (worker) process to its first ``n`` usable CPUs, so that no library
    can use more threads than the others; a no-op when n covers them all."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:
        return
    if n < len(cpus):
        os.sched_setaffinity(0, cpus[:n])


def _torch_blas(torch) -> str | None:
    try:
        config = torch.__config__.show()
    except Exception:
        return None
    found = re.findall(r"(BLAS_INFO|LAPACK_INFO)=(\w+)", config)
    mkl = _try(lambda: torch.backends.mkl.is_available())
    return ", ".join(f"{k}={v}" for k, v in found) + f", mkl available={mkl}"


def _try(fn):
    try:
        return fn()
    except Exception:  # an optional detail: its absence is not an error
        return None
