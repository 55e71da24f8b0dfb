"""fastrank: rank collapse in very deep random networks, simulated with compiled
kernels and streamed to HDF5.

    >>> import fastrank
    >>> net = fastrank.Network(width=32, depth=500, activation="relu", norm="bn")
    >>> traj = fastrank.simulate(net, seed=0)          # in memory
    >>> traj.soft_rank[-1]
    >>> fastrank.sweep(fastrank.Sweep(grid={"norm": ("none", "bn")}), "r.h5")  # to a file
    >>> fastrank.open("r.h5").runs                      # the runs table

The public names load on first use (numba and the kernels only when a simulation
needs them), so ``import fastrank`` and the command line start fast.
"""

from importlib import import_module

from fastrank.version import FORMAT_VERSION, __version__

#: Public name -> (module, attribute).
_PUBLIC = {
    "Network": ("fastrank.spec", "Network"),
    "Schedule": ("fastrank.schedule", "Schedule"),
    "Sweep": ("fastrank.spec", "Sweep"),
    "SpecError": ("fastrank.errors", "SpecError"),
    "simulate": ("fastrank.propagate", "simulate"),
    "simulate_many": ("fastrank.propagate", "simulate_many"),
    "Trajectory": ("fastrank.propagate", "Trajectory"),
    "RunFailed": ("fastrank.propagate", "RunFailed"),
    "sweep": ("fastrank.runner", "run_sweep"),
    "open": ("fastrank.store", "open"),
    "Results": ("fastrank.store", "Results"),
    "weights": ("fastrank.init", "weights"),
}

__all__ = [*_PUBLIC, "FORMAT_VERSION", "__version__"]


#: Submodules reachable as attributes of the package (``fastrank.store.Writer``).
_SUBMODULES = {"backends", "codes", "distributed", "errors", "gpu", "init", "inputs", "lock",
               "measures", "options", "plot", "propagate", "reproduce", "rng", "runner", "spec",
               "store", "theory", "tuning"}


def __getattr__(name: str):
    if name in _PUBLIC:
        module, attribute = _PUBLIC[name]
        value = getattr(import_module(module), attribute)
    elif name in _SUBMODULES:
        value = import_module(f"fastrank.{name}")
    else:
        raise AttributeError(f"module 'fastrank' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return sorted(__all__)
