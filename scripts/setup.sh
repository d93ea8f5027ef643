#!/usr/bin/env bash
# Set up mixdpo-kit in ./.venv. Usage: bash scripts/setup.sh [EXTRAS]   (e.g. "dev" or "dev,notebooks")
# On a machine without an NVIDIA GPU, torch is installed first as the CPU build so that the
# package's plain "torch" requirement does not pull a multi-GB CUDA build. GPU machines keep
# whatever CUDA torch pip chooses (or the one already in the environment).
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
python3 -m venv .venv
py=.venv/bin/python
$py -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
if ! $py -c "import torch" >/dev/null 2>&1; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
    $py -m pip install --quiet torch
  else
    $py -m pip install --quiet --timeout 15 --retries 0 "torch==2.13.0" \
      --index-url https://download.pytorch.org/whl/cpu 2>/dev/null \
      || $py -m pip install --quiet "torch==2.13.0"
  fi
fi
if [ -n "$extras" ]; then
  $py -m pip install --quiet -e ".[${extras}]"
else
  $py -m pip install --quiet -e .
fi
$py -c "import mixdpo_kit, torch, transformers, peft, bitsandbytes, datasets; print('mixdpo-kit ready: torch', torch.__version__)"
