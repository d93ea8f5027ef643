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
    tok = auto_tokenizer(resolve_model_path(cfg.name_or_path, models_dir), cfg.revision, cfg.trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


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
        weights = weights_fingerprint(resolve_model_path(ref, self.models_dir))
        return {"model": ref, "revision": self.config.revision, "weights": weights,
                "quantized": self.config.mode == "qlora" and self.config.ref_model is None,
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


def build_policy(cfg: ModelConfig, device: torch.device | None = None, adapter_path=None,
                 with_reference: bool = True, models_dir: str | Path | None = None) -> Policy:
    """Load the policy per ``cfg.mode`` (qlora | lora | full) and set up its reference.

    ``adapter_path``: load a saved LoRA adapter (safetensors) instead of creating a fresh one;
    ``with_reference=False``: no separate reference copy for full fine-tuning (e.g. plain SFT);
    ``models_dir``: where ``tiny-*`` names are built (a run passes its cache's ``models`` folder).
    """
    if cfg.mode not in MODES:
        raise UserError(f"unknown model mode {cfg.mode!r}; choose one of {MODES}")
    device = device or default_device()
    dtype = compute_dtype(device, cfg.dtype)
    path = resolve_model_path(cfg.name_or_path, models_dir)
    model = _load_causal_lm(str(adapter_path) if cfg.mode == "full" and adapter_path else path, cfg, device, dtype,
                            quantize=cfg.mode == "qlora")
    return prepare_policy(model, load_tokenizer(cfg, models_dir), cfg, device, dtype, adapter_path, with_reference,
                          models_dir)


def prepare_policy(model: torch.nn.Module, tokenizer, cfg: ModelConfig, device: torch.device, dtype: torch.dtype,
                   adapter_path=None, with_reference: bool = True, models_dir: str | Path | None = None) -> Policy:
    """Make a loaded causal LM (4-bit for ``qlora``) the policy ``cfg.mode`` asks for: base weights
    frozen, gradient checkpointing per ``cfg``, a fresh LoRA adapter (or the one at ``adapter_path``),
    and the reference: the adapter switched off, or a separate model for full fine-tuning."""
    from peft import LoraConfig, PeftModel, get_peft_model

    checkpointing = use_gradient_checkpointing(cfg, device)
    if cfg.mode in ("qlora", "lora"):
        # Not peft's prepare_model_for_kbit_training: it upcasts every non-quantised weight (embeddings,
        # LM head, norms) to fp32, +2 GiB on Llama-3-8B, for no gain under bf16/fp16 autocast. The
        # adapters themselves are fp32 (peft's default), which loss scaling in fp16 needs.
        model.requires_grad_(False)
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if cfg.mode in ("qlora", "lora"):
            model.enable_input_require_grads()  # frozen embeddings + checkpointing would zero the grads
    if cfg.mode in ("qlora", "lora") and adapter_path is not None:
        model = PeftModel.from_pretrained(model, str(adapter_path), is_trainable=True)
    elif cfg.mode in ("qlora", "lora"):
        lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                          target_modules=cfg.target_modules, task_type="CAUSAL_LM")
        model = get_peft_model(model, lora)
    ref_model = None
    if with_reference and (cfg.ref_model is not None or cfg.mode == "full"):
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
