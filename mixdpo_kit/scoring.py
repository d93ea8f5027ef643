"""Margins from a model: a reward model's score gap, and the reference model's likelihood gap.

Both register themselves as margin sources (see :mod:`mixdpo_kit.margins`).

Reward models: any ``AutoModelForSequenceClassification`` with one output works (ArmoRM-style
multi-output heads use their first output). Conversations are rendered with the reward model's
own chat template when it has one. Texts are scored in length-sorted batches (far less padding,
same numbers); scores are cached under a key of the model and the exact texts.

Likelihood gap: the reference's mean per-token log-likelihood of chosen minus rejected, read from
(or added to) the reference log-prob cache the trainer uses.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from mixdpo_kit.cache import JsonCache, digest
from mixdpo_kit.logprobs import eval_mode
from mixdpo_kit.progress import bar
from mixdpo_kit.margins import register_margin_source
from mixdpo_kit.refcache import ReferenceCache, reference_logps
from mixdpo_kit.tokenization import TokenizationSettings


def reward_texts(ds, tokenizer) -> tuple[list[str], list[str], bool]:
    """(chosen texts, rejected texts, rendered-with-template) for every pair."""
    templated = bool(getattr(tokenizer, "chat_template", None)) and len(ds) > 0 and isinstance(ds[0]["prompt"], list)
    chosen, rejected = [], []
    for row in ds:
        for response, out in ((row["chosen"], chosen), (row["rejected"], rejected)):
            if templated:
                out.append(tokenizer.apply_chat_template(row["prompt"] + [{"role": "assistant", "content": response}],
                                                         tokenize=False))
            elif isinstance(row["prompt"], list):
                out.append("\n".join(m["content"] for m in row["prompt"]) + "\n" + response)
            else:
                out.append(row["prompt"] + response)
    return chosen, rejected, templated


def score_texts(model, tokenizer, texts: list[str], batch_size: int, max_length: int,
                add_special_tokens: bool = True, sort_by_length: bool = True) -> np.ndarray:
    """One scalar score per text from a sequence-classification model."""
    device = next(model.parameters()).device
    order = np.argsort([len(t) for t in texts], kind="stable") if sort_by_length else np.arange(len(texts))
    scores = np.empty(len(texts))
    with eval_mode(model):
        for start in bar(range(0, len(texts), batch_size), "reward model"):
            idx = order[start: start + batch_size]
            enc = tokenizer([texts[i] for i in idx], return_tensors="pt", padding=True, truncation=True,
                            max_length=max_length, add_special_tokens=add_special_tokens).to(device)
            scores[idx] = model(**enc).logits[:, 0].float().cpu().numpy()
    return scores


def reward_model_margins(ds, model_name: str, cache_dir: str | Path, batch_size: int, max_length: int,
                         trust_remote_code: bool = False, device=None) -> np.ndarray:
    """``score(chosen) − score(rejected)`` under a reward model, cached on disk."""
    from mixdpo_kit.model import default_device, weights_fingerprint

    tokenizer = AutoTokenizer.from_pretrained(model_name, trust_remote_code=trust_remote_code)
    chosen, rejected, templated = reward_texts(ds, tokenizer)
    cache = JsonCache(Path(cache_dir) / "reward_scores")
    key = digest([model_name, weights_fingerprint(model_name), max_length], chosen, rejected)
    stored = cache.get(key)
    if stored is None:
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        model = AutoModelForSequenceClassification.from_pretrained(model_name, trust_remote_code=trust_remote_code)
        model.config.pad_token_id = tokenizer.pad_token_id  # the model finds each sequence's last token by it
        model.to(device or default_device())
        # Rendered templates carry their own special tokens.
        stored = {"model": model_name,
                  "chosen": score_texts(model, tokenizer, chosen, batch_size, max_length, not templated).tolist(),
                  "rejected": score_texts(model, tokenizer, rejected, batch_size, max_length, not templated).tolist()}
        cache.put(key, stored)
    return np.asarray(stored["chosen"]) - np.asarray(stored["rejected"])


@register_margin_source("reward_model", "a reward model's score gap (margins.reward_model: NAME_OR_PATH)",
                        unit="reward-model score")
def reward_model_source(ds, ctx, arg=None) -> np.ndarray:
    mc = ctx.cfg.margins
    if not mc.reward_model:
        raise ValueError("margin source 'reward_model' needs margins.reward_model (a model name or path)")
    return reward_model_margins(ds, mc.reward_model, ctx.cfg.train.cache_dir, mc.batch_size, ctx.cfg.data.max_length,
                                ctx.cfg.model.trust_remote_code)


@register_margin_source("likelihood_gap", "the reference's per-token log-likelihood gap, chosen − rejected",
                        needs_tokens=True, unit="nats per token")
def likelihood_gap_source(ds, ctx, arg=None) -> np.ndarray:
    cfg = ctx.cfg
    chosen, rejected = reference_logps(ctx.policy, ds, list(range(len(ds))), _token_settings(cfg.data),
                                       ReferenceCache(cfg.train.cache_dir), cfg.eval.batch_size)
    n_c = np.array([len(x) for x in ds["chosen_ids"]], float)
    n_r = np.array([len(x) for x in ds["rejected_ids"]], float)
    return np.asarray(chosen) / n_c - np.asarray(rejected) / n_r


def _token_settings(data_cfg) -> dict:
    return TokenizationSettings.from_config(data_cfg).to_dict()

