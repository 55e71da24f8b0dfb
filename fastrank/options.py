"""Sweep options as a user writes them -- command-line text or TOML values, by option
name -- turned into a Sweep, with the defaults of ``fastrank sweep``; and the parsers of
an option's text (lists, ranges). Shared by the CLI and by the reproduction recipes."""

from __future__ import annotations

import re
from collections.abc import Iterable

from fastrank import inputs, spec
from fastrank.errors import SpecError
from fastrank.validate import choice

#: The sweep run when no option says otherwise: vanilla collapse next to BN, in seconds.
DEFAULTS = {
    "width": "32",
    "depth": "1000",
    "activation": "linear,relu",
    "norm": "none,bn",
    "seed": "0-3",
}

#: Most values one option may list: beyond it the list alone would not fit in memory (a
#: range is refused before it is expanded).
MAX_VALUES = 1_000_000

_INT = re.compile(r"[0-9]+")  # ASCII digits only: int() refuses most other digits
_INT_RANGE = re.compile(r"([0-9]+)-([0-9]+)(?::(x?)([0-9]+))?")


def parse_ints(option: str, text: str) -> list[int]:
    """``"32,64"``, ``"0-9"`` (inclusive), ``"0-100:10"`` (step) or ``"8-256:x2"`` (factor);
    at most MAX_VALUES values (counted before a range is expanded)."""
    values: list[int] = []
    for part in _split(option, text):
        if _INT.fullmatch(part):
            values.append(int(part))
            continue
        m = _INT_RANGE.fullmatch(part)
        if not m:
            raise SpecError(
                f"invalid {option} {part!r}: use integers, lists (32,64) or ranges (0-9, 8-256:x2)"
            )
        lo, hi, geometric, step = int(m[1]), int(m[2]), m[3] == "x", int(m[4] or 1)
        if hi < lo or step < 1 or (geometric and (step < 2 or lo < 1)):
            raise SpecError(f"invalid {option} range {part!r}: empty or non-increasing")
        if geometric:
            v = lo
            while v <= hi:
                values.append(v)
                v *= step
        else:
            count = (hi - lo) // step + 1
            if len(values) + count > MAX_VALUES:
                raise SpecError(f"invalid {option} {part!r}: {count:,} values; at most "
                                f"{MAX_VALUES:,} in one list")
            values.extend(range(lo, hi + 1, step))
    return values


def parse_floats(option: str, text: str) -> list[float]:
    """Comma-separated numbers; ``inf`` allowed. No ranges: a ``-`` belongs to a number
    (``1e-5``, ``-1``), so ``0.5-2`` is refused rather than read as a range."""
    out = []
    for part in _split(option, text):
        try:
            out.append(float(part))
        except ValueError:
            raise SpecError(f"invalid {option} {part!r}: must be a number (float options take "
                            "lists such as 0.5,1,2, not ranges)") from None
    return out


def parse_words(option: str, text: str, allowed: Iterable[str] | None = None) -> list[str]:
    """Comma-separated names, each checked against ``allowed`` when given."""
    words = _split(option, text)
    if allowed is not None:
        for w in words:
            choice(option, w, tuple(allowed))
    return words


def _split(option: str, text: str) -> list[str]:
    parts = [p.strip() for p in str(text).split(",")]
    if not text or any(not p for p in parts):
        raise SpecError(f"invalid {option} {text!r}: empty value in the list")
    return parts


def _words(allowed):
    return lambda o, t: parse_words(o, t, allowed)


#: Grid options: CLI/TOML name -> parser of its text. Each takes lists and ranges.
GRID_PARSERS = {
    "width": parse_ints,
    "depth": parse_ints,
    "batch": parse_ints,
    "activation": _words(spec.ACTIVATIONS),
    "norm": _words(spec.NORMS),
    "order": _words(spec.ORDERS),
    "gamma": parse_floats,
    "init": _words(spec.INITS),
    "gain": parse_floats,
    "dtype": _words(spec.DTYPES),
    "input": _words(None),
    "input_dim": parse_ints,
    "eps": parse_floats,
}
OTHER_KEYS = ("seed", "every", "log", "layers", "cheap_every", "method", "tau", "tangents",
              "qr_every")


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
        tangents=values.get("tangents", 0),
        qr_every=values.get("qr_every", 1),
    )
    inputs.check_inputs(sweep)
    return sweep


def _parse(name: str, value) -> list:
    """Parse an option's text; TOML numbers and lists are turned into the same text."""
    if name == "width" and isinstance(value, list) and any(isinstance(v, list) for v in value):
        return [tuple(v) if isinstance(v, list) else v for v in value]  # per-layer widths
    if isinstance(value, bool):
        raise SpecError(f"invalid {name} {value!r}: expected a value, not true/false")
    if isinstance(value, list):
        value = ",".join(str(v) for v in value)
    parser = {"seed": parse_ints, "layers": parse_ints, "tau": parse_floats}.get(name) or (
        GRID_PARSERS[name])
    return parser(name.replace("_", "-"), str(value))


def _int_or_off(name: str, value) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise SpecError(f"invalid {name} {value!r}: must be an integer >= 0 (0 turns it off)")
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
        raise SpecError(f"cannot read config {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"config {path} is not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise SpecError(f"config {path} is not UTF-8 text (byte {exc.start}: "
                             f"{exc.object[exc.start:exc.start + 1]!r}); TOML files are "
                             "UTF-8") from None
    names = {k: k.replace("-", "_") for k in data}
    twice = sorted(k for k in data if list(names.values()).count(names[k]) > 1)
    if twice:
        raise SpecError(f"config {path}: {' and '.join(twice)} name the same option")
    data = {names[k]: v for k, v in data.items()}
    unknown = sorted(set(data) - set(GRID_PARSERS) - set(OTHER_KEYS))
    if unknown:
        allowed = ", ".join((*GRID_PARSERS, *OTHER_KEYS))
        raise SpecError(f"config {path}: unknown option {unknown[0]!r}; known: {allowed}")
    return data
