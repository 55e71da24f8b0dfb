"""Sweeps on Dask (fastrank.distributed): the same datasets as the local run, bit for bit;
a worker killed mid-sweep, a killed writer resumed, an unreachable scheduler; bad cluster
options as one-line errors; and no Dask at all without --workers or --scheduler."""

import json
import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

import fastrank
from fastrank import Schedule, Sweep, store
from fastrank.cli import cli
from fastrank.runner import open_writer

distributed = pytest.importorskip("distributed")
from fastrank.distributed import Cluster, plan, warm_up_networks  # noqa: E402

#: Two networks that run, two that overflow at layer 1 (recorded as failed runs).
SWEEP = Sweep(
    grid={"width": (8, 24), "depth": (300,), "activation": ("relu",), "gain": (2.0, 1e80)},
    seeds=tuple(range(4)),
    schedule=Schedule(every=1, log=None),
)
#: One thread per process everywhere: the local reference and each worker alike.
ONE_THREAD = {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
              "MKL_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def client():
    """A LocalCluster of two one-thread worker processes, shared by the module's tests."""
    with Cluster.local(2, threads=1) as cluster:
        yield cluster.client


def _datasets(path) -> dict:
    """Every dataset of a results file but the threads that computed each run (the
    provenance, which names hosts and times, is an attribute)."""
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()])
                     if isinstance(obj, h5py.Dataset)
                     and name not in store.schema.THREAD_DATASETS else None)
    return out


def _assert_same_datasets(a, b):
    da, db = _datasets(a), _datasets(b)
    assert sorted(da) == sorted(db)
    for name in da:
        x, y = np.asarray(da[name]), np.asarray(db[name])
        assert x.dtype == y.dtype and x.shape == y.shape, name
        assert x.tobytes() == y.tobytes(), f"{name} differs"  # bitwise, NaN padding included


@pytest.fixture(scope="module")
def local_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("local") / "local.h5"
    fastrank.sweep(SWEEP, path)
    return path


@pytest.mark.slow
def test_a_client_sweep_streams_pieces_and_equals_the_local_file(client, local_file, tmp_path):
    steps = []
    cluster = Cluster(client)
    with open_writer(tmp_path / "d.h5", SWEEP, backend=cluster) as writer:
        stats = cluster.fill(writer, on_start=steps.append, progress=steps.append,
                             piece_bytes=4000)  # about 40 rows a piece
    assert stats["pieces"] > 4 and stats["rows_sent_twice"] == 0
    assert steps[0] == 16 * 300 and sum(steps[1:]) == 16 * 300
    with fastrank.open(tmp_path / "d.h5") as results:
        assert {"complete", "failed"} == set(results.runs["status"])
        assert results.attrs["provenance"]["dask"]["workers"] == 2
    _assert_same_datasets(local_file, tmp_path / "d.h5")


@pytest.mark.slow
def test_fastrank_sweep_takes_a_client(client, local_file, tmp_path):
    path = fastrank.sweep(SWEEP, tmp_path / "d.h5", client=client)
    _assert_same_datasets(local_file, path)
    with fastrank.open(path) as results:  # the workers' threads, recorded per run
        assert set(results.runs["numba_threads"]) == set(results.runs["blas_threads"]) == {1}


@pytest.mark.slow
def test_a_worker_killed_mid_sweep_is_replaced_and_the_file_is_the_same(client, local_file,
                                                                        tmp_path):
    pids = client.run(os.getpid)
    killed = []

    def kill_the_workers_once(layers):
        if not killed:  # the first rows arrived: both workers are inside a task
            for pid in pids.values():
                os.kill(pid, signal.SIGKILL)
            killed.extend(pids.values())

    cluster = Cluster(client)
    with open_writer(tmp_path / "d.h5", SWEEP, backend=cluster) as writer:
        stats = cluster.fill(writer, progress=kill_the_workers_once, piece_bytes=1000)
    assert killed and stats["rows_sent_twice"] > 0  # tasks were rerun from layer 0
    assert not set(client.run(os.getpid).values()) & set(killed)
    _assert_same_datasets(local_file, tmp_path / "d.h5")


# -- the command line -----------------------------------------------------------------

#: The sweep of docs/distributed.md's --workers example: 2 widths x 2 norms x 2
#: activations (the default linear,relu) x 16 seeds = 128 runs.
CLI_GRID = ["--width", "32,64", "--depth", "1000", "--norm", "none,bn", "--seed", "0-15", "-q"]


@pytest.mark.slow
def test_workers_2_gives_every_dataset_of_the_local_sweep(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    local = runner.invoke(cli, ["sweep", *CLI_GRID, "-o", "local.h5"])
    assert local.exit_code == 0, local.output
    dist = runner.invoke(cli, ["sweep", *CLI_GRID, "--workers", "2", "-o", "d.h5"])
    assert dist.exit_code == 0, dist.output
    with fastrank.open("d.h5") as results:
        assert list(results.runs["status"]) == ["complete"] * 128
    _assert_same_datasets("local.h5", "d.h5")


@pytest.mark.slow
def test_a_killed_writer_resumes_with_the_same_workers(tmp_path):
    # deep enough that runs complete over ~1 s, not all in one poll: at depth 400 every
    # task of the sweep finished within ~0.1 s of the first, and the kill could miss it
    args = ["--width", "8", "--depth", "5000", "--activation", "relu", "--norm", "bn",
            "--seed", "0-31", "--every", "1", "--log", "0", "-q"]
    env = {**os.environ, **ONE_THREAD}
    sweep = [sys.executable, "-m", "fastrank", "sweep", *args, "-o", "d.h5"]
    proc = subprocess.Popen([*sweep, "--workers", "2"], cwd=tmp_path, env=env,
                            start_new_session=True, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            rows = _rows(tmp_path / "d.h5")
            if rows is not None and 0 < (rows == 5001).sum() < 32:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read()
        proc.send_signal(signal.SIGKILL)  # the writer only; its workers follow it
        proc.wait()
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # anything of this session still alive
    assert (_rows(tmp_path / "d.h5") < 5001).any()
    resumed = subprocess.run([*sweep, "--workers", "2", "--resume"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    local = CliRunner().invoke(cli, ["sweep", *args, "-o", str(tmp_path / "local.h5")])
    assert local.exit_code == 0, local.output
    _assert_same_datasets(tmp_path / "local.h5", tmp_path / "d.h5")


@pytest.mark.parametrize("how", ["--scheduler", "--scheduler-file"])
@pytest.mark.slow
def test_a_running_cluster_runs_the_sweep_and_is_left_up(client, tmp_path, monkeypatch, how):
    monkeypatch.chdir(tmp_path)
    where = client.scheduler.address
    if how == "--scheduler-file":
        where = tmp_path / "scheduler.json"  # what `dask scheduler --scheduler-file` writes
        where.write_text(json.dumps({"address": client.scheduler.address}))
    result = CliRunner().invoke(cli, ["sweep", "--width", "8", "--depth", "50", "--seed", "0-3",
                                      "--threads-per-worker", "1", "-q", how, str(where),
                                      "-o", "d.h5"])
    assert result.exit_code == 0, result.output
    with fastrank.open("d.h5") as results:
        assert list(results.runs["status"]) == ["complete"] * 16
    assert client.submit(abs, -1, pure=False).result() == 1  # the cluster is still there


def _rows(path):
    try:
        with fastrank.open(path) as results:
            return np.asarray(results.runs["rows"])
    except (FileNotFoundError, OSError, ValueError):
        return None


@pytest.mark.slow
def test_an_unreachable_scheduler_exits_2_with_one_line_and_writes_nothing(tmp_path):
    env = {**os.environ, "DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "1s"}
    proc = subprocess.run([sys.executable, "-m", "fastrank", "sweep", "--width", "8",
                           "--depth", "10", "--scheduler", "tcp://127.0.0.1:1", "-o", "d.h5"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "tcp://127.0.0.1:1" in lines[0], proc.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args, words", [
    (["--workers", "0"], "invalid --workers 0"),
    (["--workers", "2", "--threads-per-worker", "0"], "invalid --threads-per-worker 0"),
    (["--workers", "2", "--scheduler", "tcp://127.0.0.1:1"], "exclude each other"),
    (["--scheduler", "tcp://a:1", "--scheduler-file", "s.json"], "exclude each other"),
    (["--threads-per-worker", "2"], "--threads-per-worker needs --workers"),
    (["--gpu", "--workers", "2"], "LocalCUDACluster"),
    (["--workers", "2", "--device", "1"], "--device needs --gpu"),
    (["--scheduler-file", "missing.json"], "no scheduler file missing.json"),
])
def test_bad_cluster_options_exit_2_with_one_line(tmp_path, monkeypatch, args, words):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["sweep", "--width", "8", "--depth", "10", *args,
                                      "-o", "d.h5"])
    assert result.exit_code == 2
    assert words in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "d.h5").exists()


@pytest.mark.slow
def test_without_workers_or_scheduler_dask_is_never_imported(tmp_path):
    code = ("import sys; from fastrank.cli import cli; "
            "code = cli.main(['sweep', '--width', '8', '--depth', '10', '-q', '-o', 'r.h5'], "
            "standalone_mode=False); "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed') "
            "or m == 'fastrank.distributed'); print(code in (0, None), bad)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "[]"], proc.stdout


# -- planning ---------------------------------------------------------------------------


def test_tasks_split_each_networks_seeds_by_its_share_of_the_runs():
    sweep = Sweep(grid={"width": (8, 16)}, seeds=tuple(range(6)))
    runs = sweep.runs()
    tasks = plan(runs, list(range(12)), n_tasks=4)
    assert [len(idx) for _, idx in tasks] == [3, 3, 3, 3]
    assert all(runs[i][0] == net for net, idx in tasks for i in idx)
    assert sorted(i for _, idx in tasks for i in idx) == list(range(12))
    # a network with only a few runs left gets one task; min_seeds keeps tasks whole
    assert [len(idx) for _, idx in plan(runs, [0, 1, 6, 7, 8, 9, 10, 11], 8)] == [1, 1] + [1] * 6
    assert [len(idx) for _, idx in plan(runs, list(range(12)), 12, min_seeds=4)] == [4, 2, 4, 2]


def test_warm_up_runs_the_narrowest_network_of_each_kind_at_depth_2():
    sweep = Sweep(grid={"width": (512, 8, 16, 256, 1024, 600), "dtype": ("float32", "float64")})
    nets = warm_up_networks(sweep.networks())
    assert sorted((n.width, n.dtype, n.depth) for n in nets) == [
        (8, "float32", 2), (8, "float64", 2), (256, "float32", 2), (256, "float64", 2),
        (600, "float32", 2), (600, "float64", 2)]
