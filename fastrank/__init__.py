"""fastrank: rank collapse in very deep random networks, simulated with compiled
kernels and streamed to HDF5.

    >>> import fastrank
    >>> net = fastrank.Network(width=32, depth=500, activation="relu", norm="bn")
    >>> traj = fastrank.simulate(net, seed=0)          # in memory
    >>> traj.soft_rank[-1]
    >>> fastrank.sweep(fastrank.Sweep(grid={"norm": ("none", "bn")}), "r.h5")  # to a file
    >>> fastrank.open("r.h5").runs                      # the runs table
"""

from fastrank.init import weights
from fastrank.propagate import RunFailed, Trajectory, simulate, simulate_many
from fastrank.runner import run_sweep as sweep
from fastrank.spec import Network, Schedule, SpecError, Sweep
from fastrank.store import Results, open
from fastrank.version import FORMAT_VERSION, __version__

__all__ = [
    "Network",
    "Schedule",
    "Sweep",
    "SpecError",
    "simulate",
    "simulate_many",
    "sweep",
    "open",
    "weights",
    "Results",
    "Trajectory",
    "RunFailed",
    "FORMAT_VERSION",
    "__version__",
]
