"""CPU benchmark of prompt sharing at real lengths: the kit with one row per pair (prompt computed
once) vs one row per sequence vs TRL 1.16's DPOTrainer at its best setting, against a floor.

    .venv/bin/python bench/prompt_sharing.py --out docs/benchmarks_prompt_sharing.json

Lengths: every pair's prompt, chosen and rejected token counts come from the real files in
``../shared/data/`` (the UltraFeedback sample; HH-RLHF's harmless-base test transcripts, whose
shared prefix is most of the sequence), tokenised by the kit's own pipeline (default limits: 1,024
tokens, prompt 512) with a byte-level BPE of 32,000 tokens trained on those texts. The benchmark's
pairs have exactly those lengths in a 128,256-word vocabulary (Llama-3's size; one word, one token).
Model: a random-weight Llama (``--layers`` x ``--hidden``, untied head) with LoRA r 16 on all linear
layers, fp32, no gradient checkpointing, batch 4 pairs, DPO on every pair (0 % hard).

Configurations, each in its own process, rounds interleaved:
- ``kit_shared``: the kit's trainer as ``mixdpo-kit train`` builds it (``model.share_prompt`` on, the
  default: each batch shares its prompts where that costs the decoder less, see ``pairbatch``);
- ``kit_separate``: the same with ``model.share_prompt: false``;
- ``trl_precomputed``: TRL's DPOTrainer with ``precompute_ref_log_probs=True`` (its fastest);
- the floor, in the ``kit_shared`` process on the same batches: one bare forward and backward of
  the same model over each batch's unique tokens (each prompt once, each response once) through
  transformers' own forward, the LM head applied only where a response token is predicted, loss =
  the sum of those logits; the separate floor, the same over the ``kit_separate`` batches (each
  prompt twice). Their ratio is the gain sharing can reach at all on this model ("attainable").
Step time is the mean over every step after the first, pooled over rounds (a batch's lengths set
its cost, and each side trains every batch of the epoch); the spread is each round's mean. Tokens
are counted from the batches each side received (real tokens and padded positions).

Separate processes differ by a few per cent from one another (allocator state, the machine's other
load), as much as the layouts differ on some shapes. So the ``kit_shared`` process also compares
the layouts *paired*: after training, on the same batches, one training step (forward and
backward, as ``Trainer.training_step`` runs it) with every pair in one shared row and one with
separate rows, the order alternating, ``--paired-repeats`` times; it reports the per-batch median
times, the layout the kit chose for each batch, and whether that was the faster one.
"""
from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu_vs_trl import in_process  # noqa: E402  (one process per configuration)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SOURCES = {"ultrafeedback": "ultrafeedback-sample", "hh-rlhf": str(SHARED / "hh-rlhf-harmless-base-test.jsonl.gz")}
VOCAB, BATCH = 128256, 4


def real_lengths(source: str, n: int, seed: int = 0) -> list[tuple[int, int, int]]:
    """(prompt, chosen, rejected) token counts of ``n`` pairs drawn from ``source`` as the kit
    tokenises them (default limits), with a BPE trained on the source's own text."""
    from mixdpo_kit.data.loading import load_preferences
    from mixdpo_kit.modeling.tiny import build_text_tokenizer
    from mixdpo_kit.data.tokenization import TokenizationSettings, tokenize_pairs

    pairs, _ = load_preferences(source)
    texts = [t if isinstance(t, str) else " ".join(m["content"] for m in t)
             for side in ("prompt", "chosen", "rejected") for t in pairs[side]]
    tok = build_text_tokenizer(texts, vocab_size=32000)
    ds, _ = tokenize_pairs(pairs, tok, TokenizationSettings(max_length=1024, max_prompt_length=512))
    rows = random.Random(seed).sample(range(len(ds)), n)
    return [(len(ds[i]["prompt_ids"]), len(ds[i]["chosen_ids"]), len(ds[i]["rejected_ids"])) for i in rows]


def build(workdir: Path, lengths, hidden: int, layers: int) -> tuple[str, str]:
    """A random-weight Llama with a 128,256-word tokenizer and a JSONL of pairs of ``lengths``."""
    from transformers import AutoModelForCausalLM

    from mixdpo_kit.modeling.tiny import SPECIAL, build_tokenizer, tiny_config

    words = [f"w{i}" for i in range(VOCAB - len(SPECIAL))]
    tok = build_tokenizer(words)
    config = tiny_config("llama", vocab_size=len(tok), hidden=hidden, layers=layers)
    config.max_position_embeddings = 2048
    config.bos_token_id, config.eos_token_id, config.pad_token_id = tok.bos_token_id, tok.eos_token_id, tok.pad_token_id
    model_dir = workdir / "model"
    if not model_dir.exists():
        AutoModelForCausalLM.from_config(config).save_pretrained(model_dir)
        tok.save_pretrained(model_dir)
    rng = random.Random(0)
    text = lambda k: " ".join(rng.choice(words) for _ in range(max(1, k)))  # noqa: E731
    # The chat template adds 8 tokens around a prompt and 3 around a response (as bench/real_vocab.py).
    rows = [{"prompt": [{"role": "user", "content": text(p - 8)}],
             "chosen": [{"role": "assistant", "content": text(c - 3)}],
             "rejected": [{"role": "assistant", "content": text(r - 3)}],
             "score_chosen": 8.0, "score_rejected": 2.0} for p, c, r in lengths]
    data = workdir / f"pairs-{len(lengths)}.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    return str(model_dir), str(data)


class Probe:
    """Step wall times and the tokens of every batch a collator produced."""

    def __init__(self):
        self.seconds, self.tokens, self.positions, self.batches, self.features = [], [], [], [], []

    def collator(self, collate, keep: bool = False):
        def counted(features):
            batch = collate(features)
            self.tokens.append(int(batch["attention_mask"].sum()))
            self.positions.append(int(batch["input_ids"].numel()))
            if keep:
                self.batches.append(batch)
                self.features.append(features)
            return batch
        return counted

    def callback(self):
        from transformers import TrainerCallback

        probe = self

        class Timer(TrainerCallback):
            def on_step_begin(self, args, state, control, **kw):
                probe._start = time.perf_counter()

            def on_step_end(self, args, state, control, **kw):
                probe.seconds.append(time.perf_counter() - probe._start)
        return Timer()

    def result(self, pairs: int) -> dict:
        steps = len(self.seconds)
        return {"pairs": pairs, "steps_s": self.seconds[1:], "steps_timed": steps - 1,
                "tokens_per_pair": sum(self.tokens[:steps]) / pairs,
                "positions_per_pair": sum(self.positions[:steps]) / pairs}


def run_kit(model: str, data: str, workdir: str, share_prompt: bool, floor: bool = False,
            paired_repeats: int = 0) -> dict:
    import warnings


    from mixdpo_kit.core.config import preset
    from mixdpo_kit.modeling.model import build_policy
    from mixdpo_kit.objectives.routing import resolve
    from mixdpo_kit.training.pipeline import analyze_data, build_trainer

    warnings.simplefilter("ignore")
    cfg = resolve(preset("demo").override(
        model={"name_or_path": model, "mode": "lora", "lora_r": 16, "gradient_checkpointing": False,
               "share_prompt": share_prompt},
        sft_warmup={"enabled": False}, data={"source": data, "max_length": 2048, "max_prompt_length": 1024},
        loss={"objective": "curriculum_dpo", "beta": 0.1, "label_smoothing": 0.0}, split={"tau": -1e9},
        train={"per_device_train_batch_size": BATCH, "num_train_epochs": 1, "learning_rate": 1e-4,
               "logging_steps": 10, "seed": 0},
        cache={"dir": str(Path(workdir) / "cache")}))
    policy = build_policy(cfg.model)
    prep = analyze_data(cfg, policy=policy)
    probe = Probe()
    start = time.perf_counter()
    trainer, _ = build_trainer(cfg, policy, prep, Path(tempfile.mkdtemp()), save_strategy="no", disable_tqdm=True,
                               callbacks=[probe.callback()])
    precompute = time.perf_counter() - start
    sharing = trainer.data_collator.sharing  # what the kit's collator shares, per batch
    trainer.data_collator = probe.collator(trainer.data_collator, keep=floor)
    trainer.train()
    out = {**probe.result(len(prep.dataset)), "precompute_s": precompute, "hard": int(prep.split.n_hard)}
    # Peak RSS of the training itself (the floor below holds a full chunk of logits at once).
    out["train_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if floor:
        timed = probe.batches[1: len(probe.seconds)]
        out["floor_step_s"] = float(np.mean([floor_step(policy.model, b) for b in timed]))
        out["body_floor_step_s"] = float(np.mean([floor_step(policy.model, b, head=False) for b in timed]))
    if paired_repeats:
        out["paired"] = paired_layouts(trainer, sharing, probe.features[1: len(probe.seconds)], paired_repeats)
    return out


def paired_layouts(trainer, sharing, feature_batches: list, repeats: int) -> dict:
    """Each batch's training step (forward and backward) with its pairs in shared rows and in
    separate rows, alternating which goes first; per batch the median over ``repeats``, the layout
    the kit's collator (``sharing``) chose, and which layout was faster."""
    from mixdpo_kit.modeling.pairbatch import PromptSharing
    from mixdpo_kit.training.trainer import PairCollator

    pad = trainer.processing_class.pad_token_id
    layouts = {"shared": PromptSharing(True), "separate": PromptSharing(False)}
    seconds = {name: [[] for _ in feature_batches] for name in layouts}
    for rep in range(repeats):
        for i, features in enumerate(feature_batches):
            for name in (list(layouts) if (rep + i) % 2 == 0 else list(reversed(layouts))):
                inputs = PairCollator(pad, layouts[name])(features)
                start = time.perf_counter()
                trainer.training_step(trainer.model, inputs)
                seconds[name][i].append(time.perf_counter() - start)
                trainer.model.zero_grad(set_to_none=True)
    median = {name: [float(np.median(t)) for t in ts] for name, ts in seconds.items()}
    chose_shared = ["pair_mask" in PairCollator(pad, sharing)(features) for features in feature_batches]
    chosen = [median["shared" if c else "separate"][i] for i, c in enumerate(chose_shared)]
    faster_shared = [a <= b for a, b in zip(median["shared"], median["separate"])]
    return {"repeats": repeats, "shared_s": median["shared"], "separate_s": median["separate"],
            "chose_shared": chose_shared, "agreed": sum(c == f for c, f in zip(chose_shared, faster_shared)),
            "batches": len(feature_batches),
            "shared_vs_separate": sum(median["separate"]) / sum(median["shared"]),
            "choice_vs_separate": sum(median["separate"]) / sum(chosen),
            "choice_vs_best_per_batch": sum(map(min, median["shared"], median["separate"])) / sum(chosen)}


def floor_step(model, batch: dict, head: bool = True) -> float:
    """One bare forward and backward over a batch's unique tokens (the shared rows), the LM head
    only where a response token is predicted, loss = the sum of those logits; ``head=False``: the
    decoder stack alone (loss = the sum of its output), a bound no step that scores tokens can reach."""
    from mixdpo_kit.modeling.pairbatch import ResponseBatch, unwrap_model

    rows = ResponseBatch.from_inputs(batch)
    causal_lm = unwrap_model(model)  # its decoder stack carries the LoRA layers; its head is applied below
    start = time.perf_counter()
    hidden = causal_lm.model(**rows.model_inputs(model)).last_hidden_state
    out = causal_lm.get_output_embeddings()(hidden[rows.token_row, rows.source_col]) if head else hidden
    out.sum().backward()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def run_trl(model: str, data: str, workdir: str) -> dict:
    from real_vocab import trl_dpo_trainer

    probe = Probe()
    start = time.perf_counter()  # TRL 1.16 computes the reference log-probs in its constructor
    trainer = trl_dpo_trainer(model, data, max_length=2048, batch=BATCH, callbacks=[probe.callback()])
    trainer.data_collator = probe.collator(trainer.data_collator)
    trainer.train()
    total = time.perf_counter() - start
    return {**probe.result(len(trainer.train_dataset)), "precompute_s": total - sum(probe.seconds), "hard": 0}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--pairs", type=int, default=32, help="pairs per dataset (an epoch at batch 4)")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2, help="rounds of the kit's configurations, interleaved")
    ap.add_argument("--trl-rounds", type=int, default=1, help="rounds of TRL's (its steps take minutes here)")
    ap.add_argument("--sources", default="ultrafeedback,hh-rlhf")
    ap.add_argument("--configs", default="", help="comma-separated subset (default: all; the floor needs kit_shared)")
    ap.add_argument("--paired-repeats", type=int, default=3,
                    help="repeats of the paired in-process layout comparison in kit_shared's first round (0: none)")
    ap.add_argument("--out", default="docs/benchmarks_prompt_sharing.json")
    args = ap.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="mixdpo-sharing-"))
    report = {"model": f"llama {args.layers}x{args.hidden}, vocab {VOCAB}, LoRA r=16, fp32, CPU", "batch_pairs": BATCH,
              "pairs": args.pairs, "rounds": args.rounds, "trl_rounds": args.trl_rounds, "sources": {}}
    for name in args.sources.split(","):
        lengths = real_lengths(SOURCES[name], args.pairs)
        model, data = build(workdir / name, lengths, args.hidden, args.layers)
        p, c, r = (np.array(x, float) for x in zip(*lengths))
        runs = {"kit_shared": (run_kit, {"share_prompt": True, "floor": True}),
                "kit_separate": (run_kit, {"share_prompt": False, "floor": True}),
                "trl_precomputed": (run_trl, {})}
        runs = {k: v for k, v in runs.items() if not args.configs or k in args.configs.split(",")}
        samples: dict[str, list[dict]] = {k: [] for k in runs}
        for round_ in range(args.rounds):
            for config, (fn, kwargs) in runs.items():
                if config.startswith("trl") and round_ >= args.trl_rounds:
                    continue
                paired = {"paired_repeats": args.paired_repeats} if config == "kit_shared" and round_ == 0 else {}
                res = in_process(fn, model=model, data=data, workdir=str(workdir / f"{name}-{config}-{round_}"),
                                 **kwargs, **paired)
                samples[config].append(res)
                print(f"{name} round {round_} {config:16s} step {np.mean(res['steps_s']):.2f} s  "
                      f"{res['tokens_per_pair']:.0f} tokens/pair  peak RSS {res['peak_rss_mb']:.0f} MB", flush=True)
        results = {}
        for config, rs in samples.items():
            step = float(np.mean([s for x in rs for s in x["steps_s"]]))
            peak = max(x.get("train_peak_rss_mb", x["peak_rss_mb"]) for x in rs)
            results[config] = {**{k: v for k, v in rs[0].items() if k != "paired"}, "step_s": step, "step_s_rounds": [float(np.mean(x["steps_s"])) for x in rs],
                               "pairs_per_s": BATCH / step, "peak_rss_mb": peak}
        report["sources"][name] = {"lengths": {"prompt_median": float(np.median(p)), "chosen_median": float(np.median(c)),
                                               "rejected_median": float(np.median(r)),
                                               "tokens_saved_by_sharing": float(p.sum() / (2 * p + c + r).sum())},
                                   "configs": results}
        ratios = report["sources"][name]
        floors = {}
        for config, prefix in (("kit_shared", ""), ("kit_separate", "separate_")):
            if config in samples:
                floors.update({f"{prefix}{k}": float(np.median([x[f"{k}_step_s"] for x in samples[config]]))
                               for k in ("floor", "body_floor")})
        if "kit_shared" in samples and "paired" in samples["kit_shared"][0]:
            ratios["paired"] = samples["kit_shared"][0]["paired"]
            print(f"{name} paired: shared vs separate {ratios['paired']['shared_vs_separate']:.3f}x, the kit's "
                  f"choice {ratios['paired']['choice_vs_separate']:.3f}x", flush=True)
        if "floor" in floors and "separate_floor" in floors:
            # What sharing can gain at all on this model: the bare floor's own speed-up.
            ratios["attainable_gain"] = floors["separate_floor"] / floors["floor"]
        ratios.update({f"{k}_step_s": v for k, v in floors.items()})
        for a in results:  # pairs/s of each side against the others, and speed as a fraction of each floor
            ratios.update({f"{a}_vs_{b}": results[a]["pairs_per_s"] / results[b]["pairs_per_s"] for b in results if b != a})
            ratios.update({f"{a}_vs_{f}": v / results[a]["step_s"] for f, v in floors.items()})
            if "trl_precomputed" in results and a != "trl_precomputed":
                ratios[f"{a}_rss_vs_trl"] = results[a]["peak_rss_mb"] / results["trl_precomputed"]["peak_rss_mb"]
        print(json.dumps({k: v for k, v in report["sources"][name].items() if k != "configs"}, indent=1), flush=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
