import pytest

from mixdpo_kit.memory import GIB, ModelShape, estimate_gpu_memory

# Llama-3-8B's published shape.
LLAMA3_8B = ModelShape(hidden=4096, layers=32, intermediate=14336, vocab=128256, heads=32, kv_heads=8)


def test_llama3_8b_parameter_count_and_qlora_weights():
    linear = LLAMA3_8B.layers * LLAMA3_8B.linear_params_per_layer()
    assert (linear + LLAMA3_8B.embedding_params()) / 1e9 == pytest.approx(8.03, abs=0.01)
    est = estimate_gpu_memory(LLAMA3_8B, "qlora", seq_len=1024, batch_size=1)
    # 6.98e9 linear params at ~0.516 byte + 1.05e9 embedding params at 2 bytes
    assert est["weights"] == pytest.approx((linear * (0.5 + 0.127 / 8) + LLAMA3_8B.embedding_params() * 2) / GIB)
    assert 5.0 < est["weights"] < 6.0
    assert est["total"] == pytest.approx(sum(v for k, v in est.items() if k != "total"))


def test_estimate_orders_modes_and_settings():
    q = estimate_gpu_memory(LLAMA3_8B, "qlora")["total"]
    lora = estimate_gpu_memory(LLAMA3_8B, "lora")["total"]
    full = estimate_gpu_memory(LLAMA3_8B, "full")["total"]
    assert q < lora < full
    assert estimate_gpu_memory(LLAMA3_8B, seq_len=2048)["total"] > q
    assert estimate_gpu_memory(LLAMA3_8B, gradient_checkpointing=False)["activations"] > \
        estimate_gpu_memory(LLAMA3_8B)["activations"]
    with pytest.raises(ValueError):
        estimate_gpu_memory(LLAMA3_8B, "int2")
