"""Random-weight models of real architectures, built in memory: no checkpoint is written or read.

    python bench/shapes.py DIR qwen2.5-1.5b [--tiny]   # DIR/qwen2.5-1.5b: config.json and a word-level tokenizer

A shape is a folder with the model's config and a tokenizer of the same vocabulary (every word one
token), written once, in well under a second. Each process that trains on it draws the weights
on its device (:func:`materialise`, seeded, so every process gets the same ones) and, for QLoRA,
quantises the linear layers to 4-bit NF4 in place: a Llama-3-8B shape is ready in seconds on a GPU
instead of a 16 GB bf16 write and read. The result is the module tree ``from_pretrained`` with a
``BitsAndBytesConfig`` gives (``bnb.nn.Linear4bit`` layers, the head and embeddings unquantised,
``is_loaded_in_4bit`` set), so peft, TRL and the kit treat it as a loaded 4-bit model.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

SHAPES = {
    "qwen2.5-1.5b": dict(arch="qwen2", hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                         num_attention_heads=12, num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "llama-3-8b": dict(arch="llama", hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                       num_attention_heads=32, num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False),
}
# The --tiny rehearsal's stand-ins: the same architectures and head tying, a few hundred thousand weights.
TINY_SHAPES = {
    "qwen2.5-1.5b": dict(arch="qwen2", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, vocab_size=2000, tie_word_embeddings=True),
    "llama-3-8b": dict(arch="llama", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, vocab_size=2000, tie_word_embeddings=False),
}


def write_shape(name: str, directory: Path, tiny: bool = False) -> Path:
    """``directory/name``: the shape's config and a word-level tokenizer over ``w0 w1 ...`` filling
    its vocabulary. Returns the folder."""
    from transformers import LlamaConfig, Qwen2Config

    from mixdpo_kit.modeling.tiny import SPECIAL, build_tokenizer

    shape = dict((TINY_SHAPES if tiny else SHAPES)[name])
    arch = shape.pop("arch")
    tok = build_tokenizer([f"w{i}" for i in range(shape["vocab_size"] - len(SPECIAL))])
    config = (Qwen2Config if arch == "qwen2" else LlamaConfig)(
        max_position_embeddings=4096, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, **shape)
    folder = directory / name
    config.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def vocabulary_words(folder: Path) -> int:
    """How many ``w<i>`` words the shape's tokenizer knows (the data's word range)."""
    from mixdpo_kit.modeling.tiny import SPECIAL

    return json.loads((folder / "config.json").read_text())["vocab_size"] - len(SPECIAL)


def materialise(folder: Path, device: torch.device, dtype: torch.dtype, quantize: bool,
                quant_storage: torch.dtype = torch.uint8):
    """The shape's model with seeded random weights drawn on ``device`` in ``dtype``; with
    ``quantize``, its linear layers (not the head) in 4-bit NF4 with double quantisation."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from mixdpo_kit.modeling.model import disable_dropout, keep_cpu_4bit_differentiable, quantization_config

    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder), dtype=dtype)
    if quantize:
        bnb_config = quantization_config(dtype)
        bnb_config.bnb_4bit_quant_storage = quant_storage
        quantize_4bit_in_place(model, dtype, quant_storage)
        # What transformers' bitsandbytes loader sets: peft picks its 4-bit LoRA layers by it, TRL
        # casts adapters by it, and the Trainer leaves a bitsandbytes model where it is.
        model.is_loaded_in_4bit = True
        model.quantization_method = "bitsandbytes"
        model.config.quantization_config = bnb_config.to_dict()
        keep_cpu_4bit_differentiable(model)
    disable_dropout(model)
    return model


def quantize_4bit_in_place(model: torch.nn.Module, compute_dtype: torch.dtype, quant_storage: torch.dtype,
                           skip: tuple[str, ...] = ("lm_head",)) -> int:
    """Replace every ``nn.Linear`` outside ``skip`` by a ``bnb.nn.Linear4bit`` holding its weight in
    NF4 (double quantisation), one layer at a time so the full-precision copy never doubles.
    Returns the number of layers replaced."""
    import bitsandbytes as bnb

    replaced = 0
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if type(child) is not torch.nn.Linear or child_name in skip:
                continue
            layer = bnb.nn.Linear4bit(child.in_features, child.out_features, bias=child.bias is not None,
                                      compute_dtype=compute_dtype, compress_statistics=True, quant_type="nf4",
                                      quant_storage=quant_storage, device="meta")
            weight = bnb.nn.Params4bit(child.weight.data, requires_grad=False, compress_statistics=True,
                                       quant_type="nf4", quant_storage=quant_storage, module=layer)
            layer.weight = weight.to(child.weight.device)  # quantises on that device
            if child.bias is not None:
                layer.bias = torch.nn.Parameter(child.bias.data, requires_grad=False)
            setattr(parent, child_name, layer)
            replaced += 1
    return replaced


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("directory", type=Path)
    ap.add_argument("shape", choices=sorted(SHAPES))
    ap.add_argument("--tiny", action="store_true", help="the shape's tiny stand-in (the CPU rehearsal)")
    args = ap.parse_args(argv)
    print(write_shape(args.shape, args.directory, args.tiny))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
