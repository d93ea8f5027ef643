"""The memory estimator against measured reality: a real training step's peak of allocated
tensor memory on the CPU (what ``torch.cuda.max_memory_allocated`` reads on a GPU) at three shapes,
one at Llama-3's vocabulary where the logits run in several chunks, plus the published models'
parameter counts."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from mixdpo_kit.modeling.memory import GIB, estimate_gpu_memory
from mixdpo_kit.modeling.shape import PUBLISHED_SHAPES, ModelShape

WORKER = Path(__file__).with_name("memory_worker.py")
LLAMA3_8B = PUBLISHED_SHAPES["Llama-3-8B"]
TOLERANCE = 0.10  # the estimate may be off by a tenth of the measured step memory, either way


@pytest.mark.parametrize("name,billions", [("Llama-3-8B", 8.03), ("Qwen2.5-7B", 7.62)])
def test_published_parameter_counts(name, billions):
    shape = PUBLISHED_SHAPES[name]
    linear = shape.layers * shape.linear_params_per_layer()
    assert (linear + shape.embedding_params()) / 1e9 == pytest.approx(billions, abs=0.01)


@pytest.mark.parametrize("hidden,layers,vocab,seq_len,pairs", [(256, 2, 32000, 256, 4), (128, 2, 16000, 512, 2),
                                                               (256, 2, 128256, 512, 4)])
def test_estimate_matches_a_measured_step(hidden, layers, vocab, seq_len, pairs):
    # Allocated tensor bytes, not the process's peak RSS: RSS depends on the C library's allocator
    # and read 166 MiB on one machine and 372 MiB on another for the same step.
    res = subprocess.run([sys.executable, str(WORKER), *map(str, (hidden, layers, vocab, seq_len, pairs))],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    step_mib = json.loads(res.stdout.strip().splitlines()[-1])["peak_mib"]  # the model and the step
    shape = ModelShape(hidden, layers, 2 * hidden, vocab, heads=4, kv_heads=2)
    est = estimate_gpu_memory(shape, "lora", seq_len=seq_len, batch_size=pairs, gradient_checkpointing=False,
                              weight_bytes=4, device="cpu", response_fraction=2 / 3)  # the worker's responses
    est_mib = est["total"] * GIB / 2**20
    assert abs(est_mib - step_mib) <= TOLERANCE * step_mib, (est_mib, step_mib, est)
    assert "cuda_context" not in est and est["logits"] > est["weights"]  # at these shapes logits dominate
