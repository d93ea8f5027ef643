"""CPU benchmark at real vocabularies: peak memory and pairs/s of the kit vs TRL's DPOTrainer with
precomputed reference log-probs (its fastest option), reference precompute included on both sides.

    .venv/bin/python bench/real_vocab.py --out docs/benchmarks_real_vocab.json

Shapes: a randomly initialised Llama (2 layers, width 256) with Llama-3's vocabulary (128,256) and
Qwen2.5's (151,936), untied head; a word-level tokenizer of that size, so every word is one token;
prompts of 170 tokens and responses of 340 (sequences of about 512), batch 4 pairs, LoRA r 16 on all
linear layers, fp32, no gradient checkpointing. Configurations: TRL DPO, the kit's DPO on every pair
(0 % hard) and MixDPO with 12 % of the pairs routed to SFT, and the kit's DPO with the reference
precompute at batch 64 instead of 16 (``--configs`` picks a subset). Each runs in its own process, so its
peak RSS is its own; rounds interleave the configurations and the median pairs/s is reported.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu_vs_trl import in_process  # noqa: E402  (one process per configuration)

HIDDEN, LAYERS = 256, 2
PROMPT, RESPONSE = 170, 340


def build(workdir: Path, vocab: int, pairs: int, hard_share: float = 0.12) -> tuple[str, str]:
    """A random-weight Llama with a ``vocab``-word tokenizer, and a JSONL of ``pairs`` pairs with
    ratings (``hard_share`` of them at margin 0); returns (model dir, data file)."""
    from transformers import AutoModelForCausalLM

    from mixdpo_kit.modeling.tiny import SPECIAL, build_tokenizer, tiny_config

    words = [f"w{i}" for i in range(vocab - len(SPECIAL))]
    tok = build_tokenizer(words)
    config = tiny_config("llama", vocab_size=len(tok), hidden=HIDDEN, layers=LAYERS)
    config.max_position_embeddings = 2 * (PROMPT + RESPONSE)
    config.bos_token_id, config.eos_token_id, config.pad_token_id = tok.bos_token_id, tok.eos_token_id, tok.pad_token_id
    model_dir = workdir / f"model-{vocab}"
    AutoModelForCausalLM.from_config(config).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    rng = random.Random(0)
    text = lambda n: " ".join(rng.choice(words) for _ in range(n))  # noqa: E731
    rows = []
    for i in range(pairs):
        hard = i < round(hard_share * pairs)
        rows.append({"prompt": [{"role": "user", "content": text(PROMPT - 8)}],
                     "chosen": [{"role": "assistant", "content": text(RESPONSE - 3)}],
                     "rejected": [{"role": "assistant", "content": text(RESPONSE - 3)}],
                     "score_chosen": 5.0 if hard else 8.0, "score_rejected": 5.0 if hard else 2.0})
    data = workdir / f"pairs-{vocab}.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    return str(model_dir), str(data)


def run_kit(model: str, data: str, workdir: str, objective: str, eval_batch: int = 16) -> dict:
    import warnings

    from mixdpo_kit.core.config import preset
    from mixdpo_kit.modeling.model import build_policy
    from mixdpo_kit.objectives.routing import resolve
    from mixdpo_kit.training.pipeline import analyze_data, build_trainer

    warnings.simplefilter("ignore")
    cfg = resolve(preset("demo").override(
        model={"name_or_path": model, "mode": "lora", "lora_r": 16, "gradient_checkpointing": False},
        sft_warmup={"enabled": False}, data={"source": data, "max_length": 2 * (PROMPT + RESPONSE),
                                              "max_prompt_length": 2 * PROMPT},
        loss={"objective": objective, "beta": 0.1, "label_smoothing": 0.0}, split={"tau": 0.5},
        eval={"batch_size": eval_batch},  # the reference precompute runs at this batch (16: the preset default)
        train={"per_device_train_batch_size": 4, "num_train_epochs": 1, "learning_rate": 1e-4, "logging_steps": 10,
               "seed": 0}, cache={"dir": str(Path(workdir) / "cache")}))
    policy = build_policy(cfg.model)
    prep = analyze_data(cfg, policy=policy)
    start = time.perf_counter()  # reference precompute (cold cache) + training
    trainer, _ = build_trainer(cfg, policy, prep, Path(tempfile.mkdtemp()), save_strategy="no", disable_tqdm=True)
    trainer.train()
    return {"pairs": len(prep.dataset), "seconds": time.perf_counter() - start, "hard": int(prep.split.n_hard)}


def trl_dpo_trainer(model: str, data: str, max_length: int, batch: int = 4, callbacks=()):
    """TRL's DPOTrainer at its fastest setting (``precompute_ref_log_probs=True``, computed in this
    constructor) on a JSONL of pairs: fp32 on the CPU, LoRA r 16 on all linear layers, one epoch."""
    import warnings

    import datasets
    import torch
    import trl
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer

    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    ds = datasets.load_dataset("json", data_files=data, split="train").remove_columns(["score_chosen", "score_rejected"])
    tok = AutoTokenizer.from_pretrained(model)
    policy = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
    args = trl.DPOConfig(output_dir=tempfile.mkdtemp(), beta=0.1, loss_type=["sigmoid"], per_device_train_batch_size=batch,
                         precompute_ref_batch_size=16, num_train_epochs=1, learning_rate=1e-4, bf16=False,
                         gradient_checkpointing=False, use_cpu=True, report_to="none", logging_steps=10,
                         save_strategy="no", max_length=max_length, precompute_ref_log_probs=True,
                         disable_tqdm=True, dataloader_num_workers=0)
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    return trl.DPOTrainer(model=policy, args=args, train_dataset=ds, processing_class=tok, peft_config=lora,
                          callbacks=list(callbacks))


def run_trl(model: str, data: str, workdir: str) -> dict:
    start = time.perf_counter()  # the reference precompute runs in the constructor
    trainer = trl_dpo_trainer(model, data, max_length=2 * (PROMPT + RESPONSE))
    trainer.train()
    return {"pairs": len(trainer.train_dataset), "seconds": time.perf_counter() - start, "hard": 0}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--vocabs", default="128256,151936")
    ap.add_argument("--pairs", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=2, help="rounds; the median pairs/s is reported")
    ap.add_argument("--configs", default="", help="comma-separated subset of the configurations (default: all)")
    ap.add_argument("--out", default="docs/benchmarks_real_vocab.json")
    args = ap.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="mixdpo-realvocab-"))
    report = {"model": f"llama {LAYERS}x{HIDDEN}, LoRA r=16, fp32, CPU", "prompt_tokens": PROMPT,
              "response_tokens": RESPONSE, "batch_pairs": 4, "pairs": args.pairs, "repeats": args.repeats, "vocabs": {}}
    for vocab in map(int, args.vocabs.split(",")):
        model, data = build(workdir, vocab, args.pairs)
        runs = {"trl_dpo_precomputed_ref": (run_trl, {}),
                "kit_dpo_0%": (run_kit, {"objective": "curriculum_dpo"}),
                "kit_mixdpo_12%": (run_kit, {"objective": "mixdpo"}),
                # The demo preset's eval batch: with chunked logits only activations grow with it.
                "kit_dpo_0%_eval_batch_64": (run_kit, {"objective": "curriculum_dpo", "eval_batch": 64})}
        runs = {k: v for k, v in runs.items() if not args.configs or k in args.configs.split(",")}
        samples: dict[str, list[dict]] = {name: [] for name in runs}
        for round_ in range(args.repeats):
            for name, (fn, kwargs) in runs.items():
                r = in_process(fn, model=model, data=data, workdir=str(workdir / f"{vocab}-{name}-{round_}"), **kwargs)
                r["pairs_per_s"] = r["pairs"] / r["seconds"]
                samples[name].append(r)
                print(f"vocab {vocab} round {round_} {name:24s} {r['pairs_per_s']:6.2f} pairs/s  "
                      f"peak RSS {r['peak_rss_mb']:6.0f} MB", flush=True)
        results = {name: {"pairs": rs[0]["pairs"], "hard": rs[0]["hard"],
                          "pairs_per_s": float(np.median([r["pairs_per_s"] for r in rs])),
                          "pairs_per_s_all": [r["pairs_per_s"] for r in rs],
                          "peak_rss_mb": max(r["peak_rss_mb"] for r in rs)} for name, rs in samples.items()}
        base = results.get("trl_dpo_precomputed_ref")
        for r in results.values() if base else ():
            r["speed_vs_trl"] = r["pairs_per_s"] / base["pairs_per_s"]
            r["rss_vs_trl"] = r["peak_rss_mb"] / base["peak_rss_mb"]
        report["vocabs"][str(vocab)] = results
    Path(args.out).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
