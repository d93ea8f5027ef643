"""The memory estimator against measured reality: a real training step's peak RSS on the CPU at
three shapes where the step (not Python and torch) dominates, one at Llama-3's vocabulary, plus
the published models' parameter counts."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mixdpo_kit.memory import GIB, PUBLISHED_SHAPES, ModelShape, estimate_gpu_memory

WORKER = Path(__file__).with_name("memory_worker.py")
LLAMA3_8B = PUBLISHED_SHAPES["Llama-3-8B"]
TOLERANCE = 0.25  # the estimate may be off by a quarter of the measured step memory, either way


@pytest.mark.parametrize("name,billions", [("Llama-3-8B", 8.03), ("Qwen2.5-7B", 7.62)])
def test_published_parameter_counts(name, billions):
    shape = PUBLISHED_SHAPES[name]
    linear = shape.layers * shape.linear_params_per_layer()
    assert (linear + shape.embedding_params()) / 1e9 == pytest.approx(billions, abs=0.01)


@pytest.mark.parametrize("hidden,layers,vocab,seq_len,pairs", [(256, 2, 32000, 256, 4), (128, 2, 16000, 512, 2),
                                                               (256, 2, 128256, 512, 4)])
def test_estimate_matches_a_measured_step(hidden, layers, vocab, seq_len, pairs):
    # A fixed mmap threshold: glibc then hands every large freed buffer back at once, so the peak RSS
    # is the step's live memory (with its default dynamic threshold the peak varied by ±20 % run to run).
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    res = subprocess.run([sys.executable, str(WORKER), *map(str, (hidden, layers, vocab, seq_len, pairs))],
                         capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    measured = json.loads(res.stdout.strip().splitlines()[-1])
    step_mib = measured["peak_mib"] - measured["baseline_mib"]  # the model and the step, not Python + torch
    shape = ModelShape(hidden, layers, 2 * hidden, vocab, heads=4, kv_heads=2)
    est = estimate_gpu_memory(shape, "lora", seq_len=seq_len, batch_size=pairs, gradient_checkpointing=False,
                              weight_bytes=4, device="cpu", response_fraction=2 / 3)  # the worker's responses
    est_mib = est["total"] * GIB / 2**20
    assert abs(est_mib - step_mib) <= TOLERANCE * step_mib, (est_mib, step_mib, est)
    assert "cuda_context" not in est and est["logits"] > est["weights"]  # at these shapes logits dominate
