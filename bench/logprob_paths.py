"""The chunked log-prob path vs the plain full-logits path, in one process: time of a forward +
backward through ``token_logps`` on a LoRA Llama, at the built-in task's tiny vocabulary and at
Llama-3's, and the share of the chunked step spent in the LM head (a profile).

    .venv/bin/python bench/logprob_paths.py --out docs/benchmarks_logprob_paths.json

Rounds alternate the two paths so drift hits both alike; the median is reported.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

SHAPES = {  # name: (vocab, hidden, layers, sequences, prompt tokens, response tokens)
    "built-in task (vocab 30, batch 8 pairs)": (30, 256, 4, 16, 24, 40),
    "Llama-3 vocab (128,256, batch 4 pairs)": (128256, 256, 2, 8, 170, 340),
}


def _model(vocab: int, hidden: int, layers: int):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from mixdpo_kit.modeling.tiny import tiny_config

    torch.manual_seed(0)
    config = tiny_config("llama", vocab_size=vocab, hidden=hidden, layers=layers)
    config.max_position_embeddings = 1024
    return get_peft_model(AutoModelForCausalLM.from_config(config),
                          LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"))


def _step(fn, model, batch) -> float:
    start = time.perf_counter()
    logps, mask = fn(model, batch)
    (-(logps.sum(-1) / mask.sum(-1)).mean()).backward()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def main(argv=None) -> int:
    from mixdpo_kit.modeling import logprobs
    from mixdpo_kit.modeling.pairbatch import separate_rows

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default="docs/benchmarks_logprob_paths.json")
    args = ap.parse_args(argv)
    results = {}
    for name, (vocab, hidden, layers, n, prompt, response) in SHAPES.items():
        model = _model(vocab, hidden, layers)
        g = torch.Generator().manual_seed(0)
        ids = torch.randint(0, vocab, (n, prompt + response), generator=g).tolist()
        batch = separate_rows([row[:prompt] for row in ids], [row[prompt:] for row in ids], 0)
        paths = {"plain": logprobs.plain_token_logps, "chunked": logprobs.token_logps}
        for fn in paths.values():  # warm-up
            _step(fn, model, batch)
        times = {k: [] for k in paths}
        for _ in range(args.rounds):
            for key, fn in paths.items():
                times[key].append(_step(fn, model, batch))
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            _step(logprobs.token_logps, model, batch)
        head = sum(e.self_cpu_time_total for e in prof.key_averages()
                   if e.key in ("aten::addmm", "aten::mm", "aten::linear", "aten::logsumexp", "aten::_softmax"))
        total = sum(e.self_cpu_time_total for e in prof.key_averages())
        med = {k: statistics.median(v) for k, v in times.items()}
        results[name] = {"seconds_plain": med["plain"], "seconds_chunked": med["chunked"],
                         "chunked_vs_plain_time": med["chunked"] / med["plain"],
                         "matmul_softmax_share_of_chunked_step": head / total,
                         "rounds_plain": times["plain"], "rounds_chunked": times["chunked"]}
        print(name, json.dumps({k: round(v, 3) for k, v in results[name].items() if not k.startswith("rounds")}),
              flush=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
