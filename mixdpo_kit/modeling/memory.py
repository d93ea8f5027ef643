"""A back-of-the-envelope GPU memory estimate for a (Q)LoRA MixDPO step, before loading anything.

Reads only the model's config (a few KB). The estimate adds:
- weights: 4-bit NF4 linear layers (0.5 byte/param + ~0.127 bit/param of double-quantised
  constants) with embeddings and LM head in 16-bit for QLoRA; 16-bit everywhere for LoRA;
  for full fine-tuning the fp32 master weights are counted in the optimizer line;
- trainable parameters: fp32 value + gradient + two AdamW moments (16 bytes each);
- activations for the policy forward of chosen + rejected sequences (2 × batch): with
  gradient checkpointing one hidden state per layer plus one layer's full activations,
  without it roughly 34 bytes × hidden per token per layer at 16 bit (the transformer rule of
  thumb), twice that in fp32;
- logits: the LM head runs over response tokens only, a chunk at a time
  (``logprobs.logits_chunk_elements`` logits per chunk, by device and dtype), and is recomputed
  in the backward pass, in place, so one chunk's fp32 logits exist at a time: 4 bytes per logit,
  plus 2 under 16-bit compute (the matmul's 16-bit output beside its fp32 copy), for
  ``min(response tokens, chunk)`` tokens × vocabulary (``tests/modeling/test_memory.py`` checks the CPU
  estimate against a real step's peak of allocated tensor memory at three shapes);
- on a GPU, a fixed CUDA context and allocator overhead.
It is an estimate to choose settings with.
"""
from __future__ import annotations

import torch

from mixdpo_kit.core.config import ModelConfig
from mixdpo_kit.core.errors import UserError
from mixdpo_kit.modeling.logprobs import logits_chunk_elements
from mixdpo_kit.modeling.shape import ModelShape

GIB = 1024 ** 3
CUDA_CONTEXT_GIB = 0.6


def estimate_gpu_memory(shape: ModelShape, mode: str = "qlora", seq_len: int = 1024, batch_size: int = 1,
                        lora_r: int = ModelConfig.lora_r, gradient_checkpointing: bool = True, weight_bytes: int = 2,
                        device: str = "cuda", response_fraction: float = 1.0) -> dict[str, float]:
    """Estimated peak memory in GiB for one training micro-step, by component and in total.

    ``weight_bytes``: 2 for 16-bit weights on a GPU, 4 for fp32 (the CPU); ``device="cpu"``
    leaves out the CUDA context; ``response_fraction``: the share of each sequence that is the
    response (only those positions reach the LM head; 1.0 is the upper bound).
    """
    linear = shape.layers * shape.linear_params_per_layer()
    embed = shape.embedding_params()
    if mode == "qlora":
        weights = linear * (0.5 + 0.127 / 8) + embed * weight_bytes
        trainable = shape.lora_params(lora_r)
    elif mode == "lora":
        weights = (linear + embed) * weight_bytes
        trainable = shape.lora_params(lora_r)
    elif mode == "full":
        weights = (linear + embed) * weight_bytes
        trainable = linear + embed
    else:
        raise UserError(f"unknown mode {mode!r}")
    tokens = 2 * batch_size * seq_len  # chosen + rejected through the policy
    per_layer = tokens * 34 * shape.hidden * weight_bytes / 2
    if gradient_checkpointing:
        activations = tokens * shape.hidden * weight_bytes * shape.layers + per_layer
    else:
        activations = per_layer * shape.layers
    dtype = torch.float32 if weight_bytes == 4 else torch.bfloat16
    chunk_tokens = max(1, logits_chunk_elements(device, dtype) // shape.vocab)
    logits = min(tokens * response_fraction, chunk_tokens) * shape.vocab * (4 if weight_bytes == 4 else 6)
    parts = {"weights": weights, "trainable+optimizer": trainable * 16, "activations": activations, "logits": logits}
    out = {k: v / GIB for k, v in parts.items()}
    if device == "cuda":
        out["cuda_context"] = CUDA_CONTEXT_GIB
    out["total"] = sum(out.values())
    return out


def estimate_for_model(name_or_path: str, **kwargs) -> dict[str, float]:
    """Estimate from a hub id or local path; downloads only ``config.json``."""
    from transformers import AutoConfig

    from mixdpo_kit.modeling.model import resolve_model_path

    return estimate_gpu_memory(ModelShape.from_config(AutoConfig.from_pretrained(resolve_model_path(name_or_path))),
                               **kwargs)


def estimate_table(name_or_path: str, seq_lens=(512, 1024, 2048), **kwargs) -> dict[str, dict[str, str]]:
    """:func:`estimate_for_model` at several sequence lengths, each size readable (GiB, or MiB
    for a small model, never a column of 0.00): ``{"1024 tokens": {"weights": "12 MiB", ...}}``."""
    from mixdpo_kit.core.units import size

    return {f"{n} tokens": {k: size(v) for k, v in estimate_for_model(name_or_path, seq_len=n, **kwargs).items()}
            for n in seq_lens}
