#!/usr/bin/env bash
# The GPU check, in one script: the QLoRA benchmark against TRL, then a user's run end to end
# (train with its reference precompute and evaluation, re-evaluate, generate on 32 AlpacaEval
# instructions, judge against AlpacaEval's published baseline answers), then notebook 03 headless
# on its GPU branch. Each stage's wall time and peak memory go to $OUT/stages.jsonl, and a
# summary to $OUT/gpu_check.md (with the benchmark's table, $OUT/gpu_qlora.md, and its JSON).
#
#   bash scripts/gpu_check.sh           # on a machine with one CUDA GPU (no hub needed)
#   bash scripts/gpu_check.sh --tiny    # the same code on a CPU at small shapes (a test runs it)
#
# Environment: OUT (default runs/gpu_check), PYTHON (default python3), SHARED_DATA (the folder with
# alpaca-eval-gpt4-1106-preview-outputs.json.gz; default ../shared/data).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TINY=0
[[ "${1:-}" == "--tiny" ]] && TINY=1
OUT=$(mkdir -p "${OUT:-runs/gpu_check}" && cd "${OUT:-runs/gpu_check}" && pwd)
PY=${PYTHON:-python3}
SHARED_DATA=${SHARED_DATA:-$ROOT/../shared/data}
ALPACA="$SHARED_DATA/alpaca-eval-gpt4-1106-preview-outputs.json.gz"
[[ -f "$ALPACA" ]] || { echo "gpu_check: $ALPACA is missing (set SHARED_DATA)"; exit 2; }
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
STAGES="$OUT/stages.jsonl"
: > "$STAGES"
stage() { local name=$1; shift; "$PY" "$ROOT/bench/stage.py" "$STAGES" "$name" -- "$@"; }

if (( TINY )); then
  bench=(--tiny --steps 2 --batches 1,2); rows=64; pairs=16; new_tokens=8; prompts=8; max_length=512
else
  bench=(--snapshot); rows=256; pairs=64; new_tokens=256; prompts=32; max_length=1024
fi

echo "== 1. benchmark: the kit's trainer vs TRL's DPOTrainer"
t=$SECONDS
"$PY" "$ROOT/bench/gpu_qlora.py" "${bench[@]}" --out "$OUT/gpu_qlora"
echo "{\"stage\": \"benchmark\", \"rc\": 0, \"seconds\": $((SECONDS - t))}" >> "$STAGES"

echo "== 2. a user's run: the Qwen2.5-0.5B shape (random weights) on the real UltraFeedback sample"
"$PY" "$ROOT/bench/local_models.py" "$WORK/models" $( (( TINY )) && echo --tiny )
cat > "$WORK/run.yaml" <<EOF
preset: mixdpo_paper
model: {name_or_path: $WORK/models/policy, mode: qlora, lora_r: 16, lora_alpha: 32}
data: {source: ultrafeedback-sample, eval_source: ultrafeedback-sample, max_rows: $rows, max_length: $max_length,
       max_prompt_length: 512}
train: {learning_rate: 5.0e-5, per_device_train_batch_size: 4, gradient_accumulation_steps: 1, logging_steps: 5,
        save_steps: 100000, cache_dir: $WORK/cache}
eval: {batch_size: 8, max_pairs: $pairs, max_new_tokens: $new_tokens, n_generations: 2, reward_prompts: 0}
EOF
stage train train --config "$WORK/run.yaml" --out "$WORK/run"
stage evaluate evaluate --run "$WORK/run"
stage generate generate --run "$WORK/run" --prompts "$ALPACA" --max-prompts "$prompts" \
  --max-new-tokens "$new_tokens" --out "$WORK/answers/policy.json"
stage judge judge --a "$WORK/answers/policy.json" --b "$ALPACA" --reward-model "$WORK/models/reward" \
  --out "$WORK/judge" --cache-dir "$WORK/cache/judge" --bootstrap 200

mkdir -p "$OUT/run"  # what the run and the judge wrote, small files only
cp "$WORK/run/summary.json" "$WORK/run/data_report.json" "$WORK/judge/judgement.json" "$OUT/run/"

echo "== 3. notebook 03 on its GPU branch"
(( TINY )) && export MIXDPO_KIT_GPU_BRANCH=1  # the branch's code on a CPU
MIXDPO_KIT_MODEL="$WORK/models/policy" MIXDPO_KIT_DATA=ultrafeedback-sample MIXDPO_KIT_MAX_ROWS=$rows \
MIXDPO_KIT_PROMPTS="$ALPACA" MIXDPO_KIT_MAX_PROMPTS=$prompts MIXDPO_KIT_REWARD_MODEL="$WORK/models/reward" \
MIXDPO_KIT_MAX_NEW_TOKENS=$new_tokens MIXDPO_KIT_BLOCKING_RUNS=1 \
  "$PY" "$ROOT/bench/run_notebook.py" "$ROOT/notebooks/03_train_qlora.ipynb" "$WORK/nb" "$STAGES"

"$PY" - "$OUT" "$SECONDS" <<'EOF'
import json, sys
from pathlib import Path
out, total = Path(sys.argv[1]), float(sys.argv[2])
stages = [json.loads(line) for line in (out / "stages.jsonl").read_text().splitlines()]
lines = [f"# GPU check: {total:.0f} s in all", "", "| stage | exit | seconds | peak GiB | inside it |", "|---|---|---|---|---|"]
for s in stages:
    parts = "; ".join(f"{k} {p['seconds']:.1f} s, {p['peak_gib']:.2f} GiB" for k, p in s.get("parts", {}).items())
    peak = f"{s['peak_gib']:.2f} ({s['memory']})" if "peak_gib" in s else ""
    lines.append(f"| {s['stage']} | {s['rc']} | {s['seconds']:.1f} | {peak} | {parts} |")
bench = out / "gpu_qlora.md"
text = "\n".join(lines) + "\n\n" + (bench.read_text() if bench.exists() else "")
(out / "gpu_check.md").write_text(text)
print(text)
sys.exit(1 if any(s["rc"] for s in stages) else 0)
EOF
