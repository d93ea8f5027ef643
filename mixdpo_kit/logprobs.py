"""Scoring responses: pad prompt+response pairs, sum response-token log-probs, split chosen from
rejected. One path for the trainer's reference fallback, the reference cache, the evaluation and
the likelihood-gap margins."""
from __future__ import annotations

import contextlib

import numpy as np
import torch

from mixdpo_kit.progress import bar


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


@contextlib.contextmanager
def eval_mode(model):
    """No gradients and eval mode inside; the model's training flag is restored on exit."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)


def score_pair_batch(model, prompts, chosen, rejected, pad_id: int, device=None):
    """Summed response log-probs of the chosen and of the rejected response of each pair."""
    ids, att, resp = pad_sequences(list(prompts) * 2, list(chosen) + list(rejected), pad_id)
    if device is not None:
        ids, att, resp = ids.to(device), att.to(device), resp.to(device)
    logps, _ = sequence_logps(model, ids, att, resp)
    return logps[: len(prompts)], logps[len(prompts):]


def score_pairs(model, prompt_ids, chosen_ids, rejected_ids, pad_id: int, batch_size: int, indices=None,
                device=None, sort_by_length: bool = True, desc: str = "scoring pairs"):
    """Chosen and rejected log-prob sums (numpy arrays) of the pairs at ``indices`` (default: all),
    in eval mode, in batches sorted by length (far less padding, same numbers)."""
    idx = list(range(len(prompt_ids))) if indices is None else list(indices)
    order = sorted(range(len(idx)), key=lambda k: len(prompt_ids[idx[k]]) + max(
        len(chosen_ids[idx[k]]), len(rejected_ids[idx[k]]))) if sort_by_length else list(range(len(idx)))
    chosen, rejected = np.empty(len(idx)), np.empty(len(idx))
    with eval_mode(model):
        for start in bar(range(0, len(order), batch_size), desc):
            ks = order[start: start + batch_size]
            rows = [idx[k] for k in ks]
            c, r = score_pair_batch(model, [prompt_ids[i] for i in rows], [chosen_ids[i] for i in rows],
                                    [rejected_ids[i] for i in rows], pad_id, device)
            chosen[ks], rejected[ks] = c.float().cpu().numpy(), r.float().cpu().numpy()
    return chosen, rejected
