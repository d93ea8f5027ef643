"""One rank of the shared-stages check; run by tests/training/test_distributed.py, alone or via torchrun.

    python -m torch.distributed.run --nproc_per_node 2 tests/training/stages_worker.py MODEL REWARD_MODEL OUT

Runs every stage that shares its work between processes — reference log-probs (through the
likelihood-gap margin), CHES, a reward model's margins, held-out pair log-probs, generation and
``generate_answers`` — and records, per stage, the results, the rows this process's decoders ran
(a global forward hook, so it counts what the models computed, not what the kit says it did) and
the files it wrote.
"""
import json
import os
import sys
from collections import Counter
from pathlib import Path

import torch

from mixdpo_kit.core.cache import JsonCache
from mixdpo_kit.core.distributed import end_processes
from mixdpo_kit.core.config import preset
from mixdpo_kit.evaluation.evaluate import generate, pair_logps
from mixdpo_kit.evaluation.generation import Decoding, generate_answers
from mixdpo_kit.margins.sources import MarginContext, compute_margins
from mixdpo_kit.modeling.model import build_policy
from mixdpo_kit.training.pipeline import analyze_data, tokenized_pairs
from mixdpo_kit.data.tokenization import TokenizationSettings

DECODERS = ("LlamaModel",)  # the transformer body of both the causal LM and the reward model
rows, stage = Counter(), ["setup"]


def count_rows(module, args, output):
    if type(module).__name__ in DECODERS:
        rows[stage[0]] += int(output.last_hidden_state.shape[0])


def main(model_dir: str, reward_dir: str, out_dir: str) -> None:
    rank = int(os.environ.get("RANK", 0))
    out = Path(out_dir)
    cfg = preset("demo").override(
        model={"name_or_path": model_dir, "mode": "lora"}, sft_warmup={"enabled": False},
        data={"max_rows": 40}, margins={"reward_model": reward_dir, "batch_size": 4},
        eval={"batch_size": 4}, cache={"dir": str(out / "cache")})
    writes = []
    put = JsonCache.put
    JsonCache.put = lambda self, key, doc: (writes.append(f"{self.dir.name}/{key}"), put(self, key, doc))[1]
    torch.nn.modules.module.register_module_forward_hook(count_rows)
    torch.manual_seed(0)
    policy = build_policy(cfg.model)
    prep = analyze_data(cfg, policy=policy)
    ctx = MarginContext(cfg, policy)
    record = {}
    for source in ("likelihood_gap", "ches", "reward_model"):
        stage[0] = source
        record[source] = compute_margins(prep.dataset, source, ctx).tolist()
    tok = policy.tokenizer
    pairs = tokenized_pairs("builtin", "test_prefs", 24, TokenizationSettings.from_config(cfg.data), tok)
    stage[0] = "pair_logps"
    record["pair_logps"] = [x.tolist() for x in pair_logps(policy.model, pairs, tok.pad_token_id, 4, shared=True)]
    chats = [[{"role": "user", "content": p}] for p in pairs["prompt"][:8]] if isinstance(pairs["prompt"][0], str) \
        else list(pairs["prompt"][:8])
    stage[0] = "generate"
    record["generate"] = generate(policy.model, tok, chats, 6, 2, shared=True)
    stage[0] = "generate_answers"
    prompts = [{"id": f"p{i}", "instruction": c[-1]["content"], "dataset": "t", "id_field": "id", "category": ""}
               for i, c in enumerate(chats)]
    answers = generate_answers(policy.model, tok, prompts, out / "answers" / "a.json", "a", Decoding(max_new_tokens=6),
                               batch_size=2)
    record["generate_answers"] = [a["output"] for a in answers]
    (out / f"rank{rank}.json").write_text(json.dumps({"results": record, "rows": rows, "cache_writes": writes}))


if __name__ == "__main__":
    main(*sys.argv[1:4])
    end_processes()
