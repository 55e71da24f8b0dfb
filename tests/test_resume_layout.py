"""A resume refuses, in one line, a file whose layout is not the format's, and the
command line's words for a file that exists are its own.

Every dataset of a real small sweep's file is edited in turn (replaced by a group, one
entry short along its first axis, one dimension more, values of another kind) and
``fastrank sweep --resume`` must exit 2 with one line naming the file as damaged and
the dataset, leaving the file byte for byte as it was (and no staging or lock file).
The Python API (:meth:`fastrank.store.Writer.resume`) refuses them the same way.
It also refuses, in one line, metadata that does not read back (the sweep attribute,
the runs' status, a format-2 file's runs), and computes again the committed rows that
fail their checksums.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from fault_harness import flip_in_chunk, sha256

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


@pytest.mark.slow
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


def test_committed_rows_that_fail_their_checksum_are_computed_again(finished, tmp_path):
    """A byte flipped in the first row of run 0's soft_rank chunk: the resume copies no
    run of that chunk but lays them out again as pending, and the sweep resumed from
    there ends with the numbers of the uninterrupted sweep, every run complete."""
    from fault_harness import assert_same_runs, read_runs

    from fastrank.store import schema

    path = tmp_path / "r.h5"
    shutil.copyfile(finished, path)
    flip_in_chunk(path, "soft_rank", 3, 0xFF)
    with h5py.File(path, "r") as f:
        runs = len(f["run"])
        hit = list(range(min(f["soft_rank"].chunks[0], runs)))
    with fastrank.open(path) as results:
        assert results.damaged() == [
            f"soft_rank: runs {', '.join(map(schema.run_id, hit))} do not read back as written"]
    with Writer.resume(path) as w:
        assert w.pending() == hit
    with fastrank.open(path) as results:
        assert results.damaged() == []
        assert [str(s) for s in results.runs["status"]] == \
            ["pending" if i in hit else "complete" for i in range(runs)]
    result = CliRunner().invoke(cli, ["sweep", "--resume", "-o", str(path)])
    assert result.exit_code == 0, result.output
    assert_same_runs(read_runs(path), read_runs(finished), "resumed after the flip")
    with fastrank.open(path) as results:
        assert results.damaged() == []


def _bad_sweep_json(f: h5py.File) -> None:
    f.attrs["sweep"] = "not json {"


def _sweep_not_a_dict(f: h5py.File) -> None:
    f.attrs["sweep"] = "[1, 2]"


def _failure_not_utf8(f: h5py.File) -> None:
    f["failure"][0] = b"\xff\xfe not UTF-8"


def _run_group_gone(f: h5py.File) -> None:
    del f["runs/00007"]


def _run_attribute_gone(f: h5py.File) -> None:
    del f["runs/00003"].attrs["expected_rows"]


FORMAT2 = Path(__file__).parent / "data" / "format2.h5"


@pytest.mark.parametrize("source, edit, words", [
    ("finished", _bad_sweep_json, "its sweep attribute does not read back (JSONDecodeError: "),
    ("finished", _sweep_not_a_dict, "its sweep attribute does not read back (TypeError: "),
    ("finished", _failure_not_utf8, "its run status does not read back (UnicodeDecodeError: "),
    ("format2", _run_group_gone, "it holds 7 runs, its sweep 8"),
    ("format2", _run_attribute_gone, "its layout does not read back (KeyError: "),
])
def test_a_resume_refuses_damaged_metadata_in_one_line(finished, tmp_path, source, edit,
                                                        words):
    """What the layout check cannot see, the resume refuses as it reads it: a sweep
    attribute that is not a sweep's JSON, run status that does not decode, a format-2
    file whose runs are not its sweep's. One line naming the file as damaged; the file
    byte for byte as it was, no staging or lock file left, and the lock free again."""
    from fastrank.lock import writer_alive

    path = tmp_path / "r.h5"
    shutil.copyfile(finished if source == "finished" else FORMAT2, path)
    with h5py.File(path, "r+") as f:
        edit(f)
    before = sha256(path)
    with pytest.raises(DamagedFile) as refused:
        Writer.resume(path)
    message = str(refused.value)
    assert message.startswith(f"{path} is damaged: {words}") and "\n" not in message, message
    assert sha256(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.h5"]
    assert not writer_alive(path)
