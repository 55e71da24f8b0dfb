"""Write docs/api.md, the reference of fastrank's public API, from the docstrings.

The public API is what ``fastrank.__all__`` names (analysis scripts call these), with
the public methods and properties of the classes among them and of the two a script
meets through them (``fastrank.store.Run``, returned by ``Results``). Docstrings are
numpydoc (Parameters, Returns, Examples); tests/test_api_docs.py checks that every
public name has one, that docs/api.md is what this script writes, and runs the examples.

    python tools/api_docs.py            # rewrite docs/api.md
    python tools/api_docs.py --check    # exit 1 if docs/api.md is out of date
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "docs" / "api.md"

#: Classes reached through the public ones, documented with them.
EXTRA = (("fastrank.store", "Run"),)

HEADER = """# API reference

Generated from the docstrings by `python tools/api_docs.py` (a test fails when this page
and the docstrings disagree, and runs every example below). The command line is
documented by `fastrank COMMAND --help`; the file format in [format.md](format.md).
"""


def public_objects() -> list[tuple[str, object]]:
    """(qualified name, object) of every public name, in ``fastrank.__all__`` order."""
    import importlib

    import fastrank

    names = [n for n in fastrank.__all__ if not n.startswith("__") and n != "FORMAT_VERSION"]
    out = [(f"fastrank.{n}", getattr(fastrank, n)) for n in names]
    for module, name in EXTRA:
        out.append((f"{module}.{name}", getattr(importlib.import_module(module), name)))
    return out


def members(cls) -> list[tuple[str, object]]:
    """The public methods and properties a class defines itself (not inherited)."""
    found = []
    for name, value in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(value, (property, staticmethod, classmethod)) or inspect.isfunction(value):
            found.append((name, value))
    return found


def _signature(name: str, obj) -> str:
    if isinstance(obj, property):
        return name
    try:
        return f"{name}{inspect.signature(getattr(obj, '__func__', obj))}"
    except (TypeError, ValueError):
        return name


def _doc(obj) -> str:
    target = obj.fget if isinstance(obj, property) else getattr(obj, "__func__", obj)
    return inspect.cleandoc(target.__doc__ or "")


def render() -> str:
    parts = [HEADER]
    for qualname, obj in public_objects():
        short = qualname.rsplit(".", 1)[-1]
        kind = "class" if inspect.isclass(obj) else "function"
        parts.append(f"## `{qualname}`\n\n*{kind}* `{_signature(short, obj)}`\n\n"
                     f"```text\n{_doc(obj)}\n```\n")
        if inspect.isclass(obj):
            for name, member in members(obj):
                what = "property" if isinstance(member, property) else "method"
                parts.append(f"### `{short}.{name}`\n\n*{what}* "
                             f"`{_signature(name, member)}`\n\n```text\n{_doc(member)}\n```\n")
    return "\n".join(parts)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    text = render()
    if "--check" in argv:
        current = OUT.read_text(encoding="utf-8") if OUT.exists() else ""
        if current != text:
            print(f"{OUT} is out of date: run python tools/api_docs.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
