#!/usr/bin/env bash
# The fast tests (losses and routing, the trainer on the tiny model, one CLI run) in a second
# environment, .venv-lowest, that holds the lowest version of every dependency pyproject.toml
# allows — so each ">=" bound there is one that has been tried. Usage: bash scripts/test_lowest.sh
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv-lowest
python3 -m venv "$venv"
py="$venv/bin/python"
$py -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
pins=$(mktemp)
$py scripts/lowest_constraints.py test > "$pins"
# TRL's lowest release needs a newer datasets than the kit's lowest: it is tried on its own below, with
# the TRL-shaped trainer (MixDPOConfig, MixDPOTrainer), whose test runs a TRL script too.
grep -v '^trl==' "$pins" > "$pins.runtime"
# torch first, pinned, so no other requirement pulls a newer build (torch's lowest, 2.11, exists only
# as a CUDA build on PyPI; it runs on the CPU too).
$py -m pip install --quiet "$(grep '^torch==' "$pins")"
$py -m pip install --quiet -c "$pins.runtime" -e . pytest
$py -m pip list --format=freeze 2>/dev/null | grep -iE '^(torch|transformers|peft|datasets|accelerate|bitsandbytes|plotly|ipywidgets|numpy)=='
$py -m pytest -q -p no:cacheprovider tests/objectives/test_losses.py tests/objectives/test_objectives.py \
  tests/training/test_trainer.py tests/data/test_loading.py tests/data/test_tokenization.py \
  tests/modeling/test_logprobs.py::test_padding_does_not_change_sequence_logps tests/interface/test_cli_flags.py \
  tests/interface/test_cli.py::test_train_and_evaluate_from_yaml tests/data/test_prompt_sets.py \
  tests/evaluation/test_generation.py tests/evaluation/test_judge.py tests/modeling/test_reward_model.py \
  "tests/modeling/test_model.py::test_a_saved_tokenizer_loads_back_as_saved_for_every_architecture" \
  tests/data/test_formats.py
$py -m pip install --quiet "$(grep '^trl==' "$pins")"
$py -m pip list --format=freeze 2>/dev/null | grep -iE '^(trl|datasets|accelerate)=='
$py -m pytest -q -p no:cacheprovider tests/objectives/test_trl_oracle.py tests/training/test_trl_style.py
