"""bench/gpu.py without a GPU: the torch loops it times against fastrank compute BN + ReLU
(checked on CPU torch in float64 against numpy), and the whole benchmark runs at toy
sizes on the host stand-in, with its torch entries, targets and markdown table."""

import json

import numpy as np
import pytest

from fastrank.bench import gpu as bench_gpu
from fastrank.gpu import GPUBackend
from fastrank.gpu.program import CompileError
from fastrank.gpu.testing import HostDevice, HostKernels

TOY = {"large": {"widths": [16], "depth": 4}, "small": {"width": 8, "seeds": 3, "depth": 12}}


def _numpy_bn_relu_net(h, weights, gain, eps):
    """H after one BN + ReLU layer per standard-normal weight stack in ``weights``."""
    for w in weights:
        z = np.sqrt(gain / w.shape[-1]) * w @ h
        mean, var = z.mean(axis=-1, keepdims=True), z.var(axis=-1, keepdims=True)
        h = np.maximum((z - mean) / np.sqrt(var + eps), 0.0)
    return h


@pytest.mark.parametrize("loop", [bench_gpu.torch_batched, bench_gpu.torch_per_network])
def test_torch_loops_are_bn_relu_networks_of_the_weights_they_draw(loop):
    torch = pytest.importorskip("torch")
    networks, d, n, depth, gain, eps = 2, 5, 7, 2, 2.0, 1e-5
    torch.manual_seed(3)
    got = loop(networks, d, n, depth, gain, eps, device="cpu", dtype="float64").numpy()

    torch.manual_seed(3)  # replay the draws in each loop's documented order
    if loop is bench_gpu.torch_batched:
        h0 = torch.randn(networks, d, n, dtype=torch.float64).numpy()
        weights = [torch.randn(networks, d, d, dtype=torch.float64).numpy()
                   for _ in range(depth)]
    else:
        draws = [(torch.randn(d, n, dtype=torch.float64).numpy(),
                  [torch.randn(d, d, dtype=torch.float64).numpy() for _ in range(depth)])
                 for _ in range(networks)]
        h0 = np.stack([h for h, _ in draws])
        weights = [np.stack([ws[layer] for _, ws in draws]) for layer in range(depth)]
    want = _numpy_bn_relu_net(h0, weights, gain, eps)
    assert got.shape == (networks, d, n)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    assert (got >= 0).all() and (got == 0).any()  # ReLU after a centring BN


@pytest.fixture(scope="module")
def kernels():
    try:
        return HostKernels()
    except CompileError as exc:
        pytest.skip(f"no host build of the kernels: {exc}")


@pytest.mark.slow
def test_the_benchmark_reports_torch_and_the_targets_on_the_stand_in(kernels):
    def make_backend(tf32=False, graphs=None, fused=False):
        return GPUBackend(dev=HostDevice(block=32, eigen_block=32, graphs=bool(graphs)),
                          graphs=graphs, graph_layers=4, fused=fused)

    doc = bench_gpu.run(quick=True, repeats=1, sizes=TOY, make_backend=make_backend)
    assert doc["status"] == "ok"
    small = doc["small"]
    for name in ("torch_batched", "torch_per_network"):
        entry = small[name]
        if entry["status"] == "skipped":  # no torch, or no CUDA in torch (as on CI)
            assert entry["reason"] and small[f"speedup_vs_{name}"] is None
        else:
            assert entry["status"] == "ok" and small[f"speedup_vs_{name}"] > 0
    if small["torch_per_network"]["status"] == "ok":
        per = small["torch_per_network"]
        assert per["networks_timed"] == 3 and per["basis"] == "extrapolated from 3 networks"
        assert per["extrapolated_s"] == pytest.approx(per["subset"]["median_s"])

    assert small["fused_speedup"] > 0 and small["fused_measurement_overhead"] > 0
    targets = doc["targets"]
    assert set(targets) == {"large_vs_sgemm", "small_vs_torch", "graphs_vs_eager"}
    assert targets["large_vs_sgemm"]["met"] is None  # d = 4096 was not run
    assert targets["large_vs_sgemm"]["reason"]
    assert targets["graphs_vs_eager"]["measured"] == small["graph_speedup"]
    assert targets["graphs_vs_eager"]["met"] == (small["graph_speedup"] >= 3)
    assert targets["small_vs_torch"]["measured"] == small["speedup_vs_torch_batched"]
    json.dumps(doc)

    text = bench_gpu.markdown(doc)
    assert "| torch" in text and "| target | measured | target | met |" in text
    assert "not measured: d = 4096 is not among the widths run" in text


@pytest.mark.slow
def test_the_whole_process_case_runs_the_command_and_the_torch_script_on_the_cpu():
    """sweep_processes with device None: the same plumbing as on a GPU (commands, files
    read back, the torch script's spectra at the same layers), on the CPU."""
    from fastrank.spec import Schedule

    size = {"width": 8, "seeds": 2, "depth": 30, "every": 10}
    sweep = bench_gpu.sweep_processes(size, repeats=1, device=None)
    measured = len(Schedule(every=10).points(30))
    assert sweep["measured_layers"] == measured
    ours = sweep["fastrank"]
    assert ours["status"] == "ok" and ours["runs"] == 2 and ours["run_status"] == ["complete"]
    assert ours["measured_layers"] == measured and ours["median_s"] > 0
    assert ours["command"].startswith("fastrank sweep --width 8 --depth 30")
    assert "FILE" in ours["command"] and "--gpu" not in ours["command"]
    assert sweep["final_soft_rank"]["fastrank"]["n"] == 2
    if sweep["torch"]["status"] == "skipped":
        assert "speedup_vs_torch_script" not in sweep
    else:
        assert sweep["torch"]["measured_layers"] == measured
        assert sweep["speedup_vs_torch_script"] > 0
        assert 1 <= sweep["final_soft_rank"]["torch"]["mean"] <= 8
    text = "\n".join(bench_gpu._sweep_lines(sweep))
    assert "`fastrank sweep --width 8" in text and "the torch script" in text
