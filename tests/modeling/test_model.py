"""QLoRA policy on CPU in real 4-bit NF4, for Llama, Qwen2 and Mistral tiny configs."""
import pytest
import torch

from mixdpo_kit.core.config import ModelConfig
from mixdpo_kit.modeling.model import build_policy, compute_dtype, load_tokenizer
from mixdpo_kit.modeling.tiny import build_text_tokenizer, build_tiny_model, build_tokenizer


@pytest.mark.parametrize("arch", ["llama", "qwen2", "mistral"])
def test_qlora_policy_trains_and_reference_is_adapter_off(arch, tmp_path):
    import bitsandbytes as bnb

    path = build_tiny_model(tmp_path / arch, arch=arch)
    policy = build_policy(ModelConfig(name_or_path=str(path), mode="qlora"))
    model = policy.model
    quantized = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert quantized and quantized[0].weight.quant_state.quant_type == "nf4"
    assert policy.ref_model is None  # no second copy in memory
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    ids = torch.tensor([[2, 4, 17, 10, 8, 9, 3]])
    with torch.no_grad():
        with policy.reference() as ref:
            before = ref(input_ids=ids).logits
    # A training step on the adapter moves the policy but not the adapter-off reference.
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    model(input_ids=ids).logits.logsumexp(-1).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters() if p.requires_grad)
    opt.step()
    with torch.no_grad():
        after_policy = model(input_ids=ids).logits
        with policy.reference() as ref:
            after_ref = ref(input_ids=ids).logits
    # The same computation before and after the step (tolerance for float noise only); the step
    # itself moves the policy's logits by orders of magnitude more.
    torch.testing.assert_close(after_ref, before, rtol=0, atol=1e-5)
    assert (after_policy - after_ref).abs().max() > 1e-2


@pytest.mark.parametrize("arch", ["llama", "qwen2", "mistral"])
@pytest.mark.parametrize("kind", ["words", "bpe"])
def test_a_saved_tokenizer_loads_back_as_saved_for_every_architecture(arch, kind, tmp_path):
    # transformers 5 rebuilds a Qwen2 folder's tokenizer with Qwen2's own pre-tokenizer, whatever
    # was saved: a word-level vocabulary then lost "sort" and split "w17" into letters and digits.
    text = "sort 1 2 3 . w17 reverse"
    built = build_tokenizer(["sort", "reverse", ".", "1", "2", "3", "w17"]) if kind == "words" \
        else build_text_tokenizer(["sort 1 2 3 . w17 reverse, a longer text to learn merges from"] * 20, vocab_size=300)
    path = build_tiny_model(tmp_path / arch, arch=arch, tokenizer=built)
    loaded = load_tokenizer(ModelConfig(name_or_path=str(path)))
    assert loaded(text)["input_ids"] == built(text)["input_ids"]
    chat = [{"role": "user", "content": text}]
    assert loaded.apply_chat_template(chat, tokenize=False) == built.apply_chat_template(chat, tokenize=False)


def test_lora_full_and_explicit_reference(tiny_llama):
    lora = build_policy(ModelConfig(name_or_path=tiny_llama, mode="lora"))
    frozen = [p for n, p in lora.model.named_parameters() if "lora_" not in n]
    assert lora.ref_model is None and frozen and all(p.dtype == torch.float32 and not p.requires_grad for p in frozen)
    full = build_policy(ModelConfig(name_or_path=tiny_llama, mode="full"))
    assert full.ref_model is not None and not any(p.requires_grad for p in full.ref_model.parameters())
    assert all(p.requires_grad for p in full.model.parameters())
    explicit = build_policy(ModelConfig(name_or_path=tiny_llama, mode="lora", ref_model=tiny_llama))
    with explicit.reference() as ref:
        assert ref is explicit.ref_model


def test_device_aware_dtype():
    assert compute_dtype(torch.device("cpu")) == torch.float32
    assert compute_dtype(torch.device("cpu"), "bfloat16") == torch.bfloat16
    with pytest.raises(ValueError, match="mode"):
        build_policy(ModelConfig(mode="int3"))


def test_a_gpu_without_bf16_trains_in_fp16_with_loss_scaling_and_says_so(monkeypatch, capsys):
    import warnings

    from mixdpo_kit.modeling.model import quantization_config
    from mixdpo_kit.training.pipeline import mixed_precision

    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Tesla T4")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    t4 = torch.device("cuda", 0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")  # Python's own filter: a note is shown once
        assert compute_dtype(t4) == compute_dtype(t4) == torch.float16
    assert [str(w.message) for w in caught] == [
        "Tesla T4 has no bf16: training in fp16 (4-bit compute in fp16, the Trainer scales the loss)."]
    assert not capsys.readouterr().out
    assert quantization_config(torch.float16).bnb_4bit_compute_dtype == torch.float16
    assert mixed_precision(torch.float16) == {"bf16": False, "fp16": True}  # the Trainer's GradScaler
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert compute_dtype(t4) == torch.bfloat16 and mixed_precision(torch.bfloat16) == {"bf16": True, "fp16": False}
    assert compute_dtype(t4, "float16") == torch.float16 and not capsys.readouterr().out  # forced: no note
    assert mixed_precision(torch.float32) == {"bf16": False, "fp16": False}


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_qlora_keeps_unquantised_weights_in_the_compute_dtype(tiny_llama, dtype):
    """No fp32 upcast of embeddings, head and norms (peft's k-bit preparation doubled them); the
    adapters are fp32 for loss scaling, and gradients reach them through checkpointing."""
    policy = build_policy(ModelConfig(name_or_path=tiny_llama, mode="qlora", dtype=dtype, gradient_checkpointing=True))
    model, want = policy.model, getattr(torch, dtype)
    frozen_float = {n: p.dtype for n, p in model.named_parameters() if not p.requires_grad and p.is_floating_point()}
    assert frozen_float and set(frozen_float.values()) == {want}, frozen_float
    assert {p.dtype for p in model.parameters() if p.requires_grad} == {torch.float32}
    assert model.is_gradient_checkpointing
    model.train()
    with torch.autocast("cpu", dtype=want):
        model(input_ids=torch.tensor([[2, 4, 17, 10, 8, 9, 3]])).logits.float().logsumexp(-1).mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_qlora_stores_4bit_weights_in_the_compute_dtype_for_fsdp(tiny_llama, dtype):
    """FSDP shards and gathers every frozen weight in one float dtype: the packed 4-bit weights must sit
    in containers of the compute dtype (bnb_4bit_quant_storage), not bitsandbytes' default uint8."""
    import bitsandbytes as bnb

    policy = build_policy(ModelConfig(name_or_path=tiny_llama, mode="qlora", dtype=dtype))
    want = getattr(torch, dtype)
    packed = [m.weight for m in policy.model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert packed and {w.dtype for w in packed} == {want} and all(w.quant_state is not None for w in packed)
    assert policy.model.config.quantization_config.bnb_4bit_quant_storage == want


def test_sft_warmup_does_not_follow_the_main_runs_schedule(tmp_path, tiny_llama):
    """Runs that differ only in their schedule must start from the same SFT model (the reference)."""
    from safetensors.torch import load_file

    from mixdpo_kit.core.config import preset
    from mixdpo_kit.training.pipeline import sft_warmup

    base = preset("demo").override(model={"name_or_path": tiny_llama}, sft_warmup={"enabled": True, "max_steps": 12})
    models = [sft_warmup(base.override(train={"lr_scheduler_type": schedule, "weight_decay": wd}), tmp_path / schedule)
              for schedule, wd in (("cosine", 0.0), ("constant_with_warmup", 0.1))]
    a, b = (load_file(str(m / "model.safetensors")) for m in models)
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_wrapping_in_an_adapter_says_nothing_about_peft_internals(tiny_llama, tmp_path):
    """peft reads transformers' deprecated ``is_gradient_checkpointing`` when it wraps a model; the kit
    drops that FutureWarning (a user cannot act on it) for a new adapter and a saved one, and nothing else."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        policy = build_policy(ModelConfig(name_or_path=tiny_llama, mode="lora"))
        policy.model.save_pretrained(tmp_path / "adapter")
        build_policy(ModelConfig(name_or_path=tiny_llama, mode="lora"), adapter_path=tmp_path / "adapter")
        warnings.warn("another notice", FutureWarning)
    notices = [str(w.message) for w in caught if issubclass(w.category, FutureWarning)]
    assert notices == ["another notice"], notices
