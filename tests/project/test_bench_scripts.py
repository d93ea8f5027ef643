"""The GPU check keeps working: ``scripts/gpu_check.sh --tiny`` runs the same code on a CPU at small
shapes — the benchmark (the kit's trainer as ``mixdpo-kit train`` builds it, TRL's DPOTrainer at
its best setting and its default, the fp16 path), a user's run end to end on the real sample and
AlpacaEval's published files, and notebook 03 on its GPU branch — and writes the reports the GPU
run would."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data"


def test_gpu_check_runs_tiny_on_cpu(tmp_path):
    if not (SHARED / "alpaca-eval-gpt4-1106-preview-outputs.json.gz").exists():
        (pytest.fail if os.environ.get("CI") else pytest.skip)(f"{SHARED} is missing")
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable, "SHARED_DATA": str(SHARED)}
    res = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--tiny"], capture_output=True, text=True,
                         timeout=1200, cwd=tmp_path, env=env)
    assert res.returncode == 0, (res.stdout[-3000:], res.stderr[-3000:])

    report = json.loads((out / "gpu_qlora.json").read_text())
    rows = report["shapes"]["tiny"]
    assert set(rows) == {"batch 1", "batch 2"}
    configs = rows["batch 2"]["configs"]
    assert set(configs) == {"kit_dpo", "kit_dpo_separate", "kit_mixdpo", "trl_best", "trl_default"}
    for name, r in configs.items():
        assert "error" not in r, (name, r)
        assert r["timed_steps"] == 2 and r["pairs_per_s"] > 0
        # Tokens as each side's collator produced them: every pair sends chosen and rejected here
        # (prompt + response = 64 tokens each), padding excluded; the kit sends each prompt once.
        shared_prompts = 2 * report["prompt_tokens"] if name in ("kit_dpo", "kit_mixdpo") else 0
        assert r["tokens_per_step"] == 2 * 2 * report["seq_len"] - shared_prompts, (name, r["tokens_per_step"])
    assert configs["trl_best"]["precompute_s"] > 0 and configs["trl_default"]["precompute_s"] == 0
    assert configs["kit_dpo"]["precompute_s"] > 0 and configs["trl_best"]["speed_vs_trl_best"] == 1.0
    assert set(rows["batch 1"]["targets"]) == {"kit peak <= 0.9x TRL best", "kit DPO >= 1.0x TRL best pairs/s",
                                               "MixDPO 12% >= 1.15x TRL best pairs/s"}
    assert report["fp16_vs_bf16"]["finite"] and report["fp16_vs_bf16"]["close"], report["fp16_vs_bf16"]

    stages = {s["stage"]: s for s in map(json.loads, (out / "stages.jsonl").read_text().splitlines())}
    assert set(stages) == {"benchmark", "train", "evaluate", "generate", "judge", "notebook 03_train_qlora"}
    assert all(s["rc"] == 0 for s in stages.values()), stages
    assert {"model loading", "reference precompute", "training", "evaluation"} <= set(stages["train"]["parts"])
    assert all(s["peak_gib"] > 0 for name, s in stages.items() if name != "benchmark")
    judged = json.loads((out / "run" / "judgement.json").read_text())
    assert judged["left_out"]["matched"] == judged["prompts"] == 8 and judged["left_out"]["only_in_a"] == 0
    notebook = stages["notebook 03_train_qlora"]
    assert not notebook["errors"] and any("MIXDPO_KIT_GPU_BRANCH=1" in line for line in notebook["results"])
    assert any("judged by" in line for line in notebook["results"]), notebook["results"]
    summary = (out / "gpu_check.md").read_text()
    assert "| train | 0 |" in summary and "| tiny | batch 2 | kit_mixdpo |" in summary
