"""The chunked log-prob path against the plain one: same log-probs and gradients (fp32, 1e-5) on
every tiny architecture, tied and untied heads, LoRA, full fine-tuning and 4-bit QLoRA; only
response positions reach the LM head, a chunk at a time; padding never changes a log-prob."""
import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from mixdpo_kit.modeling import logprobs
from mixdpo_kit.modeling.logprobs import plain_token_logps, sequence_logps, token_logps
from mixdpo_kit.modeling.pairbatch import separate_rows
from mixdpo_kit.modeling.tiny import ARCHITECTURES, tiny_config

VOCAB = 300


def _batch():
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(3, VOCAB, (n,), generator=g).tolist() for n in (5, 9, 3, 7)]
    responses = [torch.randint(3, VOCAB, (n,), generator=g).tolist() for n in (6, 2, 11, 4)]
    return separate_rows(prompts, responses, 0)


def _model(arch: str, tied: bool, lora: bool, attn: str = "sdpa", **config_kw):
    """A tiny ``arch`` model (also used by test_pairbatch.py), LoRA with a non-zero adapter or full."""
    torch.manual_seed(0)
    config = tiny_config(arch, vocab_size=VOCAB, hidden=64)
    config.tie_word_embeddings = tied
    for key, value in config_kw.items():
        setattr(config, key, value)
    model = AutoModelForCausalLM.from_config(config, attn_implementation=attn)
    if lora:
        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"))
        with torch.no_grad():  # a non-zero adapter, so its gradients are not trivially equal
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.05)
    return model


def _logps_and_grads(model, fn, batch, **kw):
    model.zero_grad()
    logps, mask = fn(model, batch, **kw)
    (logps.sum(-1) / mask.sum(-1)).pow(2).mean().backward()  # any loss that weights tokens unevenly
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return logps.detach(), grads


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
@pytest.mark.parametrize("lora", [True, False], ids=["lora", "full"])
def test_chunked_equals_plain(arch, tied, lora):
    model, batch = _model(arch, tied, lora), _batch()
    plain, plain_grads = _logps_and_grads(model, plain_token_logps, batch)
    chunked, chunked_grads = _logps_and_grads(model, token_logps, batch, chunk_elements=3 * VOCAB)  # 3 tokens a chunk
    torch.testing.assert_close(chunked, plain, rtol=0, atol=1e-5)
    assert set(chunked_grads) == set(plain_grads) and plain_grads
    for name, g in plain_grads.items():
        torch.testing.assert_close(chunked_grads[name], g, rtol=1e-4, atol=1e-5, msg=name)
    if not lora:
        head = "lm_head.weight" if not tied else "model.embed_tokens.weight"
        assert chunked_grads[head].abs().sum() > 0  # the head's own gradient flows through the chunks


def test_only_response_positions_reach_the_head_one_chunk_at_a_time(monkeypatch):
    model, batch = _model("llama", False, True), _batch()
    seen = []
    original = logprobs._chunk_logits
    monkeypatch.setattr(logprobs, "_chunk_logits", lambda h, w, b: seen.append(len(h)) or original(h, w, b))
    with torch.no_grad():
        _, mask = token_logps(model, batch, chunk_elements=5 * VOCAB)
    assert sum(seen) == int(mask.sum()) == 6 + 2 + 11 + 4 - 0  # response tokens only, no prompt positions
    assert max(seen) <= 5 and isinstance(model.get_base_model().lm_head, torch.nn.Linear)  # head restored


def test_adapter_off_reference_and_4bit_qlora_match(tiny_llama):
    from mixdpo_kit.core.config import ModelConfig
    from mixdpo_kit.modeling.model import build_policy

    policy = build_policy(ModelConfig(name_or_path=tiny_llama, mode="qlora"))
    with torch.no_grad():
        for name, p in policy.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    batch = separate_rows([[5, 6, 7], [8, 9]], [[10, 11, 12, 13], [14, 15]], policy.tokenizer.pad_token_id)
    with policy.reference() as ref:
        ref_plain, _ = plain_token_logps(ref, batch)
        ref_chunked, _ = token_logps(ref, batch, chunk_elements=2 * 64)
    plain, plain_grads = _logps_and_grads(policy.model, plain_token_logps, batch)
    chunked, chunked_grads = _logps_and_grads(policy.model, token_logps, batch, chunk_elements=2 * 64)
    torch.testing.assert_close(ref_chunked, ref_plain, rtol=0, atol=1e-5)
    torch.testing.assert_close(chunked, plain, rtol=0, atol=1e-5)
    assert (chunked - ref_chunked).abs().max() > 1e-3  # the adapter is on for the policy, off for the reference
    for name, g in plain_grads.items():
        torch.testing.assert_close(chunked_grads[name], g, rtol=1e-4, atol=1e-5, msg=name)


def test_chunk_size_follows_device_and_dtype_and_never_changes_the_numbers(monkeypatch):
    from mixdpo_kit.modeling.logprobs import logits_chunk_elements

    gib = 2 ** 30
    sizes = {"cpu": logits_chunk_elements("cpu", torch.float32),
             "H200 bf16": logits_chunk_elements("cuda", torch.bfloat16, total_memory=141 * gib),
             "H200 fp32": logits_chunk_elements("cuda", torch.float32, total_memory=141 * gib),
             "T4 fp16": logits_chunk_elements("cuda", torch.float16, total_memory=15 * gib)}
    assert sizes["cpu"] > sizes["H200 fp32"] > sizes["H200 bf16"] > sizes["T4 fp16"] > 0
    assert sizes["T4 fp16"] * 4 <= 15 * gib // 256  # one fp32 chunk stays under 1/256 of the card
    # Each size scores the same batch to the same log-probs and gradients. Its tokens per chunk at Llama-3's
    # vocabulary (523, 261, 130, 119), divided by 25 to fit this batch's 23 response tokens: 1 to 6 chunks.
    model, batch = _model("llama", False, True), _batch()
    reference, reference_grads = _logps_and_grads(model, plain_token_logps, batch)
    for name, elements in sizes.items():
        tokens = max(1, elements // 128256 // 25)
        logps, grads = _logps_and_grads(model, token_logps, batch, chunk_elements=tokens * VOCAB)
        torch.testing.assert_close(logps, reference, rtol=0, atol=1e-5, msg=name)
        for param, g in reference_grads.items():
            torch.testing.assert_close(grads[param], g, rtol=1e-4, atol=1e-5, msg=f"{name}: {param}")
    # By default token_logps asks for the size of the hidden states' device and dtype.
    asked = []
    monkeypatch.setattr(logprobs, "logits_chunk_elements", lambda device, dtype: asked.append((device.type, dtype)) or 64)
    with torch.no_grad():
        token_logps(model, batch)
    assert asked == [("cpu", torch.float32)]


@pytest.mark.parametrize("lora", [True, False], ids=["frozen head", "trained head"])
def test_a_frozen_head_runs_once_per_chunk_a_trained_head_is_recomputed(monkeypatch, lora):
    """A frozen head (LoRA, QLoRA) forms d logp / d hidden while the chunk's softmax is at hand, so
    backward never recomputes logits (two head matmuls per chunk, as a bare forward and backward);
    a trained head's backward recomputes them; under no_grad no gradient row is formed."""
    model, batch = _model("llama", False, lora), _batch()
    calls = []
    original = logprobs._chunk_logits
    monkeypatch.setattr(logprobs, "_chunk_logits", lambda h, w, b: calls.append(len(h)) or original(h, w, b))
    onehot = []
    original_onehot = logprobs._onehot_minus_
    monkeypatch.setattr(logprobs, "_onehot_minus_", lambda p, y: onehot.append(len(y)) or original_onehot(p, y))
    logps, mask = token_logps(model, batch, chunk_elements=5 * VOCAB)
    forward_calls = len(calls)
    (logps.sum(-1) / mask.sum(-1)).pow(2).mean().backward()
    assert forward_calls == 5  # 23 response tokens, 5 a chunk
    assert len(calls) == (5 if lora else 10)
    assert len(onehot) == 5
    calls.clear(), onehot.clear()
    with torch.no_grad():
        token_logps(model, batch, chunk_elements=5 * VOCAB)
    assert len(calls) == 5 and not onehot


def test_padding_does_not_change_sequence_logps(tiny_llama):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).eval()
    prompts, responses = [[2, 4, 17, 8, 9]], [[9, 8, 3]]
    alone = sequence_logps(model, separate_rows(prompts, responses, 0))
    padded = sequence_logps(model, separate_rows(prompts + [[2, 4, 17, 8, 9, 10, 11, 12]],
                                                  responses + [[9, 8, 10, 11, 12, 3]], 0))
    assert torch.allclose(alone[0][0], padded[0][0], atol=1e-5)
    assert alone[1][0] == padded[1][0] == 3


def test_the_head_is_set_aside_only_under_the_models_lock():
    """A thread that holds the model's lock (a training step, a panel's evaluation) keeps the head
    swap of another thread waiting: nobody sees the model with its output layer set aside."""
    import threading
    import time

    model = _model("llama", False, True)
    head = model.get_output_embeddings()
    lock, started, seen = logprobs.model_lock(model), threading.Event(), []

    def swap():
        started.set()
        with logprobs.head_set_aside(model):
            seen.append(type(model.get_output_embeddings()).__name__)

    with lock:  # as RoutedPairTrainer.training_step holds it
        worker = threading.Thread(target=swap)
        worker.start()
        started.wait()
        time.sleep(0.2)
        assert seen == [] and model.get_output_embeddings() is head  # it waits; the model is whole
    worker.join(5)
    assert seen == ["Identity"] and model.get_output_embeddings() is head
    assert logprobs.model_lock(model) is logprobs.model_lock(model.get_base_model())  # one lock per model
    hidden = logprobs.final_hidden_states(model, _batch())
    assert hidden.shape[-1] == 64 and model.get_output_embeddings() is head
