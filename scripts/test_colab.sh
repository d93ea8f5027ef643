#!/usr/bin/env bash
# The notebooks as a Colab user runs them: a third environment, .venv-colab, pinned to the versions
# Colab's GPU runtime ships (scripts/colab_constraints.txt), where installing the kit must upgrade
# nothing; then every notebook runs headless on the built-in task, with the widget and figure tests.
# Usage: bash scripts/test_colab.sh
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv-colab
python3 -m venv "$venv"
py="$venv/bin/python"
$py -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
pins=scripts/colab_constraints.txt
# Colab's torch is a CUDA build (there is no CPU wheel of it); it runs on the CPU as well.
$py -m pip install --quiet -r "$pins"
before=$($py -m pip list --format=freeze 2>/dev/null | sort)
# What the notebooks' setup cell does on Colab (no constraints there): install the kit and
# bitsandbytes. The requirement ranges must admit Colab's versions, so nothing else changes.
$py -m pip install --quiet -e . bitsandbytes
after=$($py -m pip list --format=freeze 2>/dev/null | sort)
changed=$(comm -13 <(echo "$before") <(echo "$after") | grep -iE "^($(grep -oE '^[a-z]+' "$pins" | paste -sd'|'))==" || true)
if [ -n "$changed" ]; then echo "installing the kit changed Colab's packages: $changed"; exit 1; fi
$py -m pip install --quiet -c "$pins" pytest nbclient nbformat ipykernel
$py -m pip list --format=freeze 2>/dev/null | grep -iE "^($(grep -oE '^[a-z]+' "$pins" | paste -sd'|'))=="
$py -m pytest -q -p no:cacheprovider tests/interface/test_notebooks.py tests/interface/test_widgets.py \
  tests/reports/test_viz.py tests/modeling/test_cost.py
