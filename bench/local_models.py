"""Random-weight models of real architectures, built locally for a machine with no hub.

    python bench/local_models.py DIR           # DIR/policy: the Qwen2.5-0.5B shape; DIR/reward: a small judge
    python bench/local_models.py DIR --tiny    # small shapes of the same architectures (a CPU check)

Both share a byte-level BPE tokenizer trained on the shipped UltraFeedback sample's text, so the
real sample trains at its real token lengths. The policy keeps Qwen2.5's vocabulary size
(151,936 rows in the embedding and LM head, the cost that dominates a real step) although the
tokenizer uses fewer ids; generated ids beyond the tokenizer's decode to nothing.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

QWEN2_5_0_5B = dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                    num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True, max_position_embeddings=32768)
TINY_POLICY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, vocab_size=8192, tie_word_embeddings=True, max_position_embeddings=4096)
REWARD = dict(hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
              tie_word_embeddings=False, max_position_embeddings=4096)


def sample_tokenizer(vocab_size: int):
    """A BPE tokenizer trained on the sample's prompts and answers (a few seconds)."""
    from mixdpo_kit.data.loading import read_source
    from mixdpo_kit.modeling.tiny import build_text_tokenizer

    rows = read_source("ultrafeedback-sample")
    texts = [r["prompt"][-1]["content"] + "\n" + r["chosen"][-1]["content"] + "\n" + r["rejected"][-1]["content"]
             for r in rows]
    return build_text_tokenizer(texts, vocab_size=vocab_size)


def build(directory: Path, tiny: bool) -> dict[str, Path]:
    """Save ``policy`` and ``reward`` under ``directory``; returns their paths."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, Qwen2Config

    tok = sample_tokenizer(8000)
    ids = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    paths = {"policy": directory / "policy", "reward": directory / "reward"}
    policy = AutoModelForCausalLM.from_config(Qwen2Config(**(TINY_POLICY if tiny else QWEN2_5_0_5B), **ids),
                                              dtype=torch.float32 if tiny else torch.bfloat16)
    policy.generation_config.pad_token_id, policy.generation_config.eos_token_id = tok.pad_token_id, tok.eos_token_id
    policy.save_pretrained(paths["policy"])
    reward = AutoModelForSequenceClassification.from_config(Qwen2Config(**REWARD, vocab_size=len(tok), num_labels=1,
                                                                        **ids))
    reward.save_pretrained(paths["reward"])
    for path in paths.values():
        tok.save_pretrained(path)
    return paths


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("directory", type=Path)
    ap.add_argument("--tiny", action="store_true")
    args = ap.parse_args(argv)
    for name, path in build(args.directory, args.tiny).items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
