"""The GPU check script keeps working: its tiny configuration runs the same code path on a CPU."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_qlora_script_runs_tiny_on_cpu(tmp_path):
    out = tmp_path / "gpu.json"
    res = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_qlora.py"), "--tiny", "--steps", "1",
                          "--batches", "1,2", "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = json.loads(out.read_text())["tiny"]
    assert set(rows) == {"batch 1", "batch 2"}
    row = rows["batch 2"]
    assert row["kit_mixdpo"]["tokens_per_s"] > 0 and row["trl_dpo"]["tokens_per_s"] > 0
    assert row["pairs_per_s_ratio_vs_trl"] > 0 and row["estimate_gib"] > 0
