"""The sweep_file workload: what a user runs (a sweep into a results file, from Python and
as the command) against the same work in memory, and against the torch script a user
would write (in process and as a process of its own)."""

from __future__ import annotations

import numpy as np

from fastrank.bench import implementations
from fastrank.bench.commands import file_runs, run_command, sweep_file_command, torch_script_command
from fastrank.bench.formatting import fmt_repeats, fmt_time, shown
from fastrank.bench.grading import blocker, ratio, ratio_text, status_of, target
from fastrank.bench.implementations import SKIPPED, implementation, soft_rank, task
from fastrank.bench.timing import measure_side_by_side


class SweepFile:
    name = "sweep_file"
    title = "end to end: a sweep into a results file, in memory, as the command, and torch"
    #: The ways of doing the work, as they appear in the table.
    PATHS = {
        "memory": "in memory: fastrank.simulate_many(net, seeds, schedule)",
        "file": "to a file: fastrank.runner.run_sweep(sweep, path, overwrite=True)",
        "command": "the command: python -m fastrank sweep ... -o FILE (subprocess, wall time)",
        "torch": "torch script, in process: torch_sweep.run (bmm over seeds, BN, ReLU, "
                 "svdvals float64, np.savez)",
        "torch_script": "torch script as a process: python -m fastrank.bench.torch_sweep "
                        "(subprocess, wall time)",
    }
    #: (numerator, denominator, target or None, op): the ratios reported.
    RATIOS = (("file", "memory", 1.3, "<="), ("torch", "file", 5.0, ">="),
              ("torch_script", "command", None, None), ("command", "memory", None, None))

    @staticmethod
    def label(d) -> str:
        return f"d={d}"

    def plan(self, cfg, ctx):
        c = cfg[self.name]
        p = {k: c[k] for k in ("depth", "every", "seeds")}
        return [task(self.name, self.label(d), "sweep_file", "fastrank", dict(p, d=d),
                     c["repeats"], imports=["torch"]) for d in c["widths"]]

    @staticmethod
    def ratios(result) -> dict:
        """``a/b`` -> ratio of the medians, the median of the per-round ratios (the paths
        ran round-robin) and why it is missing, if it is."""
        timings = ((result or {}).get("timings") or {}) if status_of(result) == "ok" else {}
        skipped = (result or {}).get("skipped") or {}
        out = {}
        for a, b, goal, _ in SweepFile.RATIOS:
            ta, tb = timings.get(a), timings.get(b)
            entry = {"value": None, "paired_median": None, "target": goal, "reason": None}
            if ta and tb:
                entry["value"] = ratio(ta["median_s"], tb["median_s"])
                pairs = [x / y for x, y in zip(ta["times_s"], tb["times_s"], strict=True) if y]
                entry["paired_median"] = float(np.median(pairs)) if pairs else None
            elif status_of(result) != "ok":
                entry["reason"] = status_of(result)
            else:
                missing = a if not ta else b
                entry["reason"] = (f"skipped ({missing} not installed)"
                                   if skipped.get(missing) == SKIPPED else f"no {missing} time")
            out[f"{a}/{b}"] = entry
        return out

    WHAT = {"file/memory": "file / memory: run_sweep into a results file / simulate_many "
                           "of the same runs, median time",
            "torch/file": "torch script / fastrank run_sweep into a results file, both in "
                          "process, median time"}

    def summarize(self, cfg, results, ctx):
        c = cfg[self.name]
        targets, rows, sanity, all_ratios, commands = [], [], {}, {}, set()
        for d in c["widths"]:
            r = results.get(self.label(d))
            ok = status_of(r) == "ok"
            ratios = all_ratios[self.label(d)] = self.ratios(r)
            case = f"d=N={d}, depth {c['depth']}, {c['seeds']} seeds"
            for a, b, goal, op in self.RATIOS:
                if goal is None:
                    continue
                entry = ratios[f"{a}/{b}"]
                blocked = blocker(("fastrank", r)) or (
                    entry["reason"] if entry["value"] is None else None)
                targets.append(target(self.name, case, self.WHAT[f"{a}/{b}"], entry["value"],
                                      goal, op=op, blocked=blocked,
                                      detail={"ratios": ratios}))
            rows += self._rows(case, r)
            if ok:
                sanity[case] = self._sanity(r)
                commands.add(r.get("command"))
        notes = [
            f"BN + ReLU, float32, d = N in {c['widths']}, depth {c['depth']}, {c['seeds']} "
            f"seeds, Schedule(every={c['every']}) (log: the default 50 log-spaced layers as "
            "well); each path timed in the same process, round-robin, after one warm-up call "
            "of each, median of the repeats; numba, torch and BLAS at the suite's thread "
            "count (the subprocesses get it as NUMBA_NUM_THREADS, OMP_NUM_THREADS, "
            "OPENBLAS_NUM_THREADS, MKL_NUM_THREADS).",
            "file: the equivalent Sweep(grid={width, depth, activation: relu, norm: bn}, "
            "seeds, schedule) into a temporary directory, laying out the file, every commit "
            "and closing it included. command: `" + (" | ".join(sorted(x for x in commands
                                                                         if x))
                                                     or "python -m fastrank sweep ...")
            + "` as a subprocess, wall time including interpreter start-up and imports (what "
            "a user waits for).",
            "torch: bench/torch_sweep.py, the script a torch user would write: the seeds "
            "stacked, H as (seeds, batch, features), torch.bmm, batch statistics from "
            "torch.var_mean, normalisation and ReLU in place, no_grad, torch.linalg.svdvals "
            "in float64 at the same layers fastrank measures, np.savez at the end. fastrank "
            "computes every measure at those layers as well. torch_script: the same as a "
            "process of its own (torch's import included).",
            "Ratios of medians (paired: median over rounds of the per-round ratio): "
            + "; ".join(f"d={d}: " + ", ".join(ratio_text(k, v, 2) for k, v in
                                                all_ratios[self.label(d)].items())
                        for d in c["widths"]) + ".",
            "output: the size of the last file each path wrote; a results file's size varies "
            "from run to run with the number of (time-batched) commits.",
        ]
        for d in c["widths"]:
            r = results.get(self.label(d))
            if status_of(r) == "ok" and r.get("read_errors"):
                notes.append(f"d={d}: results files that did not read back: {r['read_errors']}")
        return {"targets": targets, "rows": rows, "sanity": sanity, "ratios": all_ratios,
                "notes": notes}

    def _rows(self, case, r) -> list[dict]:
        ok = status_of(r) == "ok"
        timings = r.get("timings", {}) if ok else {}
        memory = (timings.get("memory") or {}).get("median_s")
        rows = []
        for key, what in self.PATHS.items():
            t = timings.get(key)
            if not ok:
                median = shown(r, "")
            elif t is None:
                median = (f"skipped ({key} not installed)"
                          if (r.get("skipped") or {}).get(key) == SKIPPED else "-")
            else:
                median = fmt_time(t["median_s"])
            size = (r.get("file_bytes") or {}).get(key) if ok else None
            soft = (r.get("final_soft_rank_mean") or {}).get(key) if ok else None
            rows.append({
                "case": case,
                "path": what,
                "median": median,
                "vs in memory": (f"{t['median_s'] / memory:.2f}x" if t and memory else "-"),
                "first call": fmt_time(t["first_call_s"]) if t else "-",
                "measured layers": (r.get("measured_layers") or {}).get(key, "-") if ok else "-",
                "final soft rank": f"{soft:.3f}" if soft is not None else "-",
                "output": f"{size / 2**20:.2f} MiB" if size else "-",
                "repeats (s)": fmt_repeats(t),
            })
        return rows

    @staticmethod
    def _sanity(r) -> dict:
        means = r.get("final_soft_rank_mean") or {}
        matches = r.get("file_matches_memory") or {}
        ref = means.get("memory")
        torch_ok = all(bool(ref and 0.5 * ref <= means[k] <= 2 * ref)
                       for k in ("torch", "torch_script") if k in means)
        return {
            "final_soft_rank_mean": means,
            "consistent": bool(ref and ref > 1.5 and matches.get("file") is True
                               and matches.get("command") is True and torch_ok),
            "rule": "both results files read back complete, with the in-memory runs' "
                    "measured layers and final soft ranks (rtol 1e-5); torch's mean final "
                    "soft rank within 0.5x..2x of fastrank's (its own random weights; its "
                    "layer is checked on shared weights in the small workload); fastrank's "
                    "> 1.5 (not collapsed)",
        }


# ----------------------------------------------------------------------------------
# What is timed
# ----------------------------------------------------------------------------------


#: Thread settings handed to the `fastrank sweep` subprocess (the suite's count).
THREAD_VARS = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
               "MKL_NUM_THREADS")


@implementation("sweep_file", "fastrank")
def sweep_file_fastrank(p, repeats):
    """The same sweep four ways, side by side in this process (round-robin, one warm-up
    each): simulate_many in memory, run_sweep into a results file, the `fastrank sweep`
    command as a subprocess (wall time, interpreter start-up included), and a torch
    script (where torch is installed)."""
    import os
    import tempfile

    import numba

    import fastrank
    import fastrank.runner

    d, depth, seeds = p["d"], p["depth"], p["seeds"]
    schedule = fastrank.Schedule(every=p["every"])  # log: the default, as the command's
    net = fastrank.Network(width=d, batch=d, depth=depth, activation="relu", norm="bn")
    sweep = fastrank.Sweep(grid={"width": [d], "depth": [depth], "activation": ["relu"],
                                 "norm": ["bn"]},
                           seeds=tuple(range(seeds)), schedule=schedule)
    if sweep.networks() != [net]:
        raise RuntimeError(f"the sweep's network {sweep.networks()} is not {net}")
    threads = numba.get_num_threads()  # as the worker set it for this task
    env = dict(os.environ, **{k: str(threads) for k in THREAD_VARS})
    layers = [int(x) for x in schedule.points(depth)]  # what fastrank measures
    with tempfile.TemporaryDirectory(prefix="fastrank-bench-sweep-") as tmp:
        paths = {"file": os.path.join(tmp, "run_sweep.h5"),
                 "command": os.path.join(tmp, "command.h5"),
                 "torch": os.path.join(tmp, "torch.npz"),
                 "torch_script": os.path.join(tmp, "torch_script.npz")}
        commands = {"command": sweep_file_command(p, paths["command"]),
                    "torch_script": torch_script_command(p, layers, paths["torch_script"])}

        def process(key):
            run_command(key, commands[key], env, tmp)

        fns = {
            "memory": lambda: fastrank.simulate_many(net, range(seeds), schedule),
            "file": lambda: fastrank.runner.run_sweep(sweep, paths["file"], overwrite=True),
            "command": lambda: process("command"),
        }
        skipped = {}
        if implementations.installed("torch"):
            from fastrank.bench import torch_sweep

            fns["torch"] = lambda: torch_sweep.run(d, depth, seeds, layers, paths["torch"])
            fns["torch_script"] = lambda: process("torch_script")
        else:
            skipped["torch"] = skipped["torch_script"] = SKIPPED
        timings, last = measure_side_by_side(fns, repeats)

        trajs = last["memory"]
        for t in trajs:
            if t.failure is not None or int(t.layer[-1]) != depth:
                raise RuntimeError(f"fastrank run of seed {t.seed} did not finish: {t.failure}")
        memory_finals = [float(t.soft_rank[-1]) for t in trajs]
        measured = {"memory": int(len(trajs[0].layer))}
        finals = {"memory": memory_finals}
        matches, read_errors = {}, {}
        for key in ("file", "command"):
            try:
                got = file_runs(paths[key])
            except Exception as exc:  # reported: the timings stand on their own
                read_errors[key] = f"{type(exc).__name__}: {exc}"
                continue
            measured[key] = got["measured_layers"]
            finals[key] = got["final_soft_rank"]
            matches[key] = bool(got["status"] == ["complete"] and got["runs"] == seeds
                                and got["measured_layers"] == measured["memory"]
                                and np.allclose(got["final_soft_rank"], memory_finals,
                                                rtol=1e-5, atol=0.0))
        if "torch" in fns:
            spectra = last["torch"]
            measured["torch"] = measured["torch_script"] = int(spectra.shape[0])
            finals["torch"] = [soft_rank(spectra[-1, i]) for i in range(seeds)]
            with np.load(paths["torch_script"]) as saved:
                finals["torch_script"] = [soft_rank(s) for s in saved["spectrum"][-1]]
        file_bytes = {key: os.path.getsize(path) for key, path in paths.items()
                      if os.path.exists(path)}
    return {
        "timings": timings,
        "skipped": skipped,
        "work": {"networks": seeds, "layers": depth},
        "measured_layers": measured,
        "final_soft_rank": finals,
        "final_soft_rank_mean": {k: float(np.mean(v)) for k, v in finals.items() if v},
        "file_matches_memory": matches,
        "read_errors": read_errors,
        "file_bytes": file_bytes,
        "schedule": schedule.to_dict(),
        "command": " ".join(["python", *commands["command"][1:-2], "FILE", "--overwrite"]),
        "command_env": {k: env[k] for k in THREAD_VARS},
        "threads_used": threads,
    }
