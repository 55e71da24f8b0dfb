"""Installing fastrank: the name every install hint names, and where numba keeps the
compiled kernels when the install folder is read-only. (tools/check_wheel.py builds the
wheel and runs it from a read-only site-packages: minutes, so not here.)"""

import os
import re
import stat
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner

import fastrank.kernels.cpu as kernels
from fastrank.cli import cli
from fastrank.version import DISTRIBUTION, GPU_INSTALL_HINT, install_hint

ROOT = Path(__file__).resolve().parent.parent


def _pyproject() -> dict:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_the_hints_name_the_distribution_and_its_extras():
    project = _pyproject()
    assert project["name"] == DISTRIBUTION == "fastrank-sim"
    assert install_hint("plot") == "pip install 'fastrank-sim[plot]'"
    hinted = {m[1] for p in (ROOT / "fastrank").rglob("*.py")
              for m in re.finditer(r"install_hint\('([\w-]+)'\)", p.read_text(encoding="utf-8"))}
    hinted |= set(re.findall(r"\[([\w-]+)\]", GPU_INSTALL_HINT))
    assert {"plot", "data", "dist", "gpu-cuda12", "gpu-cuda13"} <= hinted
    assert hinted <= set(project["optional-dependencies"])


def test_no_message_or_doc_names_the_other_project():
    """"fastrank" on the package index is an unrelated library: no hint installs it."""
    paths = [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "examples").glob("*"),
             *(ROOT / "fastrank").rglob("*.py"), *(ROOT / "kernels").rglob("*.py"),
             *(ROOT / "bench").glob("*.py"), *(ROOT / "tools").rglob("*.*"),
             *(ROOT / "tests").rglob("*.py")]
    other = re.compile(r"fastrank\[|pip install\s+['\"]?fastrank(?![\w-])")
    found = [f"{p.relative_to(ROOT)}: {m[0]}" for p in paths if p.is_file()
             for m in [other.search(p.read_text(encoding="utf-8", errors="replace"))] if m]
    assert not found


@pytest.fixture
def numba_config(monkeypatch, tmp_path):
    """numba's config with no cache folder set, the temporary directory in tmp_path, and
    NUMBA_CACHE_DIR put back afterwards."""
    from numba.core import config

    monkeypatch.setattr(config, "CACHE_DIR", "")
    monkeypatch.setenv("NUMBA_CACHE_DIR", "")  # restored (removed) afterwards
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return config


def test_a_read_only_install_leaves_the_cache_to_numbas_user_folder(numba_config,
                                                                     monkeypatch):
    monkeypatch.setattr(kernels, "_writable", lambda folder: "__pycache__" not in folder)
    note = kernels._place_cache()
    assert re.fullmatch(r"; kept in .*numba: the install folder is read-only", note), note
    assert numba_config.CACHE_DIR == ""


def test_nothing_writable_gives_numba_a_private_folder(numba_config, monkeypatch, tmp_path):
    monkeypatch.setattr(kernels, "_writable", lambda folder: False)
    note = kernels._place_cache()
    folder = tmp_path / f"fastrank-numba-{os.getuid()}"
    assert note.startswith(f"; kept in {folder}: the install folder and ")
    assert numba_config.CACHE_DIR == os.environ["NUMBA_CACHE_DIR"] == str(folder)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert kernels._private_folder() == str(folder)  # the next run finds it


def test_a_private_folder_others_can_write_is_not_used(numba_config, tmp_path):
    taken = tmp_path / f"fastrank-numba-{os.getuid()}"
    taken.mkdir()
    taken.chmod(0o777)
    folder = Path(kernels._private_folder())
    assert folder != taken and folder.parent == tmp_path
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700


def test_a_users_numba_cache_dir_wins(numba_config, monkeypatch):
    monkeypatch.setattr(numba_config, "CACHE_DIR", "/mine")
    monkeypatch.setattr(kernels, "_writable", lambda folder: False)
    assert kernels._place_cache() == ""
    assert numba_config.CACHE_DIR == "/mine"


def test_writable_is_numbas_test(tmp_path):
    assert kernels._writable(str(tmp_path / "new" / "__pycache__"))
    (tmp_path / "file").write_text("")
    assert not kernels._writable(str(tmp_path / "file" / "__pycache__"))


def test_the_first_sweep_says_where_the_kernels_are_kept(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(kernels, "compiled_before", lambda: False)
    monkeypatch.setattr(kernels, "CACHE_NOTE", "; kept in /x: the install folder is read-only")
    result = CliRunner().invoke(cli, ["sweep", "--width", "8", "--depth", "5", "-o", "a.h5"])
    assert result.exit_code == 0, result.output
    assert ("fastrank: compiling the kernels for this machine (once, about 30 s; kept in /x: "
            "the install folder is read-only)\n") in result.stderr
