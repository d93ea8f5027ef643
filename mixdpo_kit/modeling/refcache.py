"""Reference log-probs, computed once with the adapter off and cached on disk as JSON.

The cache key covers everything that changes the numbers: the reference model's identity
(name, revision, weights fingerprint, quantisation, dtype), the tokenisation settings and the
exact token ids of every pair. A later run — another objective, seed or notebook — on the same
data and model reads the file instead of running the reference again. Under several processes
(``accelerate launch``, ``torchrun``) the missing pairs are split between them, the results gathered
in the data's order, and the file written once, by the main process.
"""
from __future__ import annotations

import math
from pathlib import Path

from mixdpo_kit.core.cache import JsonCache, cached_items, digest
from mixdpo_kit.data.tokenization import TOKEN_COLUMNS
from mixdpo_kit.modeling.logprobs import score_pairs



def cache_key(identity: dict, settings: dict, prompt_ids, chosen_ids, rejected_ids) -> str:
    """A hex digest of the model identity, tokenisation settings and token ids."""
    return digest({"model": identity, "tokenization": settings, "layout": "per_item"}, list(prompt_ids),
                  list(chosen_ids), list(rejected_ids))


class ReferenceCache:
    """Reference log-prob sums per pair, stored under ``cache_dir/reference/<key>.json``."""

    def __init__(self, cache_dir: str | Path):
        self.store = JsonCache(Path(cache_dir) / "reference")
        self.computed = 0  # pairs whose reference log-probs this process computed (not read)

    def get_or_compute(self, reference_ctx, ds, needed: list[int], key: str, pad_id: int, batch_size: int,
                       device=None, sort_by_length: bool = True, share_prompt: bool = True
                       ) -> tuple[list[float], list[float]]:
        """Reference chosen/rejected log-prob sums for every row (NaN where not ``needed``).

        ``reference_ctx`` is a context manager yielding the reference module (e.g.
        ``Policy.reference``). Pairs already in the cache file are not recomputed.
        """
        columns = [list(ds[c]) for c in TOKEN_COLUMNS]

        def score(rows: list[int]) -> list[tuple[float, float]]:
            self.computed += len(rows)
            with reference_ctx() as ref:
                chosen, rejected = score_pairs(ref, *columns, pad_id, batch_size, indices=rows, device=device,
                                               sort_by_length=sort_by_length, desc="reference log-probs",
                                               share_prompt=share_prompt)
            return list(zip(chosen.tolist(), rejected.tolist()))

        stored = cached_items(self.store, key, needed, score)
        want = set(needed)
        pick = lambda side: [stored[str(i)][side] if i in want else math.nan for i in range(len(ds))]  # noqa: E731
        return pick(0), pick(1)


def reference_logps(policy, ds, needed: list[int], settings: dict, cache: ReferenceCache, batch_size: int):
    """Reference chosen/rejected log-prob sums of tokenised pairs (NaN where not ``needed``),
    read from ``cache`` or computed with the policy's reference and stored there.

    ``settings``: the tokenisation settings that produced the token ids (part of the key).
    """
    key = cache_key(policy.identity(), settings, *(ds[c] for c in TOKEN_COLUMNS))
    device = next(policy.model.parameters()).device
    return cache.get_or_compute(policy.reference, ds, needed, key, policy.tokenizer.pad_token_id,
                                batch_size=batch_size, device=device, share_prompt=policy.config.share_prompt)
