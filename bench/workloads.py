"""The workloads of the CPU benchmark, in the order of a run, with the sizes and repeats
of each per preset.

Every workload is a class in a module of its own (``fastrank.bench.stack`` holds small
and large, which share their code), beside the functions it times. Its ``plan`` returns
tasks (:func:`fastrank.bench.implementations.task`, run by :mod:`fastrank.bench.suite`
in fresh worker processes); its ``summarize`` gets their results by label and returns a
section of the JSON: notes, raw results, targets (:mod:`fastrank.bench.grading`) and
table rows.
"""

from __future__ import annotations

from fastrank.bench.depth_scaling import DepthScaling
from fastrank.bench.distributed import Distributed
from fastrank.bench.measure_every_layer import EveryLayer
from fastrank.bench.memory import Memory
from fastrank.bench.rng import Rng
from fastrank.bench.scaling import Scaling
from fastrank.bench.spectra import Spectra
from fastrank.bench.stack import Large, Small
from fastrank.bench.startup import Compile
from fastrank.bench.sweep_file import SweepFile
from fastrank.bench.tangents import Tangents

#: Sizes and repeats of every workload: ``full`` is the reference run, ``quick`` fits in
#: a few minutes on 2 cores, ``smoke`` is for the test suite (seconds, meaningless times).
PRESETS = {
    "full": {
        "small": {"widths": [32, 64], "depth": 2000, "every": 100, "seeds": 8, "repeats": 5},
        "large": {"d": 1024, "depth": 100, "every": 10, "seeds": 1, "repeats": 3,
                  "sgemm_repeats": 15},
        "rng": {"n": 2**24, "repeats": 7},
        "spectra": {"d": 1024, "collapse_depth": 200, "rank": 10, "repeats": 5},
        "measure_every_layer": {"d": 1024, "depth": 100, "repeats": 3},
        "memory": {"d": 256, "depths": [100, 10000]},
        "scaling": {"d": 64, "depths": [250, 500, 1000, 2000], "every": 100, "seeds": 8,
                    "widths": [32, 64, 128, 256, 512, 1024, 2048], "work": 2 * 10**8,
                    "min_k": 10, "max_k": 1000, "repeats": 5},
        "sweep_file": {"widths": [32, 64], "depth": 2000, "every": 10, "seeds": 8,
                       "repeats": 9},
        "depth_scaling": {"d": 32, "depths": [1000, 50000], "base_depth": 10, "every": 10,
                          "seeds": 8, "repeats": 5},
        "compile": {"enabled": True, "repeats": 5},
        "distributed": {"d": 64, "depth": 2000, "every": 10, "seeds": 64, "repeats": 3,
                        "noop_tasks": 400},
        "tangents": {"cases": [{"d": 64, "depth": 2000, "seeds": 8},
                               {"d": 1024, "depth": 10, "seeds": 1}], "repeats": 3},
    },
    "quick": {
        "small": {"widths": [32, 64], "depth": 1000, "every": 100, "seeds": 4, "repeats": 3},
        "large": {"d": 1024, "depth": 30, "every": 10, "seeds": 1, "repeats": 3,
                  "sgemm_repeats": 9},
        "rng": {"n": 2**22, "repeats": 5},
        "spectra": {"d": 1024, "collapse_depth": 200, "rank": 10, "repeats": 3},
        "measure_every_layer": {"d": 1024, "depth": 20, "repeats": 3},
        "memory": {"d": 256, "depths": [100, 3000]},
        "scaling": {"d": 64, "depths": [250, 500, 1000], "every": 100, "seeds": 2,
                    "widths": [32, 64, 128, 256, 512], "work": 5 * 10**7,
                    "min_k": 5, "max_k": 400, "repeats": 3},
        "sweep_file": {"widths": [32, 64], "depth": 500, "every": 10, "seeds": 8,
                       "repeats": 3},
        "depth_scaling": {"d": 32, "depths": [1000, 10000], "base_depth": 10, "every": 10,
                          "seeds": 8, "repeats": 3},
        "compile": {"enabled": True, "repeats": 3},
        "distributed": {"d": 64, "depth": 500, "every": 10, "seeds": 32, "repeats": 2,
                        "noop_tasks": 200},
        "tangents": {"cases": [{"d": 64, "depth": 1000, "seeds": 8},
                               {"d": 1024, "depth": 4, "seeds": 1}], "repeats": 3},
    },
    "smoke": {
        "small": {"widths": [8, 16], "depth": 40, "every": 10, "seeds": 2, "repeats": 1},
        "large": {"d": 48, "depth": 10, "every": 5, "seeds": 1, "repeats": 1,
                  "sgemm_repeats": 3},
        "rng": {"n": 2**14, "repeats": 1},
        "spectra": {"d": 48, "collapse_depth": 20, "rank": 10, "repeats": 1},
        "measure_every_layer": {"d": 16, "depth": 5, "repeats": 1},
        "memory": {"d": 16, "depths": [10, 50]},
        "scaling": {"d": 8, "depths": [20, 40], "every": 10, "seeds": 1, "widths": [8, 16],
                    "work": 10**4, "min_k": 2, "max_k": 4, "repeats": 1},
        "sweep_file": {"widths": [32], "depth": 20, "every": 10, "seeds": 2, "repeats": 1},
        "depth_scaling": {"d": 32, "depths": [100, 400], "base_depth": 10, "every": 10,
                          "seeds": 8, "repeats": 1},
        "compile": {"enabled": False},
        "distributed": {"enabled": False},  # starts worker processes: not in the test suite's run
        "tangents": {"cases": [{"d": 8, "depth": 20, "seeds": 2}], "repeats": 1},
    },
}

#: Order of the workloads in a run and in the report.
NAMES = ("small", "large", "rng", "spectra", "measure_every_layer", "memory", "scaling",
         "sweep_file", "depth_scaling", "compile", "distributed", "tangents")


def config(preset: str, repeats: int | None = None) -> dict:
    """The preset's parameters, with ``repeats`` (if given) replacing every workload's."""
    cfg = {name: dict(values) for name, values in PRESETS[preset].items()}
    if repeats is not None:
        for values in cfg.values():
            if "repeats" in values:
                values["repeats"] = repeats
    return cfg


WORKLOADS = {w.name: w for w in (Small(), Large(), Rng(), Spectra(), EveryLayer(), Memory(),
                                 Scaling(), SweepFile(), DepthScaling(), Compile(),
                                 Distributed(), Tangents())}
assert tuple(WORKLOADS) == NAMES
