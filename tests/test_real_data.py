"""Real data as input: ``sklearn:digits`` (and the other data sets scikit-learn ships),
standardised per feature; input dimension different from the width; and claim 6 of
docs/reproduction.md at small scale: on the digits, the rank of the hidden layers falls with depth
without BN and stays near the width with BN."""

import numpy as np
import pytest
from click.testing import CliRunner

import fastrank
from fastrank import Network, Schedule, SpecError, simulate_many
from fastrank import init as finit
from fastrank import inputs as finputs
from fastrank.cli import cli

sklearn_datasets = pytest.importorskip("sklearn.datasets")


def test_digits_input_is_the_standardised_images():
    net = Network(width=64, depth=3, input="sklearn:digits")
    assert net.in_dim == 64 and net.batch == 64  # N = d defaults to the 64 pixels
    raw = sklearn_datasets.load_digits().data
    full = finputs.load_input_array("sklearn:digits")
    assert full.shape == raw.shape == (1797, 64) and not full.flags.writeable
    sd = raw.std(axis=0)
    np.testing.assert_allclose(
        full[:, sd > 0], ((raw - raw.mean(0)) / np.where(sd > 0, sd, 1))[:, sd > 0]
    )
    assert np.all(full[:, sd == 0] == 0)  # blank pixels
    np.testing.assert_allclose(full.mean(0), 0, atol=1e-12)
    h0 = finit.input_matrix(net, seed=5)  # the data, not the seed, makes the input
    assert h0.shape == (64, 64) and h0.dtype == np.float32
    np.testing.assert_allclose(h0, full[:64].T.astype(np.float32))


def test_other_shipped_data_sets_and_bad_names():
    net = Network(width=16, depth=2, input="sklearn:iris")
    assert net.in_dim == 4 and net.batch == 4
    with pytest.raises(SpecError, match="sklearn:digits"):
        Network(input="sklearn:mnist")
    with pytest.raises(SpecError, match="only 150 samples"):
        finit.input_matrix(Network(width=8, depth=2, input="sklearn:iris", batch=200), 0)
    with pytest.raises(SpecError, match="input_dim"):
        Network(input="sklearn:digits", input_dim=10)


def test_missing_scikit_learn_is_one_clear_error(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_sklearn(name, *args, **kwargs):
        if name == "sklearn" or name.startswith("sklearn."):
            raise ImportError("No module named 'sklearn'")
        return real_import(name, *args, **kwargs)

    finputs._sklearn_dataset.cache_clear()
    monkeypatch.setattr(builtins, "__import__", no_sklearn)
    try:
        with pytest.raises(SpecError, match=r"pip install .fastrank-sim\[data\]."):
            Network(input="sklearn:wine")
    finally:
        monkeypatch.undo()
        finputs._sklearn_dataset.cache_clear()


def test_width_may_differ_from_the_input_dimension():
    # 64 pixels into width 32 (and a batch of 100 images): the first layer maps them.
    net = Network(
        width=32, depth=20, input="sklearn:digits", batch=100, norm="bn", activation="relu"
    )
    assert net.in_dim == 64
    run = simulate_many(net, [0, 1], Schedule(every=5, log=None))[0]
    assert run.failure is None
    assert np.isfinite(run.spectrum[0]).sum() == 64  # layer 0: the 64 x 100 input
    assert np.isfinite(run.spectrum[-1]).sum() == 32  # hidden layers: 32 x 100
    assert run.numerical_rank[-1] == 32


def test_sweep_command_takes_the_digits(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(
        cli,
        [
            "sweep",
            "--input",
            "sklearn:digits",
            "--width",
            "64",
            "--depth",
            "10",
            "--seed",
            "0",
            "--activation",
            "relu",
            "--norm",
            "bn",
            "-q",
            "-o",
            "d.h5",
        ],
    )
    assert result.exit_code == 0, result.output
    with fastrank.open("d.h5") as r:
        run = r[0]
        assert run.network.input == "sklearn:digits" and r.runs["input_dim"][0] == 64
        assert run.status == "complete"
    result = CliRunner().invoke(cli, ["sweep", "--input", "sklearn:nope", "-q", "-o", "e.h5"])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1


def test_claim6_digits_rank_falls_without_bn_and_stays_near_width_with_it():
    """Claim 6 (docs/reproduction.md) at small scale: width 64, the first 64 digits, 4 seeds, 800
    layers. Measured (16 seeds, examples/claim6_digits.toml): ReLU without BN, mean
    numerical rank 64 at layer 1, ~20 at 100, 1 from ~1000 on (3.3 at 300); with BN 64 at
    every layer of every run. Linear without BN: 52 -> 11.5 at 100 -> 2 at 1000."""
    layers = (1, 10, 100, 800)
    schedule = Schedule(every=None, log=None, layers=layers)
    seeds = range(4)
    ranks = {}
    for act in ("relu", "linear"):
        for norm in ("none", "bn"):
            runs = simulate_many(
                Network(width=64, depth=800, activation=act, norm=norm, input="sklearn:digits"),
                seeds,
                schedule,
            )
            assert all(r.failure is None for r in runs)
            assert list(runs[0].layer) == [0, *layers]
            ranks[act, norm] = np.array([r.numerical_rank for r in runs])
            ranks[act, norm, "soft"] = np.array([r.soft_rank for r in runs])
    relu, relu_bn = ranks["relu", "none"], ranks["relu", "bn"]
    # the input batch: 52 of 64 (blank pixels); a ReLU layer fills the width
    assert np.all(relu[:, 0] == 52) and np.all(relu[:, 1] >= 60)
    assert np.all(np.diff(relu.mean(0)[1:]) < 0)  # falls with depth ...
    assert relu[:, -1].mean() <= 2 and np.all(ranks["relu", "none", "soft"][:, -1] < 1.01)
    assert np.all(relu_bn[:, 1:] >= 0.9 * 64)  # ... stays near the width with BN
    # linear: falls without BN as well; with BN it stays far above 1 (order sqrt(d))
    assert ranks["linear", "none"][:, -1].mean() <= 3
    assert np.all(ranks["linear", "bn"][:, 1:] >= 8)
    assert np.all(ranks["linear", "bn", "soft"][:, -1] > 3)
