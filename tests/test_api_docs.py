"""The public API's reference: every public name has a numpydoc docstring, docs/api.md is
what tools/api_docs.py generates from them, and every example in them runs."""

import doctest
import importlib.util
import inspect
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("api_docs", ROOT / "tools" / "api_docs.py")
api_docs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(api_docs)

OBJECTS = api_docs.public_objects()


@pytest.mark.parametrize("qualname, obj", OBJECTS, ids=[q for q, _ in OBJECTS])
def test_every_public_name_has_a_numpydoc_docstring(qualname, obj):
    doc = api_docs._doc(obj)
    assert doc, f"{qualname} has no docstring"
    assert "Examples\n--------" in doc, f"{qualname}: no Examples section"
    target = obj.__init__ if inspect.isclass(obj) else obj
    params = [p for p in inspect.signature(target).parameters if p not in ("self", "cls")]
    if params and not inspect.isclass(obj) or (inspect.isclass(obj) and params
                                                and "Parameters\n----------" in doc):
        assert "Parameters\n----------" in doc, f"{qualname}: no Parameters section"
        for p in params:
            assert p.lstrip("*") in doc, f"{qualname}: parameter {p} not described"
    if not inspect.isclass(obj):
        assert "Returns\n-------" in doc or "Yields\n------" in doc, f"{qualname}: no Returns"
    for name, member in (api_docs.members(obj) if inspect.isclass(obj) else []):
        assert api_docs._doc(member), f"{qualname}.{name} has no docstring"


def test_the_api_page_is_generated_from_the_docstrings():
    assert (ROOT / "docs" / "api.md").read_text(encoding="utf-8") == api_docs.render(), (
        "docs/api.md is out of date: run python tools/api_docs.py")


@pytest.mark.parametrize("qualname, obj", OBJECTS, ids=[q for q, _ in OBJECTS])
def test_the_examples_run(qualname, obj, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples may write files
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tests = finder.find(obj, qualname, globs={})
    assert any(t.name == qualname for t in tests), f"{qualname}: no examples of its own"
    for test in tests:
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{qualname}: {result.failed} example(s) failed"
