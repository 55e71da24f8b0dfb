"""What the end-to-end workloads share: the commands a user types for a sweep (``fastrank
sweep`` and the torch script as a process), running a command to its end, and reading
back the results file a sweep wrote."""

from __future__ import annotations

import sys

import numpy as np


def sweep_file_command(p, path) -> list[str]:
    """``python -m fastrank sweep ...`` for the sweep_file case, writing ``path``."""
    seeds = f"0-{p['seeds'] - 1}" if p["seeds"] > 1 else "0"
    return [sys.executable, "-m", "fastrank", "sweep", "--width", str(p["d"]),
            "--depth", str(p["depth"]), "--activation", "relu", "--norm", "bn",
            "--seed", seeds, "--every", str(p["every"]), "-q", "-o", str(path), "--overwrite"]


def torch_script_command(p, layers, path) -> list[str]:
    """``python -m fastrank.bench.torch_sweep ...``: the torch script as a whole process."""
    return [sys.executable, "-m", "fastrank.bench.torch_sweep", "--d", str(p["d"]),
            "--depth", str(p["depth"]), "--seeds", str(p["seeds"]),
            "--layers", ",".join(str(int(x)) for x in layers), "-o", str(path)]


def run_command(name: str, command: list[str], env: dict, cwd) -> None:
    """Run ``command`` to its end; a non-zero exit raises RuntimeError naming ``name``
    with the last lines of its output."""
    import subprocess

    proc = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-4:]
        raise RuntimeError(f"{name} exited with status {proc.returncode}: " + " | ".join(tail))


def file_runs(path) -> dict:
    """What a results file holds, read back with fastrank.open (outside the timing)."""
    import fastrank

    with fastrank.open(path) as results:
        runs = list(results)
        soft = [np.asarray(r.measure("soft_rank"), np.float64) for r in runs]
        return {
            "status": sorted({r.status for r in runs}),
            "runs": len(runs),
            "measured_layers": int(len(runs[0].layer)) if runs else 0,
            "last_layer": int(runs[0].layer[-1]) if runs else None,
            "soft_rank": soft,
            "final_soft_rank": [float(s[-1]) for s in soft],
        }
