"""Margin scoring throughput: length-sorted vs naive batches, for a reward model and for the
reference likelihood gap, on the real HH-RLHF harmless-base test split (2,312 pairs of very
different lengths). Same process, same model, same texts; reported as pairs/s and the ratio.

    .venv/bin/python bench/scoring_throughput.py --out docs/benchmarks_scoring.json
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mixdpo_kit.core.config import ModelConfig
from mixdpo_kit.data.loading import load_preferences
from mixdpo_kit.data.tokenization import TokenizationSettings, tokenize_pairs
from mixdpo_kit.margins.scoring import reward_texts, score_texts
from mixdpo_kit.modeling.model import build_policy
from mixdpo_kit.modeling.refcache import ReferenceCache
from mixdpo_kit.modeling.tiny import build_tiny_model, build_tiny_reward_model

HH = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "hh-rlhf-harmless-base-test.jsonl.gz"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--pairs", type=int, default=2312)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--out", default="docs/benchmarks_scoring.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    work = Path(tempfile.mkdtemp())
    ds, _ = load_preferences(str(HH), max_rows=args.pairs)
    results = {}

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    rm_dir = build_tiny_reward_model(work / "rm", hidden=256, layers=4)
    tok = AutoTokenizer.from_pretrained(rm_dir)
    rm = AutoModelForSequenceClassification.from_pretrained(rm_dir).eval()
    chosen, rejected, _ = reward_texts(ds, tok)
    texts = chosen + rejected
    scores = {}
    for sort in (False, True):
        start = time.perf_counter()
        scores[sort] = score_texts(rm, tok, texts, args.batch_size, args.max_length, sort_by_length=sort)
        seconds = time.perf_counter() - start
        results[f"reward_model_{'sorted' if sort else 'naive'}"] = {"pairs_per_s": len(ds) / seconds, "seconds": seconds}
    np.testing.assert_allclose(scores[True], scores[False], atol=1e-4)  # same numbers either way

    policy = build_policy(ModelConfig(name_or_path=str(build_tiny_model(work / "lm", hidden=256, layers=4)), mode="lora"))
    settings = TokenizationSettings(max_length=args.max_length, max_prompt_length=args.max_length // 2)
    tokenized, _ = tokenize_pairs(ds, policy.tokenizer, settings)
    for sort in (False, True):
        cache = ReferenceCache(work / f"cache-{sort}")
        start = time.perf_counter()
        cache.get_or_compute(policy.reference, tokenized, list(range(len(tokenized))), "bench", policy.tokenizer.pad_token_id,
                             batch_size=args.batch_size, sort_by_length=sort)
        seconds = time.perf_counter() - start
        results[f"likelihood_gap_{'sorted' if sort else 'naive'}"] = {"pairs_per_s": len(tokenized) / seconds,
                                                                        "seconds": seconds}
    for kind in ("reward_model", "likelihood_gap"):
        results[f"{kind}_sorted"]["speedup_vs_naive"] = (results[f"{kind}_sorted"]["pairs_per_s"]
                                                         / results[f"{kind}_naive"]["pairs_per_s"])
    for name, r in results.items():
        print(f"{name:24s} {r['pairs_per_s']:8.1f} pairs/s")
    Path(args.out).write_text(json.dumps({"pairs": len(ds), "max_length": args.max_length,
                                          "batch_size": args.batch_size, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
