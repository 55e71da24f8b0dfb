#!/usr/bin/env python3
"""Build the wheel and the sdist, install the wheel (not editable) into a fresh virtual
environment whose site-packages is read-only, and run the README's sweep and test
command with it. Prints each step with its time; exits 1 at the first broken promise.

    python3 tools/check_wheel.py                        # then the whole test suite
    python3 tools/check_wheel.py tests/test_cli.py -x   # pytest with these arguments

Read-only as root takes more than chmod: the runs drop the capabilities with which root
writes anyway (setpriv). The tests run from a folder outside the checkout: from its root,
``python -m fastrank`` (as tests start it) imports the checkout's fastrank/ folder, which
lacks the kernels, instead of the installed package (pytest itself puts tests/ on the
path, not the root, so the test modules import the installed one anyway). Needs
``python3 -m venv``, setpriv when root, and the package index (build, the dependencies).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: Files numba and Python write beside the sources, which must ship in neither archive.
CACHES = (".pyc", ".pyo", ".nbi", ".nbc")
#: The trees of the checkout that install as fastrank's subpackages (pyproject.toml).
PACKAGED = {"fastrank": "fastrank", "kernels": "fastrank/kernels", "bench": "fastrank/bench",
            "examples": "fastrank/examples"}
#: What lets root write where the permissions say no.
AS_ROOT = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner"]


class Broken(Exception):
    """A promise the check found broken."""


def step(title: str, cmd: list, capture: bool = True, **kw) -> subprocess.CompletedProcess:
    """Run ``cmd``, print its title and time; Broken unless it exits 0."""
    start = time.monotonic()
    proc = subprocess.run([str(c) for c in cmd], text=True, capture_output=capture, **kw)
    print(f"  {title}: {time.monotonic() - start:.1f} s", flush=True)
    if proc.returncode:
        out = (proc.stdout or "")[-3000:] + (proc.stderr or "")[-3000:] if capture else ""
        raise Broken(f"{title} exited {proc.returncode}: {' '.join(map(str, cmd))}\n{out}")
    return proc


def expect(condition: bool, what: str) -> None:
    if not condition:
        raise Broken(what)
    print(f"  ok: {what}")


def tracked() -> list[str]:
    """The checkout's tracked files that exist in the working tree."""
    out = subprocess.run(["git", "-C", ROOT, "ls-files"], text=True, capture_output=True,
                         check=True).stdout
    return [p for p in out.splitlines() if (ROOT / p).is_file()]


def check_archives(dist: Path) -> Path:
    """The wheel holds every packaged file and the sdist the source tree, neither a cache
    file; returns the wheel."""
    (wheel,), (sdist,) = dist.glob("*.whl"), dist.glob("*.tar.gz")
    files = tracked()
    in_wheel = set(zipfile.ZipFile(wheel).namelist())
    wanted = {PACKAGED[top] + path[len(top):] for path in files
              for top in [path.split("/")[0]] if top in PACKAGED
              and not path.startswith("bench/results/")}
    expect(not wanted - in_wheel, f"{wheel.name} holds the {len(wanted)} packaged files "
           f"(kernels, CUDA sources, examples, bench){sorted(wanted - in_wheel)[:5] or ''}")
    with tarfile.open(sdist) as tar:
        top = tar.getnames()[0].split("/")[0]
        in_sdist = {name[len(top) + 1:] for name in tar.getnames()}
    source = {p for p in files if not p.startswith((".ci/", ".git"))}
    expect(not source - in_sdist, f"{sdist.name} holds the {len(source)} files of the "
           f"source tree (tests, docs, tools){sorted(source - in_sdist)[:5] or ''}")
    for name, members in ((wheel.name, in_wheel), (sdist.name, in_sdist)):
        cached = sorted(m for m in members if m.endswith(CACHES) or "__pycache__" in m)
        expect(not cached, f"{name} holds no cache file{cached[:3] or ''}")
    return wheel


def main(pytest_args: list[str]) -> None:
    work = Path(tempfile.mkdtemp(prefix="check-wheel-"))
    start = time.monotonic()
    try:
        run_checks(work, pytest_args)
    except Broken as exc:
        print(f"check_wheel: BROKEN: {exc}\n(kept {work})", file=sys.stderr)
        sys.exit(1)
    finally:
        print(f"check_wheel: {time.monotonic() - start:.0f} s in all")
    subprocess.run(["chmod", "-R", "u+w", work], check=True)
    shutil.rmtree(work)


def run_checks(work: Path, pytest_args: list[str]) -> None:
    print("1. python -m build (sdist, then the wheel from the sdist)")
    builder = work / "build-venv"
    step("venv with build", [sys.executable, "-m", "venv", builder])
    step("pip install build", [builder / "bin/pip", "install", "-q", "build"])
    step("python -m build", [builder / "bin/python", "-m", "build", "--outdir", work / "dist",
                             ROOT])
    wheel = check_archives(work / "dist")

    print("2. the wheel in a fresh venv, site-packages read-only")
    venv = work / "venv"
    step("venv", [sys.executable, "-m", "venv", venv])
    step("pip install the wheel", [venv / "bin/pip", "install", "-q", wheel])
    site = Path(step("site-packages", [venv / "bin/python", "-c",
                                       "import sysconfig; print(sysconfig.get_path('purelib'))"]
                     ).stdout.strip())
    as_user = AS_ROOT if os.geteuid() == 0 else []
    if as_user and not shutil.which("setpriv"):
        raise Broken("running as root without setpriv: site-packages cannot be made read-only")

    def read_only(folder: Path) -> None:
        subprocess.run(["chmod", "-R", "a-w", folder], check=True)
        probe = subprocess.run([*as_user, "touch", folder / "probe"], capture_output=True)
        expect(probe.returncode != 0, f"{folder} is read-only to the runs")

    read_only(site)
    home, tmp = work / "home", work / "tmp"
    home.mkdir(), tmp.mkdir()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("NUMBA_", "PYTHON", "XDG_", "VIRTUAL_ENV"))}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", HOME=str(home),
               TMPDIR=str(tmp))

    def sweep(name: str, env: dict) -> tuple[str, str]:
        """The README's default sweep twice in a new folder: its two stderrs."""
        cwd = work / name
        cwd.mkdir()
        first = step(f"fastrank sweep ({name}, first)", [*as_user, "fastrank", "sweep"],
                     cwd=cwd, env=env)
        expect((cwd / "fastrank-sweep.h5").is_file(), "the sweep wrote fastrank-sweep.h5")
        again = step(f"fastrank sweep ({name}, again)", [*as_user, "fastrank", "sweep", "-o",
                                                         "again.h5"], cwd=cwd, env=env)
        expect("compiling" not in again.stderr, "the second sweep loads the cached kernels")
        return first.stderr, again.stderr

    first, _ = sweep("home-writable", env)
    user_cache = home / ".cache" / "numba"
    expect(f"kept in {user_cache}: the install folder is read-only" in first,
           f"the first sweep says once where the kernels are cached: "
           f"{first.splitlines()[0] if first else ''!r}")
    expect(any(user_cache.rglob("*.nbi")), f"numba's cache is in {user_cache}")

    print("3. the same, the home read-only too (a container's)")
    rohome = work / "rohome"
    rohome.mkdir()
    read_only(rohome)
    first, _ = sweep("home-read-only", {**env, "HOME": str(rohome)})
    private = tmp / f"fastrank-numba-{os.geteuid()}"
    expect(f"kept in {private}: the install folder and {rohome}" in first,
           f"the first sweep says so: {first.splitlines()[0] if first else ''!r}")
    mine = work / "mine"
    placed = step("import the kernels with NUMBA_CACHE_DIR set",
                  [*as_user, "python", "-c", "import fastrank.kernels.cpu as k, numba; "
                   "print(repr(k.CACHE_NOTE), numba.config.CACHE_DIR)"],
                  cwd=work, env={**env, "HOME": str(rohome), "NUMBA_CACHE_DIR": str(mine)})
    expect(placed.stdout.split() == ["''", str(mine)], "a user's NUMBA_CACHE_DIR wins")

    print("4. the README's test command against the installed wheel")
    subprocess.run(["chmod", "-R", "u+w", site], check=True)
    step("pip install the wheel's test extra", [venv / "bin/pip", "install", "-q",
                                                f"{wheel}[test]"])
    read_only(site)
    cwd = work / "tests"
    cwd.mkdir()
    args = [str(ROOT / a) if a.split("/")[0] == "tests" else a for a in pytest_args]
    if not any(a.startswith(str(ROOT)) for a in args):
        args.append(ROOT / "tests")
    step("pytest", [*as_user, "pytest", "-p", "no:cacheprovider", *args], capture=False,
         cwd=cwd, env=env)


if __name__ == "__main__":
    main(sys.argv[1:])
