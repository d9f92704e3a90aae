#!/usr/bin/env bash
# The device checks of issue 19 (item 15) in one short run: CUDA training steps in every precision,
# channels_last, data on the device, no host sync per step, exact resume, every sampler, and
# benchmarks/train.py on the GPU. About 3-5 minutes on one H100 (at most 8, the limit it is sized to).
#
#   tools/device_check.sh            # writes $OUT/device_check.json and $OUT/device_check.log
#   tools/device_check.sh --quick    # tiny sizes (the CPU test runs the Python part this way)
#
# Nothing is downloaded or installed: the working tree's ddpm_lib is used through PYTHONPATH.
# Python packages the GPU image lacks (diffusers, for the benchmark) can travel as wheels in .whl/
# (see /work/.library/device/README.md); they are installed from there, offline, into /tmp/site.
# Exit status: 0 when no check failed, 1 when one did, 2 when ddpm_lib cannot be imported.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
OUT="${OUT:-runs/device_check}"
mkdir -p "$OUT"
LOG="$OUT/device_check.log"
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && PY=.venv/bin/python

{
  echo "device_check: $(date -u +%FT%TZ) on $(hostname); python: $PY"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  if compgen -G ".whl/*.whl" >/dev/null; then
    echo "installing the carried wheels in .whl/ into /tmp/site (offline)"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
      || { echo "device_check: FAILED to install the wheels in .whl/"; exit 2; }
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
  fi
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 CUBLAS_WORKSPACE_CONFIG=:4096:8
  if ! "$PY" -c "import torch, accelerate, ddpm_lib" ; then
    echo "device_check: FAILED: cannot import torch, accelerate and ddpm_lib with $PY (see above);"
    echo "carry the missing packages as wheels in .whl/ and run again."
    exit 2
  fi
  timeout 470 "$PY" tools/device_check.py --out "$OUT" "$@"
  status=$?
  [ $status -eq 124 ] && echo "device_check: FAILED: stopped after 470 s (the script is sized for 8 minutes)"
  exit $status
} 2>&1 | tee "$LOG"
exit "${PIPESTATUS[0]}"
