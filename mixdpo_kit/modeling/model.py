"""The policy and its reference.

Default: QLoRA — the base model in 4-bit NF4 with double quantisation (bitsandbytes), LoRA
adapters on all linear layers (peft), and the reference is the *same* model with the adapter
switched off, so no second copy sits in memory. Also: plain LoRA, full fine-tuning, or an
explicit separate reference model. Compute dtype follows the device.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, BitsAndBytesConfig

from mixdpo_kit.core.config import CacheConfig, ModelConfig, read_run_config
from mixdpo_kit.core.errors import MissingFile, UserError
from mixdpo_kit.modeling.tokenizer import auto_tokenizer

MODES = ("qlora", "lora", "full")


def default_device() -> torch.device:
    """This process's GPU (``LOCAL_RANK`` under torchrun / accelerate launch) when available, else CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def compute_dtype(device: torch.device | None = None, requested: str = "auto") -> torch.dtype:
    """bf16 on GPUs that support it, fp16 on older GPUs (a T4; said in a ``UserWarning``, which
    Python shows once), fp32 on CPU; or the requested dtype."""
    if requested != "auto":
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[requested]
    device = device or default_device()
    if device.type != "cuda":
        return torch.float32
    if torch.cuda.is_bf16_supported():
        return torch.bfloat16
    warnings.warn(f"{torch.cuda.get_device_name(device)} has no bf16: training in fp16 (4-bit compute in fp16, "
                  "the Trainer scales the loss).", stacklevel=2)
    return torch.float16


def use_gradient_checkpointing(cfg: ModelConfig, device: torch.device) -> bool:
    """``auto``: on for GPU runs (memory), off on CPU (it only costs time there)."""
    if cfg.gradient_checkpointing == "auto":
        return device.type == "cuda"
    return bool(cfg.gradient_checkpointing)


def resolve_model_path(name_or_path: str, models_dir: str | Path | None = None) -> str:
    """``tiny-<arch>`` names build (once, into ``models_dir``: the cache's ``models`` folder, by
    default the default cache's) a local tiny model, ``tiny-reward`` a randomly initialised tiny
    reward model, ``tiny-reward-builtin`` one trained on the built-in task's pairs
    (:mod:`mixdpo_kit.modeling.reward_model`); anything else is passed through."""
    workdir = Path(models_dir) if models_dir is not None else CacheConfig().path("models")
    if name_or_path in ("tiny-reward", "tiny-reward-builtin"):
        from mixdpo_kit.modeling.reward_model import build_builtin_reward_model
        from mixdpo_kit.modeling.tiny import build_tiny_reward_model

        target = Path(workdir) / name_or_path
        if not (target / "config.json").exists():
            (build_tiny_reward_model if name_or_path == "tiny-reward" else build_builtin_reward_model)(target)
        return str(target)
    if name_or_path.startswith("tiny-"):
        from mixdpo_kit.modeling.tiny import build_tiny_model

        target = Path(workdir) / name_or_path
        if not (target / "config.json").exists():
            build_tiny_model(target, arch=name_or_path[len("tiny-"):])
        return str(target)
    return name_or_path


def load_tokenizer(cfg: ModelConfig, models_dir: str | Path | None = None):
    """The model's tokenizer, with a pad token (EOS when it has none) and left padding for generation."""
    return with_pad_token(auto_tokenizer(resolve_model_path(cfg.name_or_path, models_dir), cfg.revision,
                                         cfg.trust_remote_code))


def with_pad_token(tokenizer):
    """``tokenizer`` with a pad token: its EOS when it has none (batches of pairs are padded)."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def quantization_config(dtype: torch.dtype) -> BitsAndBytesConfig:
    """4-bit NF4 with double quantisation, computing in ``dtype``."""
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=dtype, bnb_4bit_quant_storage=dtype)


def disable_dropout(model: torch.nn.Module) -> None:
    """Set every dropout probability to 0: dropout makes policy and reference log-probs disagree."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0


def _load_causal_lm(path: str, cfg: ModelConfig, device: torch.device, dtype: torch.dtype, quantize: bool):
    kwargs = dict(revision=cfg.revision, trust_remote_code=cfg.trust_remote_code, dtype=dtype)
    if quantize:
        kwargs["quantization_config"] = quantization_config(dtype)
        # bitsandbytes quantises while loading, so the model is placed by device_map, not .to().
        kwargs["device_map"] = {"": device.index if device.type == "cuda" else "cpu"}
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if not quantize:
        model.to(device)
    else:
        keep_cpu_4bit_differentiable(model)
    disable_dropout(model)
    return model


def keep_cpu_4bit_differentiable(model: torch.nn.Module) -> None:
    """Stop bitsandbytes from repacking 4-bit weights for its CPU inference kernel.

    On CPUs with AVX512-BF16, the first eval-mode no-grad forward (e.g. a reference pass)
    repacks each Linear4bit weight for ``gemv_4bit``, which has no autograd kernel: later
    training steps would backpropagate through it silently wrong, and policy and reference
    log-probs would differ at initialisation. The regular dequantise+matmul path is used instead.
    """
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


@dataclass
class Policy:
    """The trainable model, its tokenizer, and how to get reference log-probs."""

    model: torch.nn.Module
    tokenizer: object
    config: ModelConfig
    dtype: torch.dtype
    ref_model: torch.nn.Module | None = None  # None: the policy with its adapter off
    models_dir: str | Path | None = None  # where tiny-* names were built (None: the default cache's)
    weights_id: str | None = None  # the reference's weights, hashed in memory (a model the caller loaded)

    @contextlib.contextmanager
    def reference(self):
        """Yields the module that computes reference log-probs (adapter off, or the separate model)."""
        if self.ref_model is not None:
            yield self.ref_model
        elif not hasattr(self.model, "disable_adapter"):
            raise RuntimeError("this policy has no reference: full fine-tuning built with_reference=False")
        else:
            with self.model.disable_adapter():
                yield self.model

    def identity(self) -> dict:
        """What determines the reference's outputs: model, revision, weights, quantisation, dtype."""
        ref = self.config.ref_model or self.config.name_or_path
        weights = self.weights_id or weights_fingerprint(resolve_model_path(ref, self.models_dir))
        return {"model": ref, "revision": self.config.revision, "weights": weights,
                "quantized": self.config.mode == "qlora" and self.ref_model is None,
                "dtype": str(self.dtype)}


def weights_fingerprint(path: str) -> str:
    """A content hash of a local model directory (first and last MiB plus size of each weight file).

    Hub ids are identified by name and revision instead; a retrained local checkpoint gets a new
    fingerprint, so stale reference caches are never reused.
    """
    p = Path(path)
    if not p.is_dir():
        return "hub"
    h = hashlib.sha256()
    for f in sorted(p.glob("*")):
        if f.suffix in {".safetensors", ".bin", ".json"} and f.is_file():
            size = f.stat().st_size
            h.update(f"{f.name}:{size}".encode())
            with f.open("rb") as fh:
                h.update(fh.read(1 << 20))
                if size > 2 << 20:
                    fh.seek(-(1 << 20), 2)
                    h.update(fh.read())
    return h.hexdigest()[:16]


def in_memory_fingerprint(model: torch.nn.Module) -> str:
    """A hash of a model's weights as they are in memory (each tensor's name, shape, dtype and a
    strided sample of its values): what identifies a model a caller loaded or changed themselves,
    whose name may not say what its weights are."""
    h = hashlib.sha256()
    for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
        if "lora_" in name:  # an adapter's weights: the reference (adapter off) does not see them
            continue
        flat = tensor.detach().reshape(-1)
        sample = flat[:: max(1, flat.numel() // 256)][:256].to("cpu").contiguous()
        h.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        h.update(sample.view(torch.uint8).numpy().tobytes() if sample.dtype != torch.bool else sample.numpy().tobytes())
    return h.hexdigest()[:16]


def model_compute_dtype(model: torch.nn.Module) -> torch.dtype:
    """The dtype a loaded model computes in: a 4-/8-bit model's ``bnb_4bit_compute_dtype``, else
    the dtype of its floating-point weights."""
    q = getattr(getattr(model, "config", None), "quantization_config", None)
    dtype = q.get("bnb_4bit_compute_dtype") if isinstance(q, dict) else getattr(q, "bnb_4bit_compute_dtype", None)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype.replace("torch.", ""))
    if dtype is not None:
        return dtype
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


def is_quantized(model: torch.nn.Module) -> bool:
    """Whether a loaded model's weights are 4- or 8-bit (bitsandbytes)."""
    return bool(getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False))


def policy_from_model(model, tokenizer, cfg: ModelConfig, lora=None, ref_model=None, seed: int | None = None,
                      models_dir: str | Path | None = None) -> Policy:
    """A policy from a model the caller already has (or its name, loaded in full precision): whether
    it is 4-bit or already a ``PeftModel``, its compute dtype and device are read from the object.
    ``lora``: a ``peft.LoraConfig`` for a fresh adapter. A 4-bit model trains only through an
    adapter. With an adapter and no ``ref_model`` the reference is the adapter switched off, as in
    the kit's runs; a full fine-tune without ``ref_model`` gets a frozen copy as its reference."""
    import copy
    import dataclasses

    from peft import PeftModel

    if isinstance(model, str):
        named = dataclasses.replace(cfg, name_or_path=model)
        tokenizer = tokenizer or load_tokenizer(named, models_dir)
        device = default_device()
        model = _load_causal_lm(resolve_model_path(model, models_dir), named, device, compute_dtype(device, cfg.dtype),
                                quantize=False)
    if tokenizer is None:
        raise UserError("no tokenizer: pass the model's tokenizer as processing_class")
    adapted = isinstance(model, PeftModel) or lora is not None
    if is_quantized(model) and not adapted:
        raise UserError("the model is quantised (4- or 8-bit): it trains only through an adapter; pass "
                        "peft_config=LoraConfig(...) or a PeftModel")
    mode = "qlora" if is_quantized(model) else "lora" if adapted else "full"
    base = model.get_base_model() if isinstance(model, PeftModel) else model
    disable_dropout(model)
    if is_quantized(model):
        keep_cpu_4bit_differentiable(model)
    if ref_model is None and mode == "full":
        ref_model = copy.deepcopy(model)
    if ref_model is not None:
        disable_dropout(ref_model)
        ref_model.eval().requires_grad_(False)
    name = getattr(base.config, "_name_or_path", "") or "in-memory model"
    own = dataclasses.replace(cfg, name_or_path=name, mode=mode, ref_model=None, gradient_checkpointing=False)
    weights_id = in_memory_fingerprint(ref_model if ref_model is not None else base)  # before an adapter goes in
    policy = prepare_policy(model, with_pad_token(tokenizer), own, next(base.parameters()).device,
                            model_compute_dtype(base), with_reference=False, models_dir=models_dir, lora=lora,
                            ref_model=ref_model, seed=seed)
    policy.weights_id = weights_id
    return policy


def build_policy(cfg: ModelConfig, device: torch.device | None = None, adapter_path=None,
                 with_reference: bool = True, models_dir: str | Path | None = None, seed: int | None = None) -> Policy:
    """Load the policy per ``cfg.mode`` (qlora | lora | full) and set up its reference.

    ``adapter_path``: load a saved LoRA adapter (safetensors) instead of creating a fresh one;
    ``with_reference=False``: no separate reference copy for full fine-tuning (e.g. plain SFT);
    ``models_dir``: where ``tiny-*`` names are built (a run passes its cache's ``models`` folder);
    ``seed``: seeds a fresh adapter's initialisation (see :func:`prepare_policy`).
    """
    if cfg.mode not in MODES:
        raise UserError(f"unknown model mode {cfg.mode!r}; choose one of {MODES}")
    device = device or default_device()
    dtype = compute_dtype(device, cfg.dtype)
    path = resolve_model_path(cfg.name_or_path, models_dir)
    model = _load_causal_lm(str(adapter_path) if cfg.mode == "full" and adapter_path else path, cfg, device, dtype,
                            quantize=cfg.mode == "qlora")
    return prepare_policy(model, load_tokenizer(cfg, models_dir), cfg, device, dtype, adapter_path, with_reference,
                          models_dir, seed=seed)


@contextlib.contextmanager
def _without_peft_deprecation_notice():
    """peft reads transformers' deprecated ``is_gradient_checkpointing`` when it wraps a model, which
    under transformers 5 warns at every wrap: a notice about peft's own code that a user cannot act
    on. Only that FutureWarning is dropped."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


def prepare_policy(model: torch.nn.Module, tokenizer, cfg: ModelConfig, device: torch.device, dtype: torch.dtype,
                   adapter_path=None, with_reference: bool = True, models_dir: str | Path | None = None,
                   lora=None, ref_model: torch.nn.Module | None = None, seed: int | None = None) -> Policy:
    """Make a loaded causal LM (4-bit for ``qlora``) the policy ``cfg.mode`` asks for: base weights
    frozen, gradient checkpointing per ``cfg``, a fresh LoRA adapter (``lora``, a ``peft.LoraConfig``,
    else ``cfg``'s), the one at ``adapter_path``, or the ``PeftModel``'s own; and the reference: the
    adapter switched off, ``ref_model``, or a separate model for full fine-tuning. ``seed`` seeds a
    fresh adapter right before it is made, so its initialisation does not depend on what loading the
    model drew from the random generator (the kit's run and a caller's own loader then agree)."""
    from peft import LoraConfig, PeftModel, get_peft_model

    checkpointing = use_gradient_checkpointing(cfg, device)
    own_adapter = isinstance(model, PeftModel)  # the caller's adapter, trainable as they made it
    if cfg.mode in ("qlora", "lora") and not own_adapter:
        # Not peft's prepare_model_for_kbit_training: it upcasts every non-quantised weight (embeddings,
        # LM head, norms) to fp32, +2 GiB on Llama-3-8B, for no gain under bf16/fp16 autocast. The
        # adapters themselves are fp32 (peft's default), which loss scaling in fp16 needs.
        model.requires_grad_(False)
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if cfg.mode in ("qlora", "lora"):
            model.enable_input_require_grads()  # frozen embeddings + checkpointing would zero the grads
    if own_adapter:
        pass
    elif cfg.mode in ("qlora", "lora") and adapter_path is not None:
        with _without_peft_deprecation_notice():
            model = PeftModel.from_pretrained(model, str(adapter_path), is_trainable=True)
    elif cfg.mode in ("qlora", "lora"):
        lora = lora or LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                                  target_modules=cfg.target_modules, task_type="CAUSAL_LM")
        if seed is not None:
            torch.manual_seed(seed)
        with _without_peft_deprecation_notice():
            model = get_peft_model(model, lora)
    if ref_model is None and with_reference and (cfg.ref_model is not None or cfg.mode == "full"):
        ref_path = resolve_model_path(cfg.ref_model or cfg.name_or_path, models_dir)
        ref_model = _load_causal_lm(ref_path, cfg, device, dtype, quantize=False).eval()
        ref_model.requires_grad_(False)
    return Policy(model=model, tokenizer=tokenizer, config=cfg, dtype=dtype, ref_model=ref_model, models_dir=models_dir)


def load_trained_policy(run_dir: str | Path):
    """A finished run's resolved config, its saved weights folder and its trained policy (adapter
    on; the reference is the same model with it off): ``(cfg, saved folder, policy)``."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").exists():
        raise MissingFile(f"{run_dir}: not a run folder (no config.yaml)")
    cfg = read_run_config(run_dir)
    saved = run_dir / ("model" if cfg.model.mode == "full" else "adapter")
    if not saved.exists():
        raise MissingFile(f"{run_dir}: no trained {saved.name}/ folder; was the run finished?")
    return cfg, saved, build_policy(cfg.model, adapter_path=saved, models_dir=cfg.cache.path("models"))
