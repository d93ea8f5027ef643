#!/usr/bin/env bash
# Wheels for running scripts/gpu_check.sh on a Linux x86-64 GPU machine without internet access
# whose Python (3.12 by default) already has torch, transformers, peft, accelerate, pandas and
# pyarrow but not the rest of what the kit and the check use: the versions installed here, each
# without its dependencies (the list below is the closure of what such a machine lacks).
#
#   bash scripts/offline_wheels.sh DIR [CUDA]     # CUDA: the target torch's CUDA version (default 130)
#   # then, on that machine:
#   python3 -m pip install -q --no-index --no-deps --target SITE DIR/*.whl && export PYTHONPATH=SITE
#
# bitsandbytes' wheel holds a CUDA library for every CUDA version (about 40 MiB); its copy here keeps
# the one the target's torch needs and the CPU one. Prints the total size at the end.
set -euo pipefail
DIR=${1:?usage: offline_wheels.sh DIR [CUDA]}
CUDA=${2:-130}
PY=${PYTHON:-.venv/bin/python}
TARGET_PYTHON=${TARGET_PYTHON:-3.12}
NAMES="bitsandbytes trl datasets dill multiprocess plotly ipywidgets comm jupyterlab_widgets widgetsnbextension
ipython ipython_pygments_lexers jedi parso pexpect ptyprocess prompt_toolkit wcwidth stack_data asttokens executing
pure_eval traitlets matplotlib_inline nbclient nbformat fastjsonschema jsonschema jsonschema_specifications referencing
rpds_py jupyter_client jupyter_core platformdirs ipykernel debugpy nest_asyncio2 pyzmq tornado"
mkdir -p "$DIR"
pins=$("$PY" - $NAMES <<'EOF'
import importlib.metadata, sys
print(" ".join(f"{n}=={importlib.metadata.version(n)}" for n in sys.argv[1:]))
EOF
)
platforms=()
for n in 17 24 27 28 31 34; do platforms+=(--platform "manylinux_2_${n}_x86_64"); done
# shellcheck disable=SC2086
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$TARGET_PYTHON" --implementation cp \
  "${platforms[@]}" --platform manylinux2014_x86_64 -d "$DIR" $pins
wheel=$(ls "$DIR"/bitsandbytes-*.whl)
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
du -ch "$DIR"/*.whl | tail -1
