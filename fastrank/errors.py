"""Error messages for people: whatever an exception says, shown in one line."""

from __future__ import annotations

import os
import re


def one_line(error: BaseException | str, typed: bool = False) -> str:
    """``error``'s text with every run of whitespace (newlines too) as one space; with
    ``typed``, after the exception's type (for errors whose text alone says little)."""
    text = str(error)
    if typed and isinstance(error, BaseException):
        text = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return " ".join(text.split())


def errno_of(error: BaseException) -> int | None:
    """The system's error number of an OSError, or the one an h5py error's text names
    among a page of HDF5 detail (``errno = 28``), or None."""
    code = getattr(error, "errno", None)
    if code:
        return code
    found = re.search(r"errno = (\d+)", str(error))
    return int(found[1]) if found else None


def os_reason(error: BaseException) -> str:
    """What the operating system said (``File too large``), for an OSError or an h5py
    error (:func:`errno_of`); else one_line."""
    code = errno_of(error)
    return os.strerror(code) if code else one_line(error)


class SpecError(ValueError):
    """An option has a value fastrank cannot use; the message names both.

    Raised by :class:`fastrank.Network`, :class:`fastrank.Schedule` and
    :class:`fastrank.Sweep` when they are
    built (so a bad value fails before anything runs, not halfway through a sweep) and
    by the parsing of option values. The message is one line naming the option, the
    value and what the option accepts, so the command line prints it as it is. A
    subclass of ValueError: ``except ValueError`` catches it too.

    Examples
    --------
    >>> import fastrank
    >>> try:
    ...     fastrank.Network(width=32, activation="gelu")
    ... except fastrank.SpecError as exc:
    ...     print(exc)
    invalid activation 'gelu': choose one of linear, relu, tanh
    >>> fastrank.Schedule(every=0)
    Traceback (most recent call last):
        ...
    fastrank.errors.SpecError: invalid every 0: must be an integer >= 1
    """
