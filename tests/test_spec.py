"""Validation of networks, schedules and sweeps, and parsing of option values."""

import math

import numpy as np
import pytest

from fastrank.options import parse_floats, parse_ints, parse_words
from fastrank.spec import Network, Schedule, SpecError, Sweep


def test_defaults_and_derived_properties():
    net = Network()
    assert net.batch == net.width == 32  # batch defaults to the input dimension
    assert net.widths == (32,) * net.depth
    assert net.weight_gain == 1.0 and Network(activation="relu").weight_gain == 2.0
    assert net.rescaled and not Network(norm="bn").rescaled
    assert not Network(activation="tanh").rescaled
    assert not net.residual and Network(gamma=0.1).residual


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"width": 0}, ["width", ">= 1"]),
        ({"depth": -3}, ["depth"]),
        ({"norm": "foo"}, ["norm", "'foo'", "none, bn, bn-rms, ln"]),
        ({"activation": "gelu"}, ["activation", "linear, relu, tanh"]),
        ({"order": "x"}, ["order"]),
        ({"init": "xavier"}, ["init", "gaussian, uniform, orthogonal"]),
        ({"dtype": "float16"}, ["dtype", "float32, float64"]),
        ({"gamma": -1.0}, ["gamma"]),
        ({"gain": float("nan")}, ["gain"]),
        ({"eps": -1e-3}, ["eps"]),
        ({"input": "data.csv"}, ["input"]),
        ({"width": (4, 5), "depth": 3}, ["width", "depth=3"]),
        ({"width": (4, 8), "depth": 2, "gamma": 0.5}, ["gamma", "constant width"]),
    ],
)
def test_bad_network_values_name_the_option(kwargs, words):
    with pytest.raises(SpecError) as err:
        Network(**kwargs)
    message = str(err.value)
    assert "\n" not in message
    for w in words:
        assert w in message


def test_per_layer_widths():
    net = Network(width=(16, 8, 8), depth=3, input_dim=4, batch=5)
    assert net.widths == (16, 8, 8) and net.in_dim == 4
    assert Network(width=(8, 8), depth=2).width == 8  # a constant list collapses to a number


def test_schedule_points_always_include_first_and_last():
    assert Schedule(every=4, log=None).points(10).tolist() == [0, 4, 8, 10]
    assert Schedule(every=None, log=None, layers=(3,)).points(7).tolist() == [0, 3, 7]
    log = Schedule(every=None, log=5).points(10000)
    assert log[0] == 0 and log[1] == 1 and log[-1] == 10000 and np.all(np.diff(log) > 0)
    with pytest.raises(SpecError, match="beyond depth"):
        Schedule(layers=(20,)).points(10)


def test_sweep_runs_are_the_product_with_seeds_innermost():
    sweep = Sweep(grid={"norm": ("none", "bn"), "width": (8, 16)}, seeds=(0, 1, 2))
    runs = sweep.runs()
    assert len(runs) == 12
    assert [s for _, s in runs[:3]] == [0, 1, 2]
    assert runs[0][0].norm == "none" and runs[0][0].width == 8 and runs[3][0].width == 16
    assert Sweep.from_dict(sweep.to_dict()) == sweep


def test_sweep_rejects_bad_values_up_front():
    with pytest.raises(SpecError, match="unknown option 'colour'"):
        Sweep(grid={"colour": ("red",)})
    with pytest.raises(SpecError, match="norm"):
        Sweep(grid={"norm": ("none", "foo")})
    with pytest.raises(SpecError, match="tau"):
        Sweep(taus=(1.5,))
    with pytest.raises(SpecError, match="seed"):
        Sweep(seeds=())


def test_parse_values():
    assert parse_ints("seed", "0-3") == [0, 1, 2, 3]
    assert parse_ints("width", "8-64:x2") == [8, 16, 32, 64]
    assert parse_ints("depth", "100,200-400:100") == [100, 200, 300, 400]
    assert parse_floats("gamma", "0.1,inf") == [0.1, math.inf]
    assert parse_words("norm", "none,bn", ("none", "bn")) == ["none", "bn"]
    for bad in ["", "3-1", "a", "1,,2", "4-8:x1"]:
        with pytest.raises(SpecError):
            parse_ints("width", bad)
    with pytest.raises(SpecError, match="choose one of"):
        parse_words("norm", "batch", ("none", "bn"))
