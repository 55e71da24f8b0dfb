#!/usr/bin/env bash
# fastrank on a GPU machine, in one go, from the project root: setup, `fastrank env`,
# the device half of tests/gpu, `fastrank sweep --depth 2000 --gpu`, `fastrank bench
# --gpu` (BENCH_ARGS, default quick with 2 repeats: ~130 s on an H100, most of it the
# torch script's float64 svdvals), then tools/gpu/check.py. Each step has its own
# timeout inside a total budget (BUDGET s, default 470); logs and summary.txt under
# $OUT. Dry run on a CPU: python tools/gpu/check.py --host.
O=${OUT:-/tmp/frsmoke}; mkdir -p "$O"; H=$(cd "$(dirname "$0")" && pwd); B=${BUDGET:-470}
S=$O/summary.txt; export PYTHONUNBUFFERED=1
step() { # name max-s log command
  local t=$((B - SECONDS)) s=$SECONDS; ((t > $2)) && t=$2
  ((t < 10)) && { echo "$1: SKIPPED (budget)" >>"$S"; return; }
  timeout -k 5 $t bash -c "$4" >>"$O/$3" 2>&1; echo "$1: rc=$? $((SECONDS - s))s (limit ${t}s)" >>"$S"; }
nvidia-smi >"$O/setup.log" 2>&1
CU=$(nvidia-smi 2>/dev/null | grep -o 'CUDA Version: [0-9]*' | grep -o '[0-9]*$')
((${CU:-12} >= 13)) && CU=13 || CU=12
if [ -z "$FORCE_PIP" ] && python3 -c 'import cupy' 2>/dev/null; then
  # no package index there: the image's CuPy, numba, h5py; no venv (CuPy finds its
  # libraries only in the running environment), no pip: the package as symlinks
  P=python3; D=/tmp/frsite/fastrank; mkdir -p $D; ln -sf "$PWD"/fastrank/* $D
  for x in kernels bench examples; do ln -sfn "$PWD/$x" $D/$x; done
else
  P=/tmp/frv/bin/python; python3 -m venv /tmp/frv >>"$O/setup.log" 2>&1
  step setup 300 setup.log "$P -m pip install -e '.[test,bench,gpu-cuda$CU]'"
fi
export PYTHONPATH=/tmp/frsite PYTHONSAFEPATH=1 NUMBA_CACHE_DIR=/tmp/frnumba; F="$P -m fastrank"
step env 30 setup.log "$F env"
step pytest ${PYTEST_S:-200} pytest.log "$P -m pytest tests/gpu -k cuda -q -p no:cacheprovider -rfEs --durations=8"
step sweep 60 sweep.log "$F sweep --depth 2000 --gpu -o /tmp/frsweep.h5 --overwrite && $F info /tmp/frsweep.h5"
step bench ${BENCH_S:-170} bench.log "$F bench --gpu ${BENCH_ARGS:---quick --repeats 2} --json $O/gpu.json"
export CHECK_BUDGET=$((B - SECONDS - 10))
step checks 300 checks.log "$P $H/check.py $O"
{ echo "== ${SECONDS}s, cuda$CU"; grep -m1 '^cuda' "$O/setup.log"
  grep -E '^(FAILED|ERROR) |passed|failed|skipped' "$O/pytest.log" | cut -c1-300 | tail -40
  tail -12 "$O/sweep.log" | cut -c1-200; tail -25 "$O/bench.log"
  grep -E '^(OK|FAIL|ERROR|SKIP|FATAL) |^CHECKS' "$O/checks.log" | cut -c1-700; } >>"$S"
cat "$S"
