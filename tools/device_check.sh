#!/usr/bin/env bash
# The device checks of issue 19 (item 15) in one run of at most 8 minutes on one H100: CUDA training
# steps without host syncs, asynchronous range checks, exact resume, every precision and sampler, then
# benchmarks/train.py on CUDA (plain loop, Trainer fp32, Trainer defaults, Trainer with bf16 +
# channels_last + torch.compile), the unit tests on CUDA, every smoke-profile notebook on CUDA, and
# chapter 2 in the gpu profile with the time that is left (tools/device_check.py lists the stages).
#
#   tools/device_check.sh --fetch-wheels   # HERE, with internet: the wheels the GPU machine lacks -> .whl/
#   tools/device_check.sh                  # THERE: writes $OUT/device_check.json, stages.log, the log, and
#                                          # benchmark/train.json; copy them to benchmarks/results/ after
#   tools/device_check.sh --quick          # tiny sizes (tests/test_device_check.py runs it on the CPU)
#
# What it needs there: python3 with torch (CUDA), accelerate, pytest, pytest-xdist and the packages of
# /work/.library/device/KINDS.md, which the GPU image has; nothing is downloaded there (it has no
# network). The packages it lacks (diffusers, datasets, mlxtend, ipywidgets, and nbval with the
# Jupyter kernel stack for the notebooks; list below) travel as wheels in .whl/ (git-ignored, about
# 26 MB): fetch them here with --fetch-wheels (the versions of this checkout's .venv, for CPython 3.12
# on x86-64), then run it there with the device tool, naming .whl in carry:
#   run(command="tools/device_check.sh", carry=[".whl"], timeout_s=560)
# The wheels are installed there offline into /tmp/site. The working tree's ddpm_lib is used through
# PYTHONPATH (no install). Without the wheels the stages that need them fail or are skipped and say so.
# Exit status: 0 when no stage failed, 1 when one did, 2 when the set-up failed.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
BEGAN=$SECONDS
BUDGET=440  # seconds for all of it, set-up included; with the 40 s of grace below, at most 8 minutes
WHEELS="diffusers datasets mlxtend ipywidgets widgetsnbextension jupyterlab_widgets nbval nbformat
  fastjsonschema jsonschema jsonschema-specifications referencing rpds-py ipykernel comm debugpy ipython
  ipython_pygments_lexers jedi parso matplotlib-inline pexpect ptyprocess prompt_toolkit wcwidth stack_data
  asttokens executing pure_eval jupyter_client jupyter_core platformdirs nest_asyncio pyzmq tornado traitlets
  dill multiprocess importlib_metadata tzdata"
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && PY=.venv/bin/python

if [ "${1:-}" = "--fetch-wheels" ]; then
  grep -qx '/.whl/' .git/info/exclude 2>/dev/null || grep -qx '/.whl/' .gitignore || echo /.whl/ >>.git/info/exclude
  mkdir -p .whl
  specs=""
  for name in $WHEELS; do
    version=$("$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$name" 2>/dev/null)
    specs="$specs $name${version:+==$version}"
  done
  echo "fetching into .whl/ for CPython 3.12, x86-64:$specs"
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_26_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    --platform manylinux_2_5_x86_64 -d .whl $specs || { echo "device_check: FAILED to fetch the wheels"; exit 2; }
  echo "device_check: $(ls .whl/*.whl | wc -l) wheels, $(du -sh .whl | cut -f1), in .whl/"
  exit 0
fi

OUT="${OUT:-runs/device_check}"
mkdir -p "$OUT"
LOG="$OUT/device_check.log"
{
  echo "device_check: $(date -u +%FT%TZ) on $(hostname); python: $PY"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  missing() {  # what the wheels bring; pytest-xdist (on the GPU image) only speeds the tests up
    "$PY" -c "import importlib.util as u; print(' '.join(n for n in ('diffusers', 'datasets', 'mlxtend', \
'ipywidgets', 'nbval', 'ipykernel', 'nbformat') if u.find_spec(n) is None))"
  }
  # Installed only where something is missing: never over a working environment (this checkout's
  # .venv), and not again in a nested run (the unit tests run tests/test_device_check.py), which
  # would replace files that the running test workers import.
  lacking=$(missing)
  if [ -n "$lacking" ] && [ -z "${DDPM_DEVICE_CHECK_SITE:-}" ] && compgen -G ".whl/*.whl" >/dev/null; then
    echo "missing here: $lacking; installing the carried wheels in .whl/ into /tmp/site (offline)"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
      || { echo "device_check: FAILED to install the wheels in .whl/"; exit 2; }
    export DDPM_DEVICE_CHECK_SITE=/tmp/site PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
  fi
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 CUBLAS_WORKSPACE_CONFIG=:4096:8
  if ! "$PY" -c "import torch, accelerate, ddpm_lib" ; then
    echo "device_check: FAILED: cannot import torch, accelerate and ddpm_lib with $PY (see above);"
    echo "carry the missing packages as wheels in .whl/ (tools/device_check.sh --fetch-wheels) and run again."
    exit 2
  fi
  lacking=$(missing)
  [ -n "$lacking" ] && echo "device_check: still missing: $lacking (fetch them with --fetch-wheels, carry .whl;" \
    "the stages that need them fail or are skipped and say so)"
  "$PY" -c "import xdist" 2>/dev/null || echo "device_check: no pytest-xdist here: the tests run one at a time"
  left=$((BUDGET - (SECONDS - BEGAN)))
  timeout $((left + 40)) "$PY" tools/device_check.py --out "$OUT" --budget "$left" "$@"
  status=$?
  [ $status -eq 124 ] && echo "device_check: FAILED: stopped after $((left + 40)) s (the script is sized for 8 minutes)"
  echo "device_check: done in $((SECONDS - BEGAN)) s"
  exit $status
} 2>&1 | tee "$LOG"
exit "${PIPESTATUS[0]}"
