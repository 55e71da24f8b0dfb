"""fastrank.sweep from Python: failed runs recorded while the sweep goes on, progress
callbacks, resume of the file's own sweep, and refusal of a different one."""

import numpy as np
import pytest

import fastrank
from fastrank import Schedule, Sweep, simulate

SWEEP = Sweep(
    grid={"width": (8,), "depth": (40,), "activation": ("tanh",), "gain": (1.0, 1e80)},
    seeds=(0, 1),
    schedule=Schedule(every=10, log=None),
)


def test_failed_runs_are_recorded_and_the_sweep_goes_on(tmp_path):
    steps = []
    path = fastrank.sweep(SWEEP, tmp_path / "r.h5", on_start=steps.append, progress=steps.append)
    assert steps[0] == 4 * 40 and sum(steps[1:]) == 4 * 40
    with fastrank.open(path) as results:
        assert list(results.runs["status"]) == ["complete", "complete", "failed", "failed"]
        failed = results[2]
        assert failed.failed_layer == 1 and "non-finite" in failed.failure
        assert failed.layer.tolist() == [0]  # the rows before the failure stay
        # The file holds what simulate computes in memory, bit for bit.
        ok = results[1]
        traj = simulate(ok.network, ok.seed, SWEEP.schedule)
        np.testing.assert_array_equal(ok.spectrum, traj.spectrum)
        np.testing.assert_array_equal(ok.soft_rank, traj.soft_rank)


def test_resume_takes_the_files_sweep_and_refuses_another(tmp_path):
    path = tmp_path / "r.h5"
    fastrank.sweep(SWEEP, path)
    steps = []
    fastrank.sweep(None, path, resume=True, on_start=steps.append)
    assert steps == [0]  # nothing left to do
    other = Sweep(grid={"width": (16,)}, schedule=SWEEP.schedule)
    with pytest.raises(ValueError, match="different sweep"):
        fastrank.sweep(other, path, resume=True)
    with pytest.raises(FileExistsError):
        fastrank.sweep(SWEEP, path)
    with pytest.raises(ValueError, match="nothing to resume"):
        fastrank.sweep(None, tmp_path / "missing.h5", resume=True)


def test_seeds_are_split_into_batches_the_backend_can_hold(tmp_path, monkeypatch):
    from fastrank.backends.cpu import CPUBackend

    sizes = []
    real_start = CPUBackend.start
    monkeypatch.setattr(CPUBackend, "max_batch", lambda self, net, tangents=0: 2)
    monkeypatch.setattr(CPUBackend, "start", lambda self, net, seeds, **kw:
                        sizes.append(len(seeds)) or real_start(self, net, seeds, **kw))
    sweep = Sweep(grid={"width": (8,), "depth": (10,)}, seeds=(0, 1, 2, 3, 4),
                  schedule=SWEEP.schedule)
    fastrank.sweep(sweep, tmp_path / "b.h5")
    assert sizes == [2, 2, 1]
    with fastrank.open(tmp_path / "b.h5") as results:
        assert set(results.runs["status"]) == {"complete"}
        alone = simulate(results[4].network, 4, SWEEP.schedule)
        np.testing.assert_array_equal(results[4].soft_rank, alone.soft_rank)


def test_each_run_records_the_threads_that_computed_it(tmp_path, monkeypatch):
    """numba and BLAS thread counts per run (they can change the last bits of the
    per-layer path's BLAS products): those of the process that computed the run, kept
    when a resume carries the run over, and -1 while it has not been computed."""
    import fastrank
    from fastrank import store
    from fastrank.backends import get_backend

    def threads(path):
        with fastrank.open(path) as results:
            return {(int(a), int(b)) for a, b in zip(results.runs["numba_threads"],
                                                     results.runs["blas_threads"], strict=True)}

    sweep = fastrank.Sweep(grid={"width": [8, 16], "depth": [30]}, seeds=(0, 1))
    backend = get_backend("cpu")
    done = fastrank.sweep(sweep, tmp_path / "done.h5", backend=backend)
    mine = backend.threads()
    assert threads(done) == {mine} and min(mine) >= 1

    laid_out = tmp_path / "pending.h5"
    store.Writer.create(laid_out, sweep, {}).close()
    assert threads(laid_out) == {(-1, -1)}

    monkeypatch.setattr(type(backend), "threads", lambda self: (7, 9))
    fastrank.sweep(None, laid_out, resume=True, backend=backend)  # computed now
    assert threads(laid_out) == {(7, 9)}
    fastrank.sweep(None, done, resume=True, backend=backend)  # all carried over
    assert threads(done) == {mine}
