"""A resume refuses, in one line, a file whose layout is not the format's, and the
command line's words for a file that exists are its own.

Every dataset of a real small sweep's file is edited in turn (replaced by a group, one
entry short along its first axis, one dimension more, values of another kind) and
``fastrank sweep --resume`` must exit 2 with one line naming the file as damaged and
the dataset, leaving the file byte for byte as it was (and no staging or lock file).
The Python API (:meth:`fastrank.store.Writer.resume`) refuses them the same way.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from test_store_faults import sha256

import fastrank
from fastrank.cli import cli
from fastrank.store import DamagedFile, Writer

#: A small sweep, every option at its default but these: 8 runs, 6 rows each.
SWEEP = ["--width", "8", "--depth", "50", "--seed", "0-1", "--every", "10", "--log", "0", "-q"]


def _group(f: h5py.File, name: str) -> None:
    del f[name]
    f.create_group(name)


def _short(f: h5py.File, name: str) -> None:
    data = f[name][()]
    del f[name]
    f[name] = data[:-1]


def _rank(f: h5py.File, name: str) -> None:
    data = f[name][()]
    del f[name]
    f[name] = data[..., None]


def _kind(f: h5py.File, name: str) -> None:
    data = f[name][()]
    del f[name]
    f[name] = np.zeros(data.shape, np.int64 if data.dtype.kind in "fSO" else np.float64)


EDITS = {"a group": _group, "one short": _short, "one dimension more": _rank,
         "another kind": _kind}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("layout") / "r.h5"
    result = CliRunner().invoke(cli, ["sweep", *SWEEP, "-o", str(path)])
    assert result.exit_code == 0, result.output
    return path


def _datasets(path: Path) -> list[str]:
    with h5py.File(path, "r") as f:
        return sorted(name for name, obj in f.items() if isinstance(obj, h5py.Dataset))


def test_a_resume_refuses_every_edited_dataset_in_one_line(finished, tmp_path):
    names = _datasets(finished)
    from fastrank.store import schema

    written = {*schema.ROW_DATASETS, *schema.STATUS_DATASETS, *schema.THREAD_DATASETS}
    assert written <= set(names) and {"seed", "label", "network", "n_sv", "run"} <= set(names)
    problems = []
    for name in names:
        for edit, change in EDITS.items():
            path = tmp_path / f"{name}-{edit.replace(' ', '-')}.h5"
            shutil.copyfile(finished, path)
            with h5py.File(path, "r+") as f:
                change(f, name)
            before = sha256(path)
            result = CliRunner().invoke(cli, ["sweep", "--resume", "-o", str(path)])
            lines = result.stderr.splitlines()
            what = f"{name} {edit}"
            if result.exit_code != 2:
                problems.append(f"{what}: exit {result.exit_code} "
                                f"{type(result.exception).__name__}: {result.exception}"
                                f" {lines[-1:]}")
            elif len(lines) != 1 or not lines[0].startswith(f"fastrank: error: {path}"):
                problems.append(f"{what}: stderr {lines[:3]}")
            elif not ("damaged" in lines[0] or "does not read back" in lines[0]) or \
                    name not in lines[0].split(str(path))[-1]:
                problems.append(f"{what}: the line does not name the damage: {lines[0]}")
            if sha256(path) != before:
                problems.append(f"{what}: the refused resume changed the file")
            left = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("."))
            if left:
                problems.append(f"{what}: left {left}")
                for p in left:
                    os.unlink(tmp_path / p)
            # The Python API refuses it too (the command line may have refused it
            # before the writer saw it).
            try:
                Writer.resume(path).close()
                problems.append(f"{what}: Writer.resume took it")
            except DamagedFile as exc:
                if name not in str(exc) or "\n" in str(exc):
                    problems.append(f"{what}: Writer.resume: {exc}")
            except Exception as exc:  # noqa: BLE001
                problems.append(f"{what}: Writer.resume: {type(exc).__name__}: {exc}")
            if sha256(path) != before:
                problems.append(f"{what}: Writer.resume changed the file")
            path.unlink()
    assert not problems, f"{len(problems)} of {len(names) * len(EDITS)} edits:\n" + \
        "\n".join(problems)


def test_a_resume_of_an_unedited_copy_completes(finished, tmp_path):
    """The loop's control: the same copy, unedited, resumes."""
    path = tmp_path / "r.h5"
    shutil.copyfile(finished, path)
    result = CliRunner().invoke(cli, ["sweep", "--resume", "-o", str(path)])
    assert result.exit_code == 0, result.output
    with fastrank.open(path) as results:
        assert set(results.runs["status"]) == {"complete"}


def test_a_file_that_appears_before_the_writer_is_refused_in_the_command_lines_words(
        tmp_path, monkeypatch):
    """The command line checks that its output does not exist before it starts; a file
    made between that check and the writer's own is refused with --overwrite and
    --resume named (the writer says overwrite=True, the Python API's words)."""
    from fastrank.cli import sweep as command

    path = tmp_path / "r.h5"
    checked = command._preflight

    def file_appears(*args, **kwargs):
        checked(*args, **kwargs)
        path.write_bytes(b"someone else's file")

    monkeypatch.setattr(command, "_preflight", file_appears)
    result = CliRunner().invoke(cli, ["sweep", *SWEEP, "-o", str(path)])
    lines = result.stderr.splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert "--overwrite" in lines[0] and "--resume" in lines[0], lines[0]
    assert "overwrite=True" not in lines[0], lines[0]
    assert path.read_bytes() == b"someone else's file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.h5"]
    with pytest.raises(FileExistsError, match="overwrite=True"):
        fastrank.sweep(fastrank.Sweep(grid={"width": (8,), "depth": (5,)}), path)
