"""Sweep options as a user writes them -- command-line text or TOML values, by option
name -- turned into a Sweep, with the defaults of ``fastrank sweep``. Shared by the CLI
and by the reproduction recipes."""

from __future__ import annotations

from fastrank import inputs, spec

#: The sweep run when no option says otherwise: vanilla collapse next to BN, in seconds.
DEFAULTS = {
    "width": "32",
    "depth": "1000",
    "activation": "linear,relu",
    "norm": "none,bn",
    "seed": "0-3",
}


def _ints(o, t):
    return spec.parse_ints(o, t)


def _floats(o, t):
    return spec.parse_floats(o, t)


def _words(allowed):
    return lambda o, t: spec.parse_words(o, t, allowed)


#: Grid options: CLI/TOML name -> parser of its text. Each takes lists and ranges.
GRID_PARSERS = {
    "width": _ints,
    "depth": _ints,
    "batch": _ints,
    "activation": _words(spec.ACTIVATIONS),
    "norm": _words(spec.NORMS),
    "order": _words(spec.ORDERS),
    "gamma": _floats,
    "init": _words(spec.INITS),
    "gain": _floats,
    "dtype": _words(spec.DTYPES),
    "input": _words(None),
    "input_dim": _ints,
    "eps": _floats,
}
OTHER_KEYS = ("seed", "every", "log", "layers", "cheap_every", "method", "tau")


def build_sweep(given: dict) -> spec.Sweep:
    """A Sweep from option texts (or TOML values) by option name, DEFAULTS filling the rest."""
    values = {**DEFAULTS, **given}
    grid = {name: _parse(name, values[name]) for name in GRID_PARSERS if name in values}
    schedule = spec.Schedule(
        every=_int_or_off("every", values.get("every", spec.Schedule.every)),
        log=_int_or_off("log", values.get("log", spec.Schedule.log)),
        layers=tuple(_parse("layers", values["layers"])) if "layers" in values else (),
        cheap_every=_int_or_off("cheap_every", values.get("cheap_every")),
    )
    sweep = spec.Sweep(
        grid=grid,
        seeds=tuple(_parse("seed", values["seed"])),
        schedule=schedule,
        method=values.get("method", "auto"),
        taus=tuple(_parse("tau", values["tau"])) if "tau" in values else (0.1,),
    )
    inputs.check_inputs(sweep)
    return sweep


def _parse(name: str, value) -> list:
    """Parse an option's text; TOML numbers and lists are turned into the same text."""
    if name == "width" and isinstance(value, list) and any(isinstance(v, list) for v in value):
        return [tuple(v) if isinstance(v, list) else v for v in value]  # per-layer widths
    if isinstance(value, bool):
        raise spec.SpecError(f"invalid {name} {value!r}: expected a value, not true/false")
    if isinstance(value, list):
        value = ",".join(str(v) for v in value)
    parser = {"seed": _ints, "layers": _ints, "tau": _floats}.get(name) or GRID_PARSERS[name]
    return parser(name.replace("_", "-"), str(value))


def _int_or_off(name: str, value) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise spec.SpecError(f"invalid {name} {value!r}: must be an integer >= 0 (0 turns it off)")
    return value or None


def read_config(path: str) -> dict:
    """Options from a flat TOML file whose keys are the option names (for build_sweep)."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise spec.SpecError(f"cannot read config {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise spec.SpecError(f"config {path} is not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise spec.SpecError(f"config {path} is not UTF-8 text (byte {exc.start}: "
                             f"{exc.object[exc.start:exc.start + 1]!r}); TOML files are "
                             "UTF-8") from None
    names = {k: k.replace("-", "_") for k in data}
    twice = sorted(k for k in data if list(names.values()).count(names[k]) > 1)
    if twice:
        raise spec.SpecError(f"config {path}: {' and '.join(twice)} name the same option")
    data = {names[k]: v for k, v in data.items()}
    unknown = sorted(set(data) - set(GRID_PARSERS) - set(OTHER_KEYS))
    if unknown:
        allowed = ", ".join((*GRID_PARSERS, *OTHER_KEYS))
        raise spec.SpecError(f"config {path}: unknown option {unknown[0]!r}; known: {allowed}")
    return data
