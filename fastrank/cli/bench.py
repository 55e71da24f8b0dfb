"""``fastrank bench``: fastrank against torch, JAX and numpy on this machine; the workloads
and their targets: docs/performance.md."""

from __future__ import annotations

from pathlib import Path

import click

from fastrank.cli.group import InputError, cli

WORKLOADS = ("small, large, rng, spectra, measure_every_layer, memory, scaling, sweep_file, "
             "depth_scaling, compile, distributed, tangents")


def _writable(path: str | None, option: str) -> Path | None:
    if path is None:
        return None
    p = Path(path)
    if p.is_dir():
        raise InputError(f"invalid {option} {path!r}: is a directory")
    if not p.parent.is_dir():
        raise InputError(f"invalid {option} {path!r}: folder {str(p.parent)!r} does not exist")
    return p


@cli.command()
@click.option("--quick", is_flag=True, help="Smaller sizes and fewer repeats (a few minutes).")
@click.option("--json", "json_path", metavar="PATH", help="Write every measurement as JSON.")
@click.option("--markdown", "markdown_path", metavar="PATH",
              help="Write the targets and raw-times tables as markdown (also printed).")
@click.option("--plot", "plot_path", metavar="PATH",
              help="Scaling plot (PNG); default: beside --json or --markdown, *-scaling.png.")
@click.option("--only", metavar="NAME[,NAME]", help=f"Workloads to run: {WORKLOADS}.")
@click.option("--repeats", type=int, metavar="N",
              help="Timed repeats per measurement (default: 5 or 3 full, 3 quick).")
@click.option("--threads", type=int, metavar="N",
              help="numba + BLAS + torch + XLA threads for everyone (default: all cores).")
@click.option("--gpu", is_flag=True,
              help="The GPU benchmarks instead (wide layers vs cuBLAS SGEMM, 1024 small networks).")
@click.option("--preset", type=click.Choice(["full", "quick", "smoke"]), hidden=True,
              help="Sizes preset (smoke: the test suite's).")
@click.option("--in-process", is_flag=True, hidden=True,
              help="Run tasks in this process instead of fresh workers (tests, debugging).")
@click.option("-q", "--quiet", is_flag=True, help="No progress lines on stderr.")
def bench(quick, json_path, markdown_path, plot_path, only, repeats, threads, gpu, preset,
          in_process, quiet):
    """Time fastrank against torch, JAX and numpy on the workloads of docs/performance.md.

    Prints a markdown table with one line per target (met / NOT met) and the raw times
    of every implementation; competitors that are not installed are reported as
    skipped. Every task runs in a fresh process with the same thread counts.
    """
    if gpu:
        _gpu_bench(quick, repeats, _writable(json_path, "--json"),
                   _writable(markdown_path, "--markdown"))
        return
    from fastrank.bench import suite

    if quick and preset not in (None, "quick"):
        raise InputError("--quick and --preset disagree: give one of them")
    preset = preset or ("quick" if quick else "full")
    json_file = _writable(json_path, "--json")
    md_file = _writable(markdown_path, "--markdown")
    plot_file = _writable(plot_path, "--plot")
    if plot_file is None and (json_file or md_file):
        base = json_file or md_file
        plot_file = base.with_name(base.stem + "-scaling.png")
    try:
        names = suite.parse_only(only)
        if threads is not None and not 1 <= threads <= suite.max_threads():
            raise suite.SuiteError(
                f"invalid --threads {threads}: must lie in 1..{suite.max_threads()}")
        if repeats is not None and repeats < 1:
            raise suite.SuiteError(f"invalid --repeats {repeats}: must be >= 1")
    except suite.SuiteError as exc:
        raise InputError(str(exc)) from None
    progress = None if quiet else (lambda line: click.echo(line, err=True))
    doc = suite.run_suite(preset=preset, only=names, repeats=repeats, threads=threads,
                          isolate=not in_process, json_path=json_file, markdown_path=md_file,
                          plot_path=plot_file, progress=progress)
    click.echo(doc["markdown_text"], nl=False)


def _gpu_bench(quick: bool, repeats: int | None, json_file: Path | None,
               md_file: Path | None) -> None:
    """Run bench/gpu.py on the CUDA device; no usable device is an input error."""
    import json

    from fastrank.bench import gpu

    doc = gpu.run(quick, repeats or 3)
    if doc.get("status") == "skipped":
        raise InputError(f"--gpu: {doc.get('reason', 'no usable CUDA device')}")
    text = gpu.markdown(doc)
    if json_file:
        json_file.write_text(json.dumps(doc, indent=2, default=str))
    if md_file:
        md_file.write_text(text)
    click.echo(text, nl=False)
