"""How pairs become model rows: one row per prompt+response, or one row per pair with the prompt shared.

A preference pair's two sequences start with the same prompt. Run separately (as DPO
implementations usually do), the prompt goes through the model twice. Shared, one row holds
``prompt + chosen + rejected``: a 4-D attention mask keeps the rejected tokens from seeing the
chosen ones, and their position ids restart where the prompt ends, so every token sees exactly
what it would see in its own row, and log-probs and gradients are the same.

Sharing is not free everywhere: the rejected queries still multiply out the chosen keys they may
not see, so a shared row's attention covers (prompt + chosen + rejected)^2 positions. Where the
prompt is short beside long responses and the model is narrow, that can outweigh the prompt pass
it saves. So a batch shares its prompts only where the decoder's estimated matmul work
(:meth:`~mixdpo_kit.modeling.shape.ModelShape.decoder_flops`) is no larger than in separate rows;
the LM head costs the same either way (it sees response tokens only).

Either way the result is a :class:`ResponseBatch`: the model inputs plus, for each response token,
the row and column of its label and of the hidden state that predicts it. Response ``s`` is the
chosen response of pair ``s`` for ``s < n``, then the rejected responses of the pairs that have one,
in order.
"""
from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass

import torch

from mixdpo_kit.core.errors import UserError
from mixdpo_kit.modeling.shape import ModelShape

# Attention implementations that apply an arbitrary 4-D mask (flash-attention kernels do not).
MASKABLE_ATTENTION = ("sdpa", "eager")


@dataclass
class ResponseBatch:
    """Model inputs and where each response token sits in them.

    The label of token ``t`` is ``input_ids[token_row[t], token_col[t]]``, predicted by the hidden
    state at ``(token_row[t], source_col[t])``; it is token ``token_pos[t]`` of response ``token_seq[t]``.
    """

    input_ids: torch.Tensor  # [B, W]
    attention_mask: torch.Tensor  # [B, W]: 1 for a token, 0 for padding
    pair_mask: torch.Tensor | None  # [B, 1, W, W] bool (True: may attend) where pairs share a row
    position_ids: torch.Tensor | None  # [B, W]; None: 0, 1, 2, ... as the model's default
    token_row: torch.Tensor
    token_col: torch.Tensor
    source_col: torch.Tensor
    token_seq: torch.Tensor
    token_pos: torch.Tensor
    response_lengths: torch.Tensor  # [S]

    @property
    def shared(self) -> bool:
        """Whether chosen and rejected responses share their prompt's row."""
        return self.pair_mask is not None

    def to(self, device) -> "ResponseBatch":
        """The same batch on ``device``."""
        return dataclasses.replace(self, **{f.name: None if getattr(self, f.name) is None else
                                            getattr(self, f.name).to(device) for f in dataclasses.fields(self)})

    def as_inputs(self) -> dict[str, torch.Tensor]:
        """Its tensors by name, for a data collator (Trainer moves a batch dict's tensors to the device)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}

    @classmethod
    def from_inputs(cls, inputs: dict) -> "ResponseBatch":
        """The batch a collator's :meth:`as_inputs` dict describes."""
        return cls(**{f.name: inputs.get(f.name) for f in dataclasses.fields(cls)})

    def model_inputs(self, model) -> dict:
        """Keyword arguments for ``model(...)``; eager attention takes its mask additive, in the model's dtype."""
        mask = self.pair_mask if self.shared else self.attention_mask
        if self.shared and attention_implementation(model) == "eager":
            dtype = next(model.parameters()).dtype
            dtype = dtype if dtype.is_floating_point else torch.float32
            mask = torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, torch.finfo(dtype).min)
        out = {"input_ids": self.input_ids, "attention_mask": mask, "use_cache": False}
        if self.position_ids is not None:
            out["position_ids"] = self.position_ids
        return out

    def per_response(self, scored: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Token values ``[T]`` laid out per response: values and mask, both ``[S, longest response]``."""
        lengths = self.response_lengths.to(scored.device)
        width = int(lengths.max())
        values = torch.zeros((len(lengths), width), dtype=scored.dtype, device=scored.device).index_put(
            (self.token_seq, self.token_pos), scored)
        mask = (torch.arange(width, device=scored.device) < lengths[:, None]).float()  # responses fill from 0
        return values, mask


@dataclass(frozen=True)
class PromptSharing:
    """Whether pairs share their prompt's row on a model, up to how many positions (a sliding
    attention window, which a custom mask would bypass: longer batches go unshared), and the
    model's shape to choose the cheaper layout per batch with (None: share whenever allowed)."""

    enabled: bool
    max_positions: int | None = None
    shape: ModelShape | None = None


def unwrap_model(model):
    """The transformers model inside peft and DDP wrappers (it owns the config and the output layer)."""
    while True:
        if hasattr(model, "get_base_model"):
            model = model.get_base_model()
        elif isinstance(getattr(model, "module", None), torch.nn.Module):
            model = model.module
        else:
            return model


def attention_implementation(model) -> str | None:
    """The attention implementation of the transformers model inside any peft/DDP wrapper."""
    return getattr(getattr(unwrap_model(model), "config", None), "_attn_implementation", None)


def prompt_sharing(model, requested: bool = True) -> PromptSharing:
    """How ``model`` can run pairs: shared where asked and its attention takes a 4-D mask, else
    one row per sequence (said, with why, in a ``UserWarning``: Python shows each once)."""
    if not requested:
        return PromptSharing(False)
    implementation = attention_implementation(model)
    if implementation not in MASKABLE_ATTENTION:
        warnings.warn(f"attention {implementation!r} cannot take the shared-prompt mask: chosen and rejected run "
                      "in separate rows (same numbers, the prompt computed twice)", stacklevel=2)
        return PromptSharing(False)
    config = unwrap_model(model).config
    window = getattr(config, "sliding_window", None)
    layer_types = getattr(config, "layer_types", None)
    if layer_types is not None and "sliding_attention" not in layer_types:
        window = None
    try:
        shape = ModelShape.from_config(config)
    except AttributeError:  # a config without the usual names (no intermediate_size, ...): always share
        shape = None
    return PromptSharing(True, window, shape)


def separate_rows(prompts: list[list[int]], responses: list[list[int]], pad_id: int) -> ResponseBatch:
    """One right-padded row per prompt+response. Padding never changes a log-prob: it is masked out
    of attention (right padding keeps positions intact) and never scored."""
    return _rows([[(p, 0), (r, 1)] for p, r in zip(prompts, responses)], pad_id, shared=False)


def shared_rows(prompts: list[list[int]], chosen: list[list[int]], rejected: list, pad_id: int) -> ResponseBatch:
    """One row per pair: prompt, chosen, then rejected (``None``: a pair with no rejected pass)."""
    return _rows([[(p, 0), (c, 1)] + ([] if r is None else [(r, 2)]) for p, c, r in zip(prompts, chosen, rejected)],
                 pad_id, shared=True)


def pair_rows(prompts, chosen, rejected, pad_id: int, sharing: PromptSharing) -> ResponseBatch:
    """The rows of a batch of pairs (``rejected[i]`` None: chosen only): shared where ``sharing``
    allows and, given the model's shape, where that costs the decoder no more work than separate rows."""
    if sharing.enabled:
        longest = max(len(p) + max(len(c), len(r or ())) for p, c, r in zip(prompts, chosen, rejected))
        if sharing.max_positions is None or longest <= sharing.max_positions:
            flops = None if sharing.shape is None else layout_flops(prompts, chosen, rejected, sharing.shape)
            if flops is None or flops["shared"] <= flops["separate"]:  # ties share
                return shared_rows(prompts, chosen, rejected, pad_id)
    keep = [i for i, r in enumerate(rejected) if r is not None]
    return separate_rows(list(prompts) + [prompts[i] for i in keep],
                         list(chosen) + [rejected[i] for i in keep], pad_id)


def layout_flops(prompts, chosen, rejected, shape: ModelShape) -> dict[str, int]:
    """The decoder's forward matmul FLOPs for a batch of pairs in each layout, padding included:
    ``{"shared": ..., "separate": ...}`` (``rejected[i]`` None: a chosen-only pair)."""
    shared_width = max(len(p) + len(c) + len(r or ()) for p, c, r in zip(prompts, chosen, rejected))
    responses = list(chosen) + [r for r in rejected if r is not None]
    separate_prompts = list(prompts) + [p for p, r in zip(prompts, rejected) if r is not None]
    separate_width = max(len(p) + len(x) for p, x in zip(separate_prompts, responses))
    return {"shared": shape.decoder_flops(len(prompts), shared_width),
            "separate": shape.decoder_flops(len(responses), separate_width)}


def _rows(rows: list[list[tuple[list[int], int]]], pad_id: int, shared: bool) -> ResponseBatch:
    """Rows of (tokens, segment) pieces; segment 0 is the prompt, 1 the first response, 2 the second."""
    width = max(sum(len(t) for t, _ in pieces) for pieces in rows)
    n = len(rows)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    segment = torch.full((n, width), -1, dtype=torch.long)  # -1: padding
    position = torch.zeros((n, width), dtype=torch.long)
    index: dict[int, list] = {1: [], 2: []}  # segment -> [(row, start column, length, prompt length)]
    for i, pieces in enumerate(rows):
        col = 0
        prompt_len = len(pieces[0][0])
        if not prompt_len:
            raise UserError(f"pair {i} of the batch has an empty prompt: its first response token has no "
                            "context to be predicted from (a chat template or a BOS token gives it one)")
        for tokens, seg in pieces:
            input_ids[i, col: col + len(tokens)] = torch.tensor(tokens, dtype=torch.long)
            segment[i, col: col + len(tokens)] = seg
            start = 0 if seg == 0 else prompt_len  # each response's positions continue from the prompt's end
            position[i, col: col + len(tokens)] = torch.arange(start, start + len(tokens))
            if seg:
                index[seg].append((i, col, len(tokens), prompt_len))
            col += len(tokens)
    pieces = index[1] + index[2]  # response order: every first response, then the second ones
    lengths = torch.tensor([length for _, _, length, _ in pieces], dtype=torch.long)
    token_seq = torch.repeat_interleave(torch.arange(len(pieces)), lengths)
    token_pos = torch.cat([torch.arange(length) for _, _, length, _ in pieces])
    token_row = torch.cat([torch.full((length,), row) for row, _, length, _ in pieces])
    token_col = torch.cat([torch.arange(col, col + length) for _, col, length, _ in pieces])
    # A response's first token is predicted from the prompt's last token, its others from the one before.
    source_col = token_col - 1
    firsts = torch.cumsum(lengths, 0) - lengths
    source_col[firsts] = torch.tensor([plen - 1 for _, _, _, plen in pieces], dtype=torch.long)
    pair_mask, position_ids = (_shared_mask(segment), position) if shared else (None, None)
    return ResponseBatch(input_ids, (segment >= 0).long(), pair_mask, position_ids, token_row, token_col, source_col,
                         token_seq, token_pos, lengths)


def _shared_mask(segment: torch.Tensor) -> torch.Tensor:
    """[B, 1, W, W] bool: causal, padding keys hidden, second-response queries blind to the first
    response. Each position also sees itself, so a padding row is never fully masked (NaN-free)."""
    width = segment.shape[1]
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    query, key = segment[:, :, None], segment[:, None, :]
    mask = causal & (key >= 0) & ~((query == 2) & (key == 1))
    return (mask | torch.eye(width, dtype=torch.bool))[:, None]
