"""Held-out evaluation: implicit-reward accuracy, log-prob dynamics, generations, true reward."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from transformers import TrainerCallback

from mixdpo_kit.core.distributed import map_shared, on_main
from mixdpo_kit.data import synthetic
from mixdpo_kit.data.tokenization import render_prompt
from mixdpo_kit.modeling.logprobs import eval_mode, score_pairs


def pair_logps(model, ds, pad_id: int, batch_size: int, device=None, share_prompt: bool = True,
               shared: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Chosen and rejected response log-prob sums of every tokenised pair under ``model``
    (``shared``: split between the processes, see :func:`~mixdpo_kit.modeling.logprobs.score_pairs`)."""
    return score_pairs(model, ds["prompt_ids"], ds["chosen_ids"], ds["rejected_ids"], pad_id, batch_size,
                       device=device, share_prompt=share_prompt, shared=shared)


def preference_metrics(policy_logps, reference_logps) -> dict[str, float]:
    """Implicit-reward accuracy (the share of pairs whose log-ratio margin
    ``z = (log pi(y_w) - log pi_ref(y_w)) - (log pi(y_l) - log pi_ref(y_l))`` is positive; any beta
    scales z without changing its sign), the mean z, and the before (reference) / after (policy)
    log-prob means.

    Falling chosen log-probs together with a shrinking chosen-rejected gap is the likelihood
    displacement the MixDPO paper describes for DPO on hard pairs.
    """
    (pc, pr), (rc, rr) = policy_logps, reference_logps
    z = (pc - rc) - (pr - rr)
    return {
        "pairs": int(len(pc)),
        "reward_accuracy": float((z > 0).mean()),
        "logratio_margin": float(z.mean()),
        "logps_chosen_before": float(rc.mean()), "logps_rejected_before": float(rr.mean()),
        "logps_chosen_after": float(pc.mean()), "logps_rejected_after": float(pr.mean()),
        "logps_gap_before": float((rc - rr).mean()), "logps_gap_after": float((pc - pr).mean()),
    }


def generate(model, tokenizer, prompts, max_new_tokens: int, batch_size: int, shared: bool = False,
             **decoding) -> list[str]:
    """Completions of chat or text prompts, batched with left padding: greedy (reproducible) unless
    ``decoding`` asks for sampling (``do_sample=True, temperature=..., top_p=...``). ``shared``: the
    batches are split between the processes of ``accelerate launch`` / ``torchrun`` and the answers
    gathered in the prompts' order (call it on every process); a batch is the same either way."""
    batches = [prompts[start: start + batch_size] for start in range(0, len(prompts), batch_size)]

    def answer(share: list) -> list[list[str]]:
        device = next(model.parameters()).device
        with eval_mode(model):
            return [_generate_batch(model, tokenizer, batch, max_new_tokens, device, decoding) for batch in share]

    answered = map_shared(answer, batches) if shared else answer(batches)
    return [text for batch in answered for text in batch]


def _generate_batch(model, tokenizer, prompts, max_new_tokens: int, device, decoding: dict) -> list[str]:
    """One left-padded batch of completions (the padding side is this call's: the tokenizer is not changed)."""
    texts = [render_prompt(tokenizer, p) for p in prompts]
    # Rendered chat templates carry their own BOS; plain text gets the tokenizer's.
    enc = tokenizer(texts, return_tensors="pt", padding=True, padding_side="left",
                    add_special_tokens=isinstance(prompts[0], str)).to(device)
    out = model.generate(**enc, max_new_tokens=max_new_tokens, **{"do_sample": False, **decoding},
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    return [o.strip() for o in tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)]


def builtin_reward(prompts: list[str], responses: list[str]) -> dict:
    """Mean ground-truth reward and exact-match rate of responses on built-in task prompts,
    plus the per-prompt rewards (for win rates)."""
    rewards = [synthetic.true_reward(p, r) for p, r in zip(prompts, responses)]
    exact = [r.split() == synthetic.solve(p) for p, r in zip(prompts, responses)]
    return {"mean_reward": float(np.mean(rewards)), "exact_match": float(np.mean(exact)), "n": len(rewards),
            "rewards": rewards}


def win_rate(after: list[float], before: list[float]) -> float:
    """Share of prompts where ``after`` beats ``before`` (ties count one half)."""
    a, b = np.asarray(after, float), np.asarray(before, float)
    return float(((a > b) + 0.5 * (a == b)).mean())


class HeldoutLogps(TrainerCallback):
    """Every ``every`` optimiser steps (and before the first), the policy's mean chosen and rejected
    log-probs on held-out pairs, appended to ``metrics.jsonl`` as ``heldout/logps_chosen`` and
    ``heldout/logps_rejected``: the curves that show likelihood displacement as it happens."""

    def __init__(self, model, pairs, pad_id: int, batch_size: int, every: int, path, share_prompt: bool = True):
        self.model, self.pairs, self.pad_id, self.batch_size, self.every = model, pairs, pad_id, batch_size, every
        self.share_prompt = share_prompt
        self.path = Path(path)

    def _record(self, state) -> None:
        # Every process scores its share of the pairs; the main process alone appends the row.
        device = next(self.model.parameters()).device
        chosen, rejected = pair_logps(self.model, self.pairs, self.pad_id, self.batch_size, device,
                                      self.share_prompt, shared=True)
        row = {"step": state.global_step, "heldout/logps_chosen": float(chosen.mean()),
               "heldout/logps_rejected": float(rejected.mean())}
        on_main(append_line, self.path, json.dumps(row))

    def on_train_begin(self, args, state, control, **kw):
        if state.global_step == 0:
            self._record(state)

    def on_step_end(self, args, state, control, **kw):
        if state.global_step % self.every == 0 or state.global_step == state.max_steps:
            self._record(state)


def append_line(path: Path, line: str) -> None:
    """Append one line to a text file."""
    with Path(path).open("a") as f:
        f.write(line + "\n")
