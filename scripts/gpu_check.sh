#!/usr/bin/env bash
# The GPU check in one command, for a borrowed GPU machine with no internet: installs the wheels
# that scripts/offline_wheels.sh put in .gpu/wheels (if any), then runs bench/gpu_check.py, which
# runs each stage while its estimate fits in the budget (default 420 s, counted from this
# script's start, the install included) and writes OUT/gpu_check.json, .md and .log as each stage
# finishes. See docs/benchmarks.md ("The GPU check") for the stages and their expected times.
#
#   bash scripts/gpu_check.sh                     # on a machine with one CUDA GPU
#   bash scripts/gpu_check.sh --only notebook_03  # a second run: only the stages the first skipped
#   bash scripts/gpu_check.sh --tiny              # the same stages at small shapes on a CPU (a test runs it)
#
# Environment: OUT (default runs/gpu_check), PYTHON (default python3), WHEELS (default .gpu/wheels),
# SHARED_DATA (the folder holding alpaca-eval-gpt4-1106-preview-outputs.json.gz; default ../shared/data,
# else .gpu/data). Other arguments go to bench/gpu_check.py (--budget, --only, --estimate, --list).
set -euo pipefail
STARTED=$(date +%s.%N)
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-runs/gpu_check}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
WHEELS=${WHEELS:-$ROOT/.gpu/wheels}
if [[ -z "${SHARED_DATA:-}" ]]; then
  SHARED_DATA=$ROOT/../shared/data
  [[ -d "$SHARED_DATA" ]] || SHARED_DATA=$ROOT/.gpu/data
fi
export SHARED_DATA PYTHONUNBUFFERED=1
if compgen -G "$WHEELS/*.whl" >/dev/null; then
  SITE=${SITE:-/tmp/mixdpo-kit-site}
  # A failed install is not the end: the check's first step imports everything and records what is missing.
  if "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl; then
    echo "installed $(ls "$WHEELS"/*.whl | wc -l) wheels into $SITE"
  else
    echo "gpu_check: installing the wheels in $WHEELS failed (see above)"
  fi
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
INSTALLED=$(date +%s.%N)
exec "$PY" "$ROOT/bench/gpu_check.py" --out "$OUT" --started "$STARTED" \
  --install-seconds "$(awk "BEGIN {print $INSTALLED - $STARTED}")" "$@"
