"""A decoder's shape from its config alone, and the matmul work it does on a batch of rows.

The memory estimate (``memory``), the run-time estimate (``cost``) and the choice of row layout
for a batch of pairs (``pairbatch``) all need the same few numbers of a model's ``config.json``.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelShape:
    """The few numbers of a decoder config the estimates need."""

    hidden: int
    layers: int
    intermediate: int
    vocab: int
    heads: int
    kv_heads: int
    tied_embeddings: bool = False

    @classmethod
    def from_config(cls, config) -> "ModelShape":
        """From a transformers config object."""
        heads = config.num_attention_heads
        return cls(config.hidden_size, config.num_hidden_layers, config.intermediate_size, config.vocab_size, heads,
                   getattr(config, "num_key_value_heads", None) or heads,
                   bool(getattr(config, "tie_word_embeddings", False)))

    def linear_params_per_layer(self) -> int:
        """Weights of one decoder layer's linear maps (attention projections and the MLP)."""
        head_dim = self.hidden // self.heads
        attn = self.hidden * self.hidden * 2 + 2 * self.hidden * self.kv_heads * head_dim  # q, o, k, v
        return attn + 3 * self.hidden * self.intermediate  # gate, up, down

    def lora_params(self, r: int) -> int:
        """Trainable parameters of a rank-``r`` LoRA adapter on every linear map of every layer."""
        head_dim = self.hidden // self.heads
        kv = self.kv_heads * head_dim
        shapes = [(self.hidden, self.hidden)] * 2 + [(self.hidden, kv)] * 2 + \
                 [(self.hidden, self.intermediate)] * 2 + [(self.intermediate, self.hidden)]
        return self.layers * sum(r * (a + b) for a, b in shapes)

    def embedding_params(self) -> int:
        """Input embedding plus output head (one matrix when they are tied)."""
        return self.vocab * self.hidden * (1 if self.tied_embeddings else 2)

    def decoder_flops(self, rows: int, width: int) -> int:
        """Forward matmul FLOPs of the decoder stack (the LM head left out) over ``rows`` padded rows
        of ``width`` positions: every position through the linear maps, and attention's two products
        over every query-key pair of a row, since a custom attention mask skips none of them."""
        linear = 2 * self.linear_params_per_layer() * width
        attention = 4 * self.hidden * width * width
        return self.layers * rows * (linear + attention)


# Published shapes (their config.json files), for estimates without downloading anything.
PUBLISHED_SHAPES = {
    "Llama-3-8B": ModelShape(hidden=4096, layers=32, intermediate=14336, vocab=128256, heads=32, kv_heads=8),
    "Qwen2.5-7B": ModelShape(hidden=3584, layers=28, intermediate=18944, vocab=152064, heads=28, kv_heads=4),
}
