#!/usr/bin/env bash
# What scripts/gpu_check.sh needs on a Linux x86-64 GPU machine without internet access whose
# Python (3.12 by default) already has torch, transformers, accelerate, pandas and pyarrow: the
# wheels of the rest of what the kit and the check use (the versions installed here, each without
# its dependencies; the list below is the closure of what such a machine lacks; peft travels too,
# so the kit's lower bound holds whatever the machine has) in DIR/wheels, and AlpacaEval's
# published answers in DIR/data (from SHARED_DATA, default ../shared/data).
#
#   bash scripts/offline_wheels.sh [DIR] [CUDA]   # DIR default .gpu (git ignores it); CUDA: the target torch's (130)
#   # then carry DIR with the working tree and run: bash scripts/gpu_check.sh (it installs them itself)
#
# bitsandbytes' wheel holds a CUDA library for every CUDA version (about 40 MiB); its copy here keeps
# the one the target's torch needs and the CPU one. Prints the size of DIR and of what travels with
# it (the tracked files), which must stay within the 64 MiB a GPU lease carries.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-.gpu}
CUDA=${2:-130}
SHARED_DATA=${SHARED_DATA:-../shared/data}
mkdir -p "$DIR/data"
cp "$SHARED_DATA/alpaca-eval-gpt4-1106-preview-outputs.json.gz" "$DIR/data/"
WHEEL_DIR=$DIR/wheels
PY=${PYTHON:-.venv/bin/python}
TARGET_PYTHON=${TARGET_PYTHON:-3.12}
NAMES="bitsandbytes peft trl datasets dill multiprocess plotly ipywidgets comm jupyterlab_widgets widgetsnbextension
ipython ipython_pygments_lexers jedi parso pexpect ptyprocess prompt_toolkit wcwidth stack_data asttokens executing
pure_eval traitlets matplotlib_inline nbclient nbformat fastjsonschema jsonschema jsonschema_specifications referencing
rpds_py jupyter_client jupyter_core platformdirs ipykernel debugpy nest_asyncio2 pyzmq tornado"
mkdir -p "$WHEEL_DIR"
pins=$("$PY" - $NAMES <<'EOF'
import importlib.metadata, sys
print(" ".join(f"{n}=={importlib.metadata.version(n)}" for n in sys.argv[1:]))
EOF
)
platforms=()
for n in 17 24 27 28 31 34; do platforms+=(--platform "manylinux_2_${n}_x86_64"); done
# shellcheck disable=SC2086
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$TARGET_PYTHON" --implementation cp \
  "${platforms[@]}" --platform manylinux2014_x86_64 -d "$WHEEL_DIR" $pins
wheel=$(ls "$WHEEL_DIR"/bitsandbytes-*.whl)
"$PY" - "$wheel" "$CUDA" <<'EOF'
import re, sys, zipfile
path, cuda = sys.argv[1], sys.argv[2]
keep = re.compile(rf"libbitsandbytes_(cpu|cuda{cuda})\.so$")
with zipfile.ZipFile(path) as src:
    items = [(i, src.read(i)) for i in src.infolist() if not i.filename.endswith(".so") or keep.search(i.filename)]
if not any(keep.search(i.filename) and "cuda" in i.filename for i, _ in items):
    sys.exit(f"{path} has no libbitsandbytes_cuda{cuda}.so")
with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as dst:
    for info, data in items:
        dst.writestr(info, data)
EOF
echo "$(ls "$WHEEL_DIR"/*.whl | wc -l) wheels; $DIR: $(du -sh "$DIR" | cut -f1); with the tracked files:" \
  "$(( ($(du -sb "$DIR" | cut -f1) + $(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1)) / 1048576 )) MiB (limit 64)"
