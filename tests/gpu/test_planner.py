"""The GPU memory plan, on the host stand-in: batches planned from the device's free
memory (fastrank.gpu.plan.batch_bytes, plan_batch) and the user's cap, the command
line's one-line refusals before any file is touched, and a device that runs out of
memory mid-sweep: one line, the committed rows kept, --resume finishing the sweep with
the numbers of an uninterrupted one."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

import fastrank
from fastrank import backends
from fastrank.cli import cli
from fastrank.gpu import GPUBackend
from fastrank.gpu.plan import batch_bytes, plan_batch
from fastrank.runner import run_sweep
from fastrank.spec import Network, Schedule, Sweep

NETWORKS = [
    Network(width=16, depth=6, activation="relu", norm="bn"),
    Network(width=(24, 8, 8, 24), depth=4, batch=12),
    Network(width=16, depth=4, init="orthogonal", dtype="float64"),
    Network(width=8, depth=4, batch=40, norm="ln"),
]
ARGS = ["sweep", "--gpu", "--width", "8", "--depth", "12", "--activation", "relu",
        "--norm", "none,bn", "--seed", "0-3", "--every", "3", "--commit-every", "0", "-q"]


@pytest.fixture(scope="module")
def stand_in():
    """A factory of stand-in devices (the host build of the kernels, made once)."""
    from fastrank.gpu.program import CompileError
    from fastrank.gpu.testing import HostDevice, HostKernels

    try:
        HostKernels()
    except CompileError as exc:
        pytest.skip(f"no host build of the CUDA kernels: {exc}")
    return lambda **options: HostDevice(block=32, eigen_block=32, graphs=True, **options)


@pytest.fixture
def gpu_cli(stand_in, monkeypatch, tmp_path):
    """Runs ``fastrank`` in this process with --gpu on a stand-in device of the given
    options; returns (exit code, stderr lines)."""
    monkeypatch.chdir(tmp_path)

    def run(args, **device_options):
        def on_stand_in(name, device=0, **options):
            assert name == "gpu" and device == 0
            return GPUBackend(dev=stand_in(**device_options), **options)

        monkeypatch.setattr(backends, "get_backend", on_stand_in)
        result = CliRunner().invoke(cli, args)
        return result.exit_code, result.stderr.strip().splitlines()

    return run


def _arrays(path):
    with fastrank.open(path) as results:
        return [(run.status, run.layer, run.spectrum, run.log_norm, run.soft_rank)
                for run in results]


def _assert_same(a, b):
    assert len(a) == len(b)
    for run_a, run_b in zip(a, b, strict=True):
        assert run_a[0] == run_b[0]
        for x, y in zip(run_a[1:], run_b[1:], strict=True):
            np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("net", NETWORKS, ids=lambda n: n.label())
def test_a_planned_batch_fits_the_free_memory_and_the_cap(stand_in, net):
    one = batch_bytes(net, 1)
    assert batch_bytes(net, 2) > one  # every seed adds its buffers
    for free in (one, one + 1, 3 * one, 100 * one, 10 * 2**30):
        most = GPUBackend(dev=stand_in(free_memory=free)).max_batch(net)
        assert batch_bytes(net, most) <= free < batch_bytes(net, most + 1) or most == 1 << 16
        for cap in (1, 2, 5):
            capped = GPUBackend(dev=stand_in(free_memory=free), max_batch=cap).max_batch(net)
            assert capped == min(cap, most)
    # H, Z and the weights alone, per seed, are counted (a plan without them would not be)
    dims = (net.in_dim, *net.widths)
    item = np.dtype(net.dtype).itemsize
    assert batch_bytes(net, 2) - one > item * (2 * max(dims) * net.batch + max(dims) ** 2)
    assert plan_batch(net, one - 1) == 1  # never zero: the pre-flight refuses that


def test_the_cap_must_be_a_count(stand_in):
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="max_batch"):
            GPUBackend(dev=stand_in(), max_batch=bad)


def test_a_sweep_split_into_batches_gives_the_numbers_of_one_batch(stand_in, tmp_path):
    sweep = Sweep(grid={"width": [8], "depth": [10], "norm": ["none", "bn"]}, seeds=range(5),
                  schedule=Schedule(every=2, cheap_every=3))
    net = sweep.networks()[0]
    sizes = {}
    for name, free in (("whole", None), ("split", batch_bytes(net, 2))):
        be = GPUBackend(dev=stand_in(free_memory=free))
        start, sizes[name] = be.start, []
        be.start = lambda n, seeds, start=start, seen=sizes[name], **kw: (
            seen.append(len(seeds)), start(n, seeds, **kw))[1]
        run_sweep(sweep, tmp_path / f"{name}.h5", backend=be)
    assert sizes == {"whole": [5, 5], "split": [2, 2, 1, 2, 2, 1]}
    _assert_same(_arrays(tmp_path / "whole.h5"), _arrays(tmp_path / "split.h5"))


@pytest.mark.parametrize("extra, seeds, words", [
    ([], 1, ["for one seed of", "lower the width or the batch"]),
    (["--gpu-batch", "4"], 4, ["for 4 seeds of", "--gpu-batch 4", "at most 3 fit"]),
])
def test_a_sweep_the_device_cannot_hold_is_refused_in_one_line(gpu_cli, tmp_path, extra,
                                                                seeds, words):
    """Free memory one byte short of ``seeds`` seeds of the sweep's networks."""
    free = batch_bytes(Network(width=8, depth=12, norm="bn"), seeds) - 1
    code, err = gpu_cli([*ARGS, *extra, "-o", "r.h5"], free_memory=free)
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("fastrank: error: the sweep needs about ") and "GPU memory" in err[0]
    assert "device 0 has " in err[0] and all(w in err[0] for w in words), err
    assert list(tmp_path.iterdir()) == []


def test_a_resumed_sweep_is_checked_against_the_device_too(gpu_cli, tmp_path):
    """--resume with no options: the file's own sweep, the file left as it was."""
    code, err = gpu_cli(["sweep", "--gpu", "--width", "8", "--depth", "2", "--seed", "0",
                         "-q", "-o", "r.h5"], fail_allocation=1)
    assert code == 2, err
    before = (tmp_path / "r.h5").read_bytes()
    free = batch_bytes(Network(width=8, depth=2), 1) - 1
    code, err = gpu_cli(["sweep", "--gpu", "--resume", "-o", "r.h5"], free_memory=free)
    assert code == 2 and len(err) == 1 and "GPU memory for one seed" in err[0], err
    assert (tmp_path / "r.h5").read_bytes() == before


@pytest.mark.parametrize("args, words", [
    (["--gpu-batch", "2"], "--gpu-batch needs --gpu"),
    (["--gpu", "--gpu-batch", "0"], "invalid --gpu-batch 0"),
])
def test_gpu_batch_option_errors(gpu_cli, tmp_path, args, words):
    code, err = gpu_cli(["sweep", *args, "-o", "r.h5"])
    assert code == 2 and len(err) == 1 and words in err[0], err
    assert list(tmp_path.iterdir()) == []


def test_a_gpu_sweep_checks_the_devices_memory_not_the_hosts(gpu_cli, tmp_path, monkeypatch):
    from fastrank import preflight

    monkeypatch.setattr(preflight, "available_memory", lambda: 1)
    code, err = gpu_cli([*ARGS, "-o", "r.h5"], free_memory=2**30)
    assert code == 0, err
    assert [r[0] for r in _arrays(tmp_path / "r.h5")] == ["complete"] * 8


@pytest.mark.slow
def test_out_of_device_memory_mid_sweep_then_resume_gives_the_uninterrupted_numbers(
        gpu_cli, stand_in, tmp_path):
    code, err = gpu_cli([*ARGS, "--gpu-batch", "1", "-o", "clean.h5"])
    assert code == 0, err
    clean = _arrays(tmp_path / "clean.h5")
    with fastrank.open(tmp_path / "clean.h5") as results:
        sweep = results.sweep
    be = GPUBackend(dev=stand_in(), max_batch=1)
    start, ends = be.start, []  # the device's allocations before each run's start
    be.start = lambda net, seeds, **kw: (ends.append(be.dev.allocations),
                                         start(net, seeds, **kw))[1]
    run_sweep(sweep, tmp_path / "counted.h5", backend=be)
    ends = [*ends[1:], be.dev.allocations]  # allocations when each run had made all of its
    # the first allocation (a new file without rows), the second run's first, the fourth
    # run's last (in its first layer, past its start)
    for fail in (1, ends[0] + 1, ends[3]):
        path = f"cut-{fail}.h5"
        code, err = gpu_cli([*ARGS, "--gpu-batch", "1", "-o", path], fail_allocation=fail)
        assert code == 2 and len(err) == 1, err
        assert "ran out of memory" in err[0] and "lower --gpu-batch" in err[0], err
        assert f"{path} keeps the rows committed so far: --resume continues it" in err[0]
        kept = _arrays(tmp_path / path)
        done = sum(end < fail for end in ends)  # runs whose allocations all succeeded
        assert [r[0] for r in kept[:done]] == ["complete"] * done
        assert all(r[0] != "complete" for r in kept[done:])
        _assert_same(kept[:done], clean[:done])
        code, err = gpu_cli([*ARGS, "--gpu-batch", "1", "--resume", "-o", path])
        assert code == 0, err
        _assert_same(_arrays(tmp_path / path), clean)


def test_a_gpu_sweep_closes_its_backend_when_it_ends(gpu_cli, tmp_path, monkeypatch):
    """The device's library handles are released (GPUBackend.close, after a synchronize)
    when the command ends, not left to the interpreter's exit."""
    closed = []
    monkeypatch.setattr(GPUBackend, "close", lambda self: closed.append(self))
    code, err = gpu_cli([*ARGS, "-o", "r.h5"])
    assert code == 0, err
    assert len(closed) == 1
