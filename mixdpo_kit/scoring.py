"""Margins from a model: a reward model's score gap, cached on disk.

Any ``AutoModelForSequenceClassification`` with one output works (ArmoRM-style multi-output
heads use their first output). Conversations are rendered with the reward model's own chat
template when it has one. Texts are scored in length-sorted batches (far less padding, same
numbers); scores are cached as JSON under a key of the model and the exact texts, so a second
call reads them back. (The reference model's likelihood gap lives in ``pipeline.reference_gap``
because it shares the reference log-prob cache.)
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import AutoModelForSequenceClassification, AutoTokenizer


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


@torch.no_grad()
def score_texts(model, tokenizer, texts: list[str], batch_size: int, max_length: int,
                add_special_tokens: bool = True, sort_by_length: bool = True) -> np.ndarray:
    """One scalar score per text from a sequence-classification model."""
    device = next(model.parameters()).device
    order = np.argsort([len(t) for t in texts], kind="stable") if sort_by_length else np.arange(len(texts))
    scores = np.empty(len(texts))
    for start in tqdm(range(0, len(texts), batch_size), desc="reward model", leave=False):
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
    key = hashlib.sha256(json.dumps([model_name, weights_fingerprint(model_name), max_length]).encode())
    for text in chosen + rejected:
        key.update(text.encode())
    path = Path(cache_dir) / "reward_scores" / f"{key.hexdigest()[:24]}.json"
    if path.exists():
        stored = json.loads(path.read_text())
        return np.asarray(stored["chosen"]) - np.asarray(stored["rejected"])
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    device = device or default_device()
    model = AutoModelForSequenceClassification.from_pretrained(model_name, trust_remote_code=trust_remote_code)
    model.config.pad_token_id = tokenizer.pad_token_id  # the model finds each sequence's last token by it
    model.to(device).eval()
    # Rendered templates carry their own special tokens.
    s_c = score_texts(model, tokenizer, chosen, batch_size, max_length, add_special_tokens=not templated)
    s_r = score_texts(model, tokenizer, rejected, batch_size, max_length, add_special_tokens=not templated)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"model": model_name, "chosen": s_c.tolist(), "rejected": s_r.tolist()}))
    return s_c - s_r
