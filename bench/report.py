"""The results document as markdown (targets first, then raw times) and the scaling
plot (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path

from fastrank.bench.formatting import fmt_time

GiB = 2.0**30


def _value(t) -> str:
    v = t["value"]
    if v is None:
        return "-"
    if t["unit"] == "x":
        return f"{v:.2f}x"
    return f"{v:.3g}" if isinstance(v, float) and v != int(v) else f"{int(v)}"


def _goal(t) -> str:
    if t["op"] == "within":
        lo, hi = t["target"]
        return f"{lo:g} .. {hi:g}"
    goal = t["target"]
    unit = t["unit"]
    if unit == "":
        return f"{t['op']} {goal:g}" if t["op"] != ">=" or goal != int(goal) else f"{int(goal)}"
    return f"{t['op']} {goal:g}{unit}"


def _table(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    cols = list(dict.fromkeys(k for r in rows for k in r))
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        out.append("| " + " | ".join(str(r.get(c, "")).replace("|", "/") for c in cols) + " |")
    return out


def machine_lines(doc: dict) -> list[str]:
    m = doc["machine"]
    cpu = m["cpu"]
    blas = "; ".join(
        f"{p.get('internal_api')} {p.get('version') or ''} "
        f"({(p.get('architecture') + ' kernel, ') if p.get('architecture') else ''}"
        f"{p.get('threading_layer') or p.get('user_api')}, {p.get('file')})"
        for p in m["blas"] if p.get("user_api") == "blas") or "none seen"
    v = m["versions"]
    vers = ", ".join(f"{k} {v[k]}" for k in ("fastrank", "python", "numpy", "numba", "torch",
                                                "jax", "threadpoolctl") if v.get(k))
    mem = f", {cpu['memory_bytes'] / GiB:.0f} GiB RAM" if cpu.get("memory_bytes") else ""
    th = doc.get("threads", {})
    th_text = "; ".join(f"{k}: {', '.join(vals)}" for k, vals in th.items()
                        if k != "requested" and vals)
    waited = doc.get("waited_for_quiet_s") or 0.0
    return [
        f"- Machine `{m['short_name']}`: {cpu['model']} (family/model/stepping "
        f"{cpu.get('family_model_stepping')}, {', '.join(cpu.get('simd', []))}), "
        f"{cpu['usable_cores']} usable of {cpu['logical_cores']} logical cores"
        f"{mem}{', virtual machine' if cpu.get('hypervisor') else ''}; {m['platform']}",
        f"- BLAS (numpy, via threadpoolctl): {blas}; OPENBLAS_CORETYPE="
        f"{m['env'].get('OPENBLAS_CORETYPE') or 'unset'}",
        f"- Threads: {th.get('requested')} for every implementation. Reported by the "
        f"workers: {th_text or '-'}",
        f"- Versions: {vers}",
        f"- Preset `{doc['preset']}`, "
        f"{'a fresh process per task' if doc['isolated'] else 'in-process'}, medians of "
        f"repeats after a warm-up call; run took {fmt_time(doc['duration_s'])} "
        f"({doc['created']}).",
        f"- Other processes on the machine: {doc.get('retry_policy', '-')}; waited "
        f"{fmt_time(waited)} in all.",
    ]


#: Background CPU use (fraction of all cores, other processes plus steal) worth a warning.
BUSY = 0.10


def busy_tasks(section: dict) -> list[tuple[str, float]]:
    out = []
    for label, result in section.get("results", {}).items():
        load = result.get("background_load") or {}
        frac = (load.get("other_busy_fraction") or 0.0) + (load.get("steal_fraction") or 0.0)
        if frac >= BUSY:
            out.append((label, frac))
    return out


def markdown(doc: dict) -> str:
    lines = [f"# fastrank benchmarks: CPU, preset `{doc['preset']}`", ""]
    lines += machine_lines(doc)
    lines += ["", "## Targets", ""]
    rows = [{"workload": t["workload"], "case": t["case"], "measure": t["what"],
             "measured": _value(t), "target": _goal(t), "status": t["status"]}
            for t in doc["targets"]]
    lines += _table(rows) or ["(no targets in the selected workloads)"]
    met = sum(t["met"] is True for t in doc["targets"])
    lines += ["", f"{met} of {len(doc['targets'])} targets met."]
    lines += ["", "## Raw times", ""]
    for name, section in doc["workloads"].items():
        lines += [f"### {name}: {section['title']}", ""]
        lines += _table(section.get("rows", []))
        lines.append("")
        for key, check in (section.get("sanity") or {}).items():
            ranks = ", ".join(f"{k} {v:.2f}" for k, v in check["final_soft_rank_mean"].items())
            lines.append(f"- Sanity, {key}: mean final soft rank {ranks}: "
                         f"{'consistent' if check['consistent'] else 'INCONSISTENT'} "
                         f"({check['rule']}).")
        for note in section.get("notes", []):
            lines.append(f"- {note}")
        reran = [label for label, r in section.get("results", {}).items() if r.get("attempts")]
        if reran:
            lines.append("- Run again because other processes were busy: " + ", ".join(
                f"{label} ({len(section['results'][label]['attempts'])} attempts, the quietest "
                "kept)" for label in reran) + ".")
        busy = busy_tasks(section)
        if busy:
            lines.append("- Other processes were busy during: " + ", ".join(
                f"{label} ({frac:.0%} of the CPU time)" for label, frac in busy)
                + "; those times are likely inflated.")
        if section.get("plot"):
            lines += ["", f"![scaling]({Path(section['plot']).name})"]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def plot_scaling(doc: dict, path) -> str | None:
    """Time vs depth and per-layer time vs width (with the SGEMM floor) as a PNG."""
    r = doc["workloads"]["scaling"]["results"].get("fastrank", {})
    if r.get("status") != "ok":
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    section = doc["workloads"]["scaling"]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    depths = np.array([x["depth"] for x in r["by_depth"]], float)
    times = np.array([x["timing"]["median_s"] for x in r["by_depth"]])
    a.loglog(depths, times, "o", label="fastrank (median)")
    exp = section.get("depth_exponent")
    if exp is not None:
        c = np.exp(np.mean(np.log(times) - exp * np.log(depths)))
        a.loglog(depths, c * depths**exp, "-", label=f"fit: t ~ depth^{exp:.2f}")
    p = section["params"]
    a.set(xlabel="depth", ylabel="time (s)",
          title=f"d = N = {p['d']}, {p['seeds']} seeds, BN + ReLU")
    a.legend()
    widths = np.array([x["width"] for x in r["by_width"]], float)
    per_layer = np.array([x["per_layer_s"] for x in r["by_width"]])
    floor = np.array([x["sgemm_s"] for x in r["by_width"]])
    keep = per_layer > 0
    b.loglog(widths[keep], per_layer[keep], "o-", label="fastrank per layer")
    b.loglog(widths, floor, "s--", label="numpy SGEMM (floor)")
    b.set(xlabel="width d = N", ylabel="time per layer (s)", title="per-layer time vs width")
    b.legend()
    m = doc["machine"]
    fig.suptitle(f"fastrank scaling on {m['short_name']} ({doc['threads']['requested']} "
                 f"threads, preset {doc['preset']})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)
