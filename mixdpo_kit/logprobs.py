"""Batching pairs into padded sequences and summing response-token log-probs."""
from __future__ import annotations

import torch


def pad_sequences(prompts: list[list[int]], responses: list[list[int]], pad_id: int):
    """Right-padded ``input_ids``, ``attention_mask`` and ``response_mask`` for prompt+response pairs.

    Padding never changes a sequence's log-prob: it is masked out of attention (right padding
    keeps positions intact) and out of the response mask.
    """
    lengths = [len(p) + len(r) for p, r in zip(prompts, responses)]
    width = max(lengths)
    n = len(lengths)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    attention = torch.zeros((n, width), dtype=torch.long)
    response = torch.zeros((n, width), dtype=torch.long)
    for i, (p, r) in enumerate(zip(prompts, responses)):
        ids = p + r
        input_ids[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention[i, : len(ids)] = 1
        response[i, len(p): len(ids)] = 1
    return input_ids, attention, response


def token_logps(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_mask: torch.Tensor):
    """Per-token log-probs of each sequence and the response-token mask (both [N, L-1]).

    Token t is scored by the logits at t-1, so the first response token is predicted from the
    last prompt token; prompt and padding tokens are masked out.
    """
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits[:, :-1]
    labels = input_ids[:, 1:]
    mask = response_mask[:, 1:].to(torch.float32)
    # log_softmax in fp32: bf16/fp16 logits lose the small differences DPO depends on.
    logps = torch.log_softmax(logits.float(), dim=-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    return logps * mask, mask


def sequence_logps(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_mask: torch.Tensor):
    """Sum of response-token log-probs and the response token count, one per sequence."""
    logps, mask = token_logps(model, input_ids, attention_mask, response_mask)
    return logps.sum(-1), mask.sum(-1)


def low_confidence_stats(logps: torch.Tensor, mask: torch.Tensor):
    """ConfPO's critical tokens: log-prob sum and count over response tokens whose log-prob is
    below the log of the response's mean token probability (the selection is not differentiated)."""
    with torch.no_grad():
        mean_prob = (logps.exp() * mask).sum(-1) / mask.sum(-1).clamp(min=1)
        critical = (logps < mean_prob.clamp(min=1e-30).log().unsqueeze(-1)) & (mask > 0)
    critical = critical.to(logps.dtype)
    return (logps * critical).sum(-1), critical.sum(-1)
