"""GPU check: QLoRA MixDPO steps on randomly initialised real-size architectures, vs TRL.

Run once on a machine with one CUDA GPU (no internet needed: configs are built locally):

    python bench/gpu_qlora.py --out $OUT/gpu_qlora.json            # Qwen2.5-1.5B and Llama-3-8B shapes
    python bench/gpu_qlora.py --tiny --steps 2 --out /tmp/x.json   # the same code path on a CPU, tiny

For each architecture it saves a random bf16 checkpoint, loads it in 4-bit NF4 (double quantisation),
adds LoRA (r=16, all linear layers) with gradient checkpointing, and runs MixDPO steps at sequence
length 1024 (12 % of pairs routed to SFT), then TRL's DPOTrainer with the same QLoRA setup. It
records pairs/s, tokens/s (tokens actually processed) and peak GPU memory of both and their
ratios, the memory estimate of ``mixdpo_kit.memory`` for the same settings, and whether the 8B
step fits in 15 GiB (a Colab T4's budget), at each batch of ``--batches`` (1 and 2 pairs). The
kit's log-probs take its chunked path (the LM head over response tokens only, a chunk at a time).
Both sides leave their first step out of the timing.
"""
from __future__ import annotations

import argparse
import gc
import json
import tempfile
import time
from pathlib import Path

import torch
from transformers import TrainerCallback

SHAPES = {
    "qwen2.5-1.5b": dict(arch="qwen2", hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                         num_attention_heads=12, num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "llama-3-8b": dict(arch="llama", hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                       num_attention_heads=32, num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False),
}
TINY = {"tiny": dict(arch="llama", hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2, vocab_size=32000, tie_word_embeddings=False)}


def save_random_checkpoint(shape: dict, directory: Path) -> Path:
    from transformers import LlamaConfig, Qwen2Config, AutoModelForCausalLM

    from mixdpo_kit.tiny import build_tokenizer

    shape = dict(shape)
    arch = shape.pop("arch")
    config = (Qwen2Config if arch == "qwen2" else LlamaConfig)(max_position_embeddings=4096, **shape)
    with torch.device("cpu"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(directory)
    build_tokenizer().save_pretrained(directory)  # ids only matter up to the vocabulary size
    del model
    gc.collect()
    return directory


def synthetic_pairs(n: int, seq_len: int, hard_fraction: float = 0.12) -> dict:
    """Random texts over the tiny word vocabulary: each word is one token for both trainers."""
    import random

    from mixdpo_kit.synthetic import VOCAB_WORDS

    rng = random.Random(0)
    words = lambda k: " ".join(rng.choice(VOCAB_WORDS) for _ in range(k))  # noqa: E731
    half = seq_len // 2
    g = torch.Generator().manual_seed(0)
    return {"prompt": [words(half) for _ in range(n)], "chosen": [words(half - 1) for _ in range(n)],
            "rejected": [words(half - 1) for _ in range(n)], "hard": torch.rand(n, generator=g) < hard_fraction}


def kit_steps(path: str, pairs: dict, steps: int, batch: int) -> dict:
    from mixdpo_kit.config import ModelConfig
    from mixdpo_kit.logprobs import pad_sequences, sequence_logps
    from mixdpo_kit.losses import PairLogps, make_loss, routed_loss
    from mixdpo_kit.model import build_policy

    policy = build_policy(ModelConfig(name_or_path=path, mode="qlora", lora_r=16, gradient_checkpointing=True))
    model, device = policy.model, next(policy.model.parameters()).device
    tok = policy.tokenizer
    ids = {k: [tok(t, add_special_tokens=False)["input_ids"] for t in pairs[k]] for k in ("prompt", "chosen", "rejected")}
    eos = [tok.eos_token_id]
    autocast = torch.autocast("cuda", dtype=policy.dtype, enabled=torch.cuda.is_available() and policy.dtype != torch.float32)
    model.train()  # as the Trainer does before its first step
    print("kit: gradient checkpointing", getattr(model, "is_gradient_checkpointing", None), flush=True)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    loss = make_loss("dpo", {"beta": 0.01, "label_smoothing": 0.1})  # MixDPO's cDPO
    torch.cuda.reset_peak_memory_stats() if torch.cuda.is_available() else None
    tokens, start = 0, None
    for step in range(steps + 1):  # step 0 warms up kernels and is not timed
        if step == 1:
            torch.cuda.synchronize() if torch.cuda.is_available() else None
            start = time.perf_counter()
        idx = (torch.arange(step * batch, (step + 1) * batch) % len(pairs["hard"])).tolist()
        hard = pairs["hard"][idx]
        p = [ids["prompt"][i] for i in idx]
        seqs_p = p + [p[k] for k in range(batch) if not hard[k]]
        seqs_r = [ids["chosen"][i] + eos for i in idx] + [ids["rejected"][i] + eos for k, i in enumerate(idx)
                                                           if not hard[k]]
        input_ids, att, resp = (t.to(device) for t in pad_sequences(seqs_p, seqs_r, 0))
        # Mixed precision as the kit's Trainer runs it (TrainingArguments bf16/fp16 = autocast).
        with autocast:
            with torch.no_grad(), policy.reference() as ref:
                ref_lp, _ = sequence_logps(ref, input_ids, att, resp)
            lp, n = sequence_logps(model, input_ids, att, resp)
        b = batch
        rej = torch.full_like(lp[:b], float("nan")).masked_scatter(~hard.to(device), lp[b:])
        ref_rej = torch.full_like(lp[:b], float("nan")).masked_scatter(~hard.to(device), ref_lp[b:])
        hard_b = hard.to(device).to(lp.dtype)
        out = routed_loss(PairLogps(lp[:b], rej, n[:b], n[:b], ref_lp[:b], ref_rej), loss, hard_b, 1 - hard_b)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step >= 1:
            tokens += int(att.sum())
    torch.cuda.synchronize() if torch.cuda.is_available() else None
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else float("nan")
    del policy, model, opt
    gc.collect()
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
    # Tokens actually sent through the policy: pairs routed to SFT send only their chosen sequence.
    return {"pairs_per_s": steps * batch / seconds, "tokens_per_s": tokens / seconds, "peak_gib": peak}


def trl_steps(path: str, pairs: dict, steps: int, batch: int) -> dict:
    import datasets
    import trl
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    dtype = torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float32
    bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                             bnb_4bit_compute_dtype=dtype)
    model = AutoModelForCausalLM.from_pretrained(path, quantization_config=bnb, dtype=dtype,
                                                 device_map={"": 0} if torch.cuda.is_available() else {"": "cpu"})
    tok = AutoTokenizer.from_pretrained(path)
    n = batch * (steps + 1)
    ds = datasets.Dataset.from_dict({k: pairs[k][:n] for k in ("prompt", "chosen", "rejected")})
    args = trl.DPOConfig(output_dir=tempfile.mkdtemp(), beta=0.01, per_device_train_batch_size=batch, max_steps=steps + 1,
                         gradient_checkpointing=True, bf16=dtype == torch.bfloat16, report_to="none",
                         save_strategy="no", logging_steps=1, max_length=None, use_cpu=not torch.cuda.is_available())
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    clock = TimeFromSecondStep()
    trainer = trl.DPOTrainer(model=model, args=args, train_dataset=ds, processing_class=tok, peft_config=lora,
                             callbacks=[clock])
    torch.cuda.reset_peak_memory_stats() if torch.cuda.is_available() else None
    trainer.train()
    seconds = time.perf_counter() - clock.start
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else float("nan")
    # Every synthetic pair has the same word counts; each word is one token, plus EOS on both responses.
    per_pair = 2 * len(pairs["prompt"][0].split()) + len(pairs["chosen"][0].split()) + len(pairs["rejected"][0].split()) + 2
    del trainer, model
    gc.collect()
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
    return {"pairs_per_s": steps * batch / seconds, "tokens_per_s": steps * batch * per_pair / seconds, "peak_gib": peak}


class TimeFromSecondStep(TrainerCallback):
    """Starts the clock when the second optimiser step begins, as the kit's loop does (step 0 warms up)."""

    start = None

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == 1:
            torch.cuda.synchronize() if torch.cuda.is_available() else None
            self.start = time.perf_counter()


def main(argv=None) -> int:
    from mixdpo_kit.memory import ModelShape, estimate_gpu_memory

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--batches", default="1,2", help="pairs per step, one run each (does the 8B step fit at each?)")
    ap.add_argument("--shapes", help="comma-separated names from SHAPES (default: all)")
    ap.add_argument("--tiny", action="store_true", help="a tiny config, to check the code path on a CPU")
    args = ap.parse_args(argv)
    shapes = TINY if args.tiny else {k: v for k, v in SHAPES.items() if not args.shapes or k in args.shapes.split(",")}
    seq_len = 64 if args.tiny else args.seq_len
    results = {"device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu", "seq_len": seq_len}
    for name, shape in shapes.items():
        results[name] = {}
        with tempfile.TemporaryDirectory() as tmp:
            path = str(save_random_checkpoint(shape, Path(tmp) / name))
            pairs = synthetic_pairs(64, seq_len)
            for batch in map(int, args.batches.split(",")):
                row = {"kit_mixdpo": kit_steps(path, pairs, args.steps, batch)}
                try:
                    row["trl_dpo"] = trl_steps(path, pairs, args.steps, batch)
                except Exception as err:  # keep the kit's numbers even if the peer fails (e.g. out of memory)
                    row["trl_dpo"] = {"error": repr(err)}
                cfg = {k: v for k, v in shape.items() if k != "arch"}
                est = estimate_gpu_memory(ModelShape(cfg["hidden_size"], cfg["num_hidden_layers"],
                                                     cfg["intermediate_size"], cfg["vocab_size"],
                                                     cfg["num_attention_heads"], cfg["num_key_value_heads"],
                                                     cfg["tie_word_embeddings"]),
                                          "qlora", seq_len=seq_len, batch_size=batch, lora_r=16)
                row["estimate_gib"] = est["total"]
                if "error" not in row["trl_dpo"]:
                    row["pairs_per_s_ratio_vs_trl"] = row["kit_mixdpo"]["pairs_per_s"] / row["trl_dpo"]["pairs_per_s"]
                    row["peak_ratio_vs_trl"] = row["kit_mixdpo"]["peak_gib"] / row["trl_dpo"]["peak_gib"]
                row["fits_15_gib"] = row["kit_mixdpo"]["peak_gib"] < 15 if torch.cuda.is_available() else None
                results[name][f"batch {batch}"] = row
                print(name, batch, json.dumps(row), flush=True)
                Path(args.out).write_text(json.dumps(results, indent=2))  # after each row: a cut-off run keeps its rows
    Path(args.out).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
