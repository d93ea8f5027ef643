"""The GPU benchmark keeps working: its tiny shape runs the same code (the kit's trainer as
``mixdpo-kit train`` builds it, TRL's DPOTrainer at its best setting and its default, the fp16
path) on a CPU and writes the report the GPU run would."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_qlora_benchmark_runs_tiny_on_cpu(tmp_path):
    out = tmp_path / "gpu_qlora"
    res = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_qlora.py"), "--tiny", "--steps", "2",
                          "--batches", "1,2", "--out", str(out)], capture_output=True, text=True, timeout=900,
                         cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads(out.with_suffix(".json").read_text())
    rows = report["shapes"]["tiny"]
    assert set(rows) == {"batch 1", "batch 2"}
    configs = rows["batch 2"]["configs"]
    assert set(configs) == {"kit_dpo", "kit_mixdpo", "trl_best", "trl_default"}
    for name, r in configs.items():
        assert "error" not in r, (name, r)
        assert r["timed_steps"] == 2 and r["tokens_per_step"] > 0 and r["pairs_per_s"] > 0
        # The tokens each side received: both send every pair's chosen and rejected sequence here
        # (prompt + response = 64 tokens each), padding excluded.
        assert r["tokens_per_step"] == 2 * 2 * report["seq_len"], (name, r["tokens_per_step"])
    assert configs["trl_best"]["precompute_s"] > 0 and configs["trl_default"]["precompute_s"] == 0
    assert configs["kit_dpo"]["precompute_s"] > 0
    assert configs["trl_best"]["speed_vs_trl_best"] == 1.0
    assert set(rows["batch 1"]["targets"]) == {"kit peak <= 0.9x TRL best", "kit DPO >= 1.0x TRL best pairs/s",
                                               "MixDPO 12% >= 1.15x TRL best pairs/s"}
    fp16 = report["fp16_vs_bf16"]
    assert fp16["finite"] and fp16["close"], fp16
    assert "| tiny | batch 2 | kit_mixdpo |" in out.with_suffix(".md").read_text()
