"""The benchmark suite end to end at tiny sizes (the `smoke` preset, one repeat, tasks
in this process except the memory ones): valid JSON and markdown, every target marked,
competitors that are missing reported as skipped. The times themselves mean nothing."""

import importlib.util
import json
import math

import pytest
from click.testing import CliRunner

from fastrank.bench import implementations, stack, startup, suite
from fastrank.bench.implementations import SKIPPED
from fastrank.cli import cli

MARKS = {"met", "NOT met", "not available yet"}


def _strict_json(text):
    def reject(name):
        raise ValueError(f"not valid JSON: {name}")

    return json.loads(text, parse_constant=reject)


@pytest.mark.slow
def test_bench_runs_end_to_end_and_marks_every_target(tmp_path, monkeypatch):
    real = implementations.installed
    monkeypatch.setattr(implementations, "installed", lambda lib: lib != "jax" and real(lib))
    out_json, out_md = tmp_path / "r.json", tmp_path / "r.md"
    result = CliRunner().invoke(cli, ["bench", "--preset", "smoke", "--in-process", "-q",
                                      "--repeats", "1", "--json", str(out_json),
                                      "--markdown", str(out_md)])
    assert result.exit_code == 0, result.output
    doc = _strict_json(out_json.read_text())
    assert list(doc["workloads"]) == list(suite.workloads.NAMES)
    assert doc["machine"]["cpu"]["logical_cores"] >= 1 and doc["threads"]["requested"] >= 1
    assert doc["machine"]["versions"]["numpy"]

    targets = doc["targets"]
    assert {t["workload"] for t in targets} >= {"small", "large", "rng", "spectra",
                                                "measure_every_layer", "memory", "scaling"}
    for t in targets:
        skipped = t["status"].startswith(("skipped (", "not graded (other processes"))
        assert t["status"] in MARKS or skipped, t
        assert (t["met"] is None) == (t["status"] not in ("met", "NOT met")), t
        if "jax" in t["what"].split(" / ")[0]:
            assert t["status"] == "skipped (jax not installed)"
        if t["workload"] != "measure_every_layer" and not skipped:  # fastrank itself ran
            assert t["status"] in ("met", "NOT met"), t
    jax_rows = [r for r in doc["workloads"]["small"]["rows"] if r["implementation"] == "jax"]
    assert jax_rows and all(r["median total"] == "skipped (not installed)" for r in jax_rows)

    # every implementation computes the same kind of thing: BN keeps the rank up
    for check in doc["workloads"]["small"]["sanity"].values():
        assert check["consistent"], check
        assert set(check["final_soft_rank_mean"]) >= {"fastrank", "numpy"}
    timing = doc["workloads"]["small"]["results"]["d=8"]["impls"]["fastrank"]["timing"]
    assert len(timing["times_s"]) == 1 and timing["median_s"] > 0
    assert timing["first_call_s"] is not None
    assert doc["workloads"]["memory"]["results"]["depth=50"]["peak_rss_bytes"] > 0

    md = out_md.read_text()
    assert md == result.stdout  # the table printed is the one written
    table = [line for line in md.split("## Raw times")[0].splitlines()
             if line.startswith("| ") and not line.startswith("| workload")]
    assert len(table) == len(targets)
    assert all(line.rstrip(" |").rsplit("| ", 1)[-1].strip() in MARKS
               or "skipped (" in line or "not graded (other processes" in line
               for line in table)
    assert (tmp_path / "r-scaling.png").stat().st_size > 0


def test_the_layer_check_fails_a_competitor_that_leaves_out_a_step():
    """The sanity check compares each implementation's layer on shared weights: one
    without its ReLU, or with an unbiased variance, fails; the real ones pass."""
    import numpy as np

    def without_relu(h, w):
        z = w @ h
        return (z - z.mean(1, keepdims=True)) / np.sqrt(z.var(1, keepdims=True) + 1e-5)

    def unbiased(h, w):
        z = w @ h
        z = (z - z.mean(1, keepdims=True)) / np.sqrt(z.var(1, ddof=1, keepdims=True) + 1e-5)
        return np.maximum(z, 0)

    layers = {k: stack.STACKS[k][1] for k in ("fastrank", "numpy")}
    check = stack.layer_check({**layers, "no relu": without_relu, "ddof=1": unbiased})
    assert check["fastrank"]["ok"] and check["numpy"]["ok"], check
    assert not check["no relu"]["ok"] and not check["ddof=1"]["ok"], check
    assert check["fastrank"]["max_relative_error"] < 1e-5


def test_bench_jax_competitor_computes_the_same_network():
    pytest.importorskip("jax")
    doc = suite.run_suite(preset="smoke", only="small", isolate=False)
    small = doc["workloads"]["small"]
    for d in (8, 16):
        assert small["results"][f"d={d}"]["impls"]["jax"]["status"] == "ok"
        assert small["sanity"][f"d={d}"]["consistent"], small["sanity"]


@pytest.mark.parametrize("hide_torch", [False, True], ids=["torch-as-installed", "no-torch"])
@pytest.mark.slow
def test_bench_sweep_file_case_alone_at_toy_size(tmp_path, monkeypatch, hide_torch):
    """--only sweep_file at the smoke size (d = 32, depth 20, 2 seeds, one repeat): the
    document's fields, both results files equal to the in-memory runs, finite ratios."""
    real = implementations.installed
    if hide_torch:
        monkeypatch.setattr(implementations, "installed", lambda lib: lib != "torch" and real(lib))
    with_torch = implementations.installed("torch")
    out_json = tmp_path / "r.json"
    doc = suite.run_suite(preset="smoke", only="sweep_file", isolate=False, repeats=1,
                          json_path=out_json)
    assert _strict_json(out_json.read_text())["workloads"].keys() == {"sweep_file"}
    assert doc["config"] == {"sweep_file": {"widths": [32], "depth": 20, "every": 10,
                                            "seeds": 2, "repeats": 1}}
    section = doc["workloads"]["sweep_file"]
    r = section["results"]["d=32"]
    assert r["status"] == "ok", r
    torch_paths = {"torch", "torch_script"}
    paths = {"memory", "file", "command"} | (torch_paths if with_torch else set())
    assert set(r["timings"]) == paths
    for timing in r["timings"].values():
        assert len(timing["times_s"]) == 1 and timing["median_s"] > 0
        assert timing["first_call_s"] is not None and timing["first_call_s"] > 0
    assert r["skipped"] == ({} if with_torch else dict.fromkeys(torch_paths, SKIPPED))
    assert r["work"] == {"networks": 2, "layers": 20}
    assert not r["read_errors"], r["read_errors"]
    assert r["file_matches_memory"] == {"file": True, "command": True}
    layers = r["measured_layers"]
    assert layers["file"] == layers["command"] == layers["memory"] == 21  # 0..20 (log 50)
    assert r["file_bytes"]["file"] > 0 and r["file_bytes"]["command"] > 0
    assert r["command"] == ("python -m fastrank sweep --width 32 --depth 20 --activation relu "
                            "--norm bn --seed 0-1 --every 10 -q -o FILE --overwrite")
    assert r["command_env"]["NUMBA_NUM_THREADS"] == str(doc["threads"]["requested"])
    if with_torch:  # the same layers as fastrank's, in process and as a process
        assert layers["torch"] == layers["torch_script"] == 21
        assert r["file_bytes"]["torch"] > 0 and r["file_bytes"]["torch_script"] > 0

    by_what = {t["what"].split(":")[0]: t for t in doc["targets"]}
    assert list(by_what) == ["file / memory", "torch script / fastrank run_sweep into a "
                             "results file, both in process, median time"]
    t = by_what["file / memory"]
    assert (t["workload"], t["op"], t["target"], t["unit"]) == ("sweep_file", "<=", 1.3, "x")
    graded = t["status"] in ("met", "NOT met") or t["status"].startswith("not graded (other")
    assert graded and math.isfinite(t["value"]) and t["value"] > 0
    ratios = section["ratios"]["d=32"]
    assert list(ratios) == ["file/memory", "torch/file", "torch_script/command", "command/memory"]
    assert ratios["file/memory"]["value"] == t["value"]
    assert t["detail"]["ratios"] == ratios
    live = ["file/memory", "command/memory"] + (
        ["torch/file", "torch_script/command"] if with_torch else [])
    for key in live:
        assert math.isfinite(ratios[key]["value"]) and ratios[key]["value"] > 0, key
        assert math.isfinite(ratios[key]["paired_median"]) and ratios[key]["reason"] is None
    if not with_torch:
        assert ratios["torch/file"]["value"] is None
        assert ratios["torch/file"]["reason"] == "skipped (torch not installed)"
    (check,) = section["sanity"].values()
    assert check["consistent"], check

    md = doc["markdown_text"]
    assert "| sweep_file | d=N=32, depth 20, 2 seeds |" in md and "<= 1.3x" in md
    rows = {row["path"].split(":")[0]: row for row in section["rows"]}
    assert list(rows) == ["in memory", "to a file", "the command", "torch script, in process",
                          "torch script as a process"]
    assert rows["in memory"]["vs in memory"] == "1.00x"
    assert (rows["torch script, in process"]["median"] == "skipped (torch not installed)") != (
        with_torch)


@pytest.mark.parametrize("args, words", [
    pytest.param(["--gpu"], ["--gpu:"], marks=pytest.mark.skipif(
        importlib.util.find_spec("cupy") is not None, reason="CuPy installed: --gpu may run")),
    (["--only", "small,nope"], ["nope", "small", "spectra"]),
    (["--threads", "0"], ["threads"]),
    (["--repeats", "0"], ["repeats"]),
    (["--json", "/nonexistent-dir/r.json"], ["--json", "does not exist"]),
])
def test_bench_input_errors_exit_2_with_one_line(args, words):
    result = CliRunner().invoke(cli, ["bench", *args])
    assert result.exit_code == 2
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1 and all(w in message for w in words), message


@pytest.mark.slow
def test_bench_depth_scaling_case_alone_at_toy_size(tmp_path):
    """--only depth_scaling at the smoke size (d = 32, 8 seeds, depths 100 and 400 and the
    depth-10 fixed-cost reference, one repeat): the document's fields, complete results
    files whose rows grow with depth, a finite positive ratio (no timing assertion)."""
    out_json = tmp_path / "r.json"
    doc = suite.run_suite(preset="smoke", only="depth_scaling", isolate=False, repeats=1,
                          json_path=out_json)
    assert _strict_json(out_json.read_text())["workloads"].keys() == {"depth_scaling"}
    assert doc["config"] == {"depth_scaling": {"d": 32, "depths": [100, 400], "base_depth": 10,
                                               "every": 10, "seeds": 8, "repeats": 1}}
    section = doc["workloads"]["depth_scaling"]
    assert list(section["results"]) == ["fastrank", "peak RSS, depth=100",
                                        "peak RSS, depth=400"]
    r = section["results"]["fastrank"]
    assert r["status"] == "ok", r
    labels = ["depth=10", "depth=100", "depth=400"]
    assert list(r["timings"]) == labels and r["depths"] == [10, 100, 400]
    for timing in r["timings"].values():
        assert len(timing["times_s"]) == 1 and timing["median_s"] > 0
        assert timing["first_call_s"] is not None and timing["first_call_s"] > 0
    for label, depth in zip(labels, (10, 100, 400), strict=True):
        assert r["per_layer_s"][label] == r["timings"][label]["median_s"] / depth
    assert r["work"] == {"networks": 8, "layers": dict(zip(labels, (10, 100, 400), strict=True))}
    assert r["schedule"] == {"every": 10, "log": 0, "layers": [], "cheap_every": None}
    assert not r["read_errors"], r["read_errors"]
    # log=0: rows at 0, 10, .. depth only, so the measured rows grow with the depth
    assert r["expected_rows"] == {"depth=10": 2, "depth=100": 11, "depth=400": 41}
    for label, rows in r["expected_rows"].items():
        f = r["files"][label]
        assert (f["status"], f["runs"], f["measured_layers"]) == (["complete"], 8, rows), f
        assert f["last_layer"] == int(label.split("=")[1]) and f["bytes"] > 0
    assert r["complete"] == dict.fromkeys(labels, True)
    assert r["prefix_matches"] == {"depth=100": True, "depth=400": True}
    for label in ("depth=100", "depth=400"):
        m = section["results"][f"peak RSS, {label}"]
        assert m["status"] == "ok", m
        assert m["depth"] == int(label.split("=")[1]) and m["peak_rss_bytes"] > 0
    assert math.isfinite(section["peak_rss_ratio"]) and section["peak_rss_ratio"] > 0

    (t,) = doc["targets"]
    assert (t["workload"], t["op"], t["target"], t["unit"]) == ("depth_scaling", "<=", 1.1, "x")
    assert t["case"] == "d=N=32, 8 seeds, depth 100 and 400"
    assert t["what"].startswith("time per layer at depth 400 / at depth 100")
    graded = t["status"] in ("met", "NOT met") or t["status"].startswith("not graded (other")
    assert graded and math.isfinite(t["value"]) and t["value"] > 0
    ratios = section["ratios"]
    assert list(ratios) == ["deep/shallow", "deep/shallow net of fixed cost"]
    main = ratios["deep/shallow"]
    assert main["value"] == t["value"] and main["reason"] is None
    assert math.isclose(main["value"], r["per_layer_s"]["depth=400"]
                        / r["per_layer_s"]["depth=100"])
    assert math.isfinite(main["paired_median"]) and main["paired_median"] > 0
    assert t["detail"]["ratios"] == ratios
    assert t["detail"]["peak_rss_ratio"] == section["peak_rss_ratio"]
    net = ratios["deep/shallow net of fixed cost"]
    assert set(net["per_layer_s"]) == {"depth=100", "depth=400"}
    assert math.isfinite(net["fixed_s"])
    assert net["value"] is None or math.isfinite(net["value"])  # noise may make it undefined
    (check,) = section["sanity"].values()
    assert check["consistent"], check
    assert set(check["final_soft_rank_mean"]) == set(labels)

    md = doc["markdown_text"]
    assert "| depth_scaling | d=N=32, 8 seeds, depth 100 and 400 |" in md and "<= 1.1x" in md
    rows = section["rows"]
    assert [row["depth"] for row in rows] == ["100", "400", "10 (fixed-cost reference)"]
    assert [row["measured rows per run"] for row in rows] == [11, 41, 2]
    assert rows[0]["per layer vs depth 100"] == "1.000x"
    assert all(row["peak RSS (fresh process)"].endswith(" MiB") for row in rows[:2])


def test_targets_of_a_busy_workload_are_not_graded():
    from fastrank.bench import suite

    def section(busy):
        return {"results": {"t": {"background_load": {"other_busy_fraction": busy}}},
                "targets": [{"met": False, "status": "NOT met"},
                            {"met": None, "status": "skipped (torch not installed)"}]}

    loaded, quiet = section(0.3), section(0.02)
    suite._ungraded_when_busy(loaded)
    suite._ungraded_when_busy(quiet)
    assert loaded["targets"][0] == {"met": None,
                                    "status": "not graded (other processes used 30% of the CPUs)"}
    assert loaded["targets"][1]["status"] == "skipped (torch not installed)"
    assert quiet["targets"][0] == {"met": False, "status": "NOT met"}


@pytest.mark.slow
def test_start_up_commands_are_timed_and_graded_against_their_limits():
    from fastrank.bench.startup import Compile

    result = startup.startup_fastrank({}, 1)
    commands = result["commands"]
    assert set(commands) == set(startup.STARTUP_COMMANDS)
    for entry in commands.values():
        assert entry["median_wall_s"] > 0 and entry["median_cpu_s"] > 0
    assert commands["shell completion"]["command"].startswith("_FASTRANK_COMPLETE=")

    targets = Compile()._startup_targets({"status": "ok", **result})
    assert [t["unit"] for t in targets] == ["s"] * 4
    for t, (name, key, limit) in zip(targets, (("--version", "median_wall_s", 0.3),
                                              ("--help", "median_wall_s", 0.3),
                                              ("shell completion", "median_wall_s", 0.3),
                                              ("trivial sweep", "median_cpu_s", 1.0)), strict=True):
        assert t["value"] == commands[name][key] and t["target"] == limit
        assert t["met"] == (commands[name][key] <= limit)
    missing = Compile()._startup_targets({"status": "timeout"})
    assert all(t["met"] is None and t["status"] == "timeout" for t in missing)


def test_the_help_of_only_names_every_workload():
    from fastrank.bench import workloads
    from fastrank.cli.bench import WORKLOADS

    assert WORKLOADS.split(", ") == list(workloads.NAMES)
