"""Reference log-probs, computed once with the adapter off and cached on disk as JSON.

The cache key covers everything that changes the numbers: the reference model's identity
(name, revision, weights fingerprint, quantisation, dtype), the tokenisation settings and a
hash of the exact token ids of every pair. A later run — another objective, seed or notebook
— on the same data and model reads the file instead of running the reference again.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from tqdm.auto import tqdm

from mixdpo_kit.logprobs import pad_sequences, sequence_logps


def cache_key(identity: dict, settings: dict, prompt_ids, chosen_ids, rejected_ids) -> str:
    """A hex digest of the model identity, tokenisation settings and token ids."""
    h = hashlib.sha256(json.dumps({"model": identity, "tokenization": settings}, sort_keys=True).encode())
    for p, c, r in zip(prompt_ids, chosen_ids, rejected_ids):
        h.update(json.dumps([p, c, r]).encode())
    return h.hexdigest()[:24]


class ReferenceCache:
    """Reference log-prob sums per pair, stored under ``cache_dir/reference/<key>.json``."""

    def __init__(self, cache_dir: str | Path):
        self.dir = Path(cache_dir) / "reference"
        self.computed = 0  # pairs whose reference log-probs this object computed (not read)

    def get_or_compute(self, reference_ctx, ds, needed: list[int], key: str, pad_id: int, batch_size: int,
                       device: torch.device | None = None, sort_by_length: bool = True) -> tuple[list[float], list[float]]:
        """Reference chosen/rejected log-prob sums for every row (NaN where not ``needed``).

        ``reference_ctx`` is a context manager yielding the reference module (e.g.
        ``Policy.reference``). Pairs already in the cache file are not recomputed.
        """
        path = self.dir / f"{key}.json"
        stored = json.loads(path.read_text()) if path.exists() else {"chosen": {}, "rejected": {}}
        todo = [i for i in needed if str(i) not in stored["chosen"]]
        if todo:
            prompt_ids, chosen_ids, rejected_ids = (list(ds[c]) for c in ("prompt_ids", "chosen_ids", "rejected_ids"))
            if sort_by_length:  # far less padding, same numbers
                todo.sort(key=lambda i: len(prompt_ids[i]) + max(len(chosen_ids[i]), len(rejected_ids[i])))
            with reference_ctx() as ref, torch.no_grad():
                was_training = ref.training
                ref.eval()
                for start in tqdm(range(0, len(todo), batch_size), desc="reference log-probs", leave=False):
                    idx = todo[start: start + batch_size]
                    prompts = [prompt_ids[i] for i in idx] * 2
                    responses = [chosen_ids[i] for i in idx] + [rejected_ids[i] for i in idx]
                    ids, att, resp = pad_sequences(prompts, responses, pad_id)
                    if device is not None:
                        ids, att, resp = ids.to(device), att.to(device), resp.to(device)
                    logps, _ = sequence_logps(ref, ids, att, resp)
                    for k, i in enumerate(idx):
                        stored["chosen"][str(i)] = float(logps[k])
                        stored["rejected"][str(i)] = float(logps[len(idx) + k])
                ref.train(was_training)
            self.computed += len(todo)
            self.dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")  # several processes (DDP ranks) may write at once
            tmp.write_text(json.dumps(stored))
            tmp.replace(path)
        nan = float("nan")
        want = set(needed)
        chosen = [stored["chosen"][str(i)] if i in want else nan for i in range(len(ds))]
        rejected = [stored["rejected"][str(i)] if i in want else nan for i in range(len(ds))]
        return chosen, rejected
