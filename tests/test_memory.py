"""The memory estimator against measured reality: a real training step's peak RSS on the CPU at
two shapes where the step (not Python and torch) dominates, plus Llama-3-8B's parameter count."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from mixdpo_kit.memory import GIB, ModelShape, estimate_gpu_memory

WORKER = Path(__file__).with_name("memory_worker.py")
# Llama-3-8B's published shape.
LLAMA3_8B = ModelShape(hidden=4096, layers=32, intermediate=14336, vocab=128256, heads=32, kv_heads=8)
TOLERANCE = 0.25  # the estimate may be off by a quarter of the measured step memory, either way


def test_llama3_8b_parameter_count():
    linear = LLAMA3_8B.layers * LLAMA3_8B.linear_params_per_layer()
    assert (linear + LLAMA3_8B.embedding_params()) / 1e9 == pytest.approx(8.03, abs=0.01)


@pytest.mark.parametrize("hidden,layers,vocab,seq_len,pairs", [(256, 2, 32000, 256, 4), (128, 2, 16000, 512, 2)])
def test_estimate_matches_a_measured_step(hidden, layers, vocab, seq_len, pairs):
    res = subprocess.run([sys.executable, str(WORKER), *map(str, (hidden, layers, vocab, seq_len, pairs))],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    measured = json.loads(res.stdout.strip().splitlines()[-1])
    step_mib = measured["peak_mib"] - measured["baseline_mib"]  # the model and the step, not Python + torch
    shape = ModelShape(hidden, layers, 2 * hidden, vocab, heads=4, kv_heads=2)
    est = estimate_gpu_memory(shape, "lora", seq_len=seq_len, batch_size=pairs, gradient_checkpointing=False,
                              weight_bytes=4, device="cpu")
    est_mib = est["total"] * GIB / 2**20
    assert abs(est_mib - step_mib) <= TOLERANCE * step_mib, (est_mib, step_mib, est)
    assert "cuda_context" not in est and est["logits"] > est["weights"]  # at these shapes logits dominate
