"""CPU benchmark: the kit's routed trainer vs TRL's DPOTrainer on the same model, pairs and lengths.

    .venv/bin/python bench/cpu_vs_trl.py --pairs 512 --repeats 3 --out docs/benchmarks_cpu.json

Both sides: a tiny Llama (4 layers, width 256) in fp32 with a LoRA adapter (r=16, all linear
layers), no gradient checkpointing, batch 8, one epoch over the same built-in pairs, reference =
the model with its adapter off. TRL computes reference log-probs on the fly (its default) and, as
the peer the ratios lead with, precomputed (``precompute_ref_log_probs=True``, TRL's fastest option;
the precompute runs inside ``train()`` and is included in its time).
The kit runs DPO (0 % hard) and MixDPO at 12 % and 50 % hard pairs, with the reference cache
cold (precompute included in the time) and warm (read from disk). Every configuration runs in its
own process so peak RSS is its own; pairs/s is reported as a ratio to TRL's precomputed-reference DPO
(and, second, to its default on-the-fly DPO).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

HIDDEN, LAYERS = 256, 4


def _model_dir(workdir: Path) -> str:
    from mixdpo_kit.modeling.tiny import build_tiny_model

    target = workdir / "model"
    if not (target / "config.json").exists():
        build_tiny_model(target, arch="llama", hidden=HIDDEN, layers=LAYERS, heads=4)
    return str(target)


def _cfg(model: str, workdir: Path, objective: str, hard_fraction: float, pairs: int):
    from mixdpo_kit.core.config import preset

    return preset("demo").override(
        model={"name_or_path": model, "mode": "lora", "lora_r": 16, "gradient_checkpointing": False},
        sft_warmup={"enabled": False}, data={"max_rows": pairs},
        loss={"objective": objective, "beta": 0.1, "label_smoothing": 0.0},
        split={"quantile": hard_fraction if hard_fraction > 0 else None, "tau": 0.5 if hard_fraction > 0 else -1e9},
        train={"per_device_train_batch_size": 8, "num_train_epochs": 1, "learning_rate": 1e-4, "logging_steps": 10,
               "seed": 0}, cache={"dir": str(workdir / "cache")},
    )


def run_kit(model: str, workdir: str, objective: str, hard_fraction: float, pairs: int, warm: bool) -> dict:
    import warnings

    from mixdpo_kit.modeling.model import build_policy
    from mixdpo_kit.objectives.routing import resolve
    from mixdpo_kit.training.pipeline import analyze_data, build_trainer

    warnings.simplefilter("ignore")
    workdir = Path(workdir)
    cfg = resolve(_cfg(model, workdir, objective, hard_fraction, pairs)).override(curriculum={"order": "easy_to_hard"})
    policy = build_policy(cfg.model)
    prep = analyze_data(cfg, policy=policy)
    out = Path(tempfile.mkdtemp())
    if warm:  # fill the cache first (not timed)
        build_trainer(cfg, policy, prep, out / "warmup", save_strategy="no")
    start = time.perf_counter()
    trainer, _ = build_trainer(cfg, policy, prep, out, save_strategy="no", disable_tqdm=True)
    trainer.train()
    seconds = time.perf_counter() - start
    return {"pairs": len(prep.dataset), "seconds": seconds, "hard": int(prep.split.n_hard)}


def run_trl(model: str, workdir: str, pairs: int, precompute: bool) -> dict:
    import warnings

    import torch
    import trl
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mixdpo_kit.data.loading import read_source

    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    raw = read_source("builtin", "train_prefs").select(range(pairs))
    # TRL's conversational format with an explicit prompt: same chat template, same responses.
    ds = raw.map(lambda r: {"prompt": r["chosen"][:-1], "chosen": r["chosen"][-1:], "rejected": r["rejected"][-1:]},
                 remove_columns=raw.column_names)
    tok = AutoTokenizer.from_pretrained(model)
    policy = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
    args = trl.DPOConfig(output_dir=tempfile.mkdtemp(), beta=0.1, loss_type=["sigmoid"], per_device_train_batch_size=8,
                         num_train_epochs=1, learning_rate=1e-4, bf16=False, gradient_checkpointing=False, use_cpu=True,
                         report_to="none", logging_steps=10, save_strategy="no", max_length=64,
                         precompute_ref_log_probs=precompute, disable_tqdm=True, dataloader_num_workers=0)
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    start = time.perf_counter()
    # TRL 1.16 tokenises and, with precompute, computes the reference log-probs in its constructor:
    # both are timed, as the kit's reference precompute is in build_trainer.
    trainer = trl.DPOTrainer(model=policy, args=args, train_dataset=ds, processing_class=tok, peft_config=lora)
    setup = time.perf_counter() - start
    trainer.train()
    return {"pairs": pairs, "seconds": time.perf_counter() - start, "setup_seconds": setup, "hard": 0}


def _child(fn, kwargs, queue):
    result = fn(**kwargs)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put(result)


def in_process(fn, **kwargs) -> dict:
    """Run one configuration in a fresh process (own peak RSS)."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(fn, kwargs, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--pairs", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3, help="rounds; the median pairs/s is reported")
    ap.add_argument("--out", default="docs/benchmarks_cpu.json")
    args = ap.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="mixdpo-bench-"))
    model = _model_dir(workdir)
    runs = {
        "trl_dpo": (run_trl, dict(precompute=False)),
        "trl_dpo_precomputed_ref": (run_trl, dict(precompute=True)),
        "kit_dpo_0%_cold": (run_kit, dict(objective="curriculum_dpo", hard_fraction=0.0, warm=False)),
        "kit_dpo_0%_warm": (run_kit, dict(objective="curriculum_dpo", hard_fraction=0.0, warm=True)),
        "kit_mixdpo_12%_cold": (run_kit, dict(objective="mixdpo", hard_fraction=0.12, warm=False)),
        "kit_mixdpo_12%_warm": (run_kit, dict(objective="mixdpo", hard_fraction=0.12, warm=True)),
        "kit_mixdpo_50%_cold": (run_kit, dict(objective="mixdpo", hard_fraction=0.5, warm=False)),
        "kit_mixdpo_50%_warm": (run_kit, dict(objective="mixdpo", hard_fraction=0.5, warm=True)),
    }
    samples: dict[str, list[dict]] = {name: [] for name in runs}
    for round_ in range(args.repeats):  # rounds interleave the configurations, so drift hits all alike
        for name, (fn, kwargs) in runs.items():
            # A cold cache is a fresh cache folder per configuration and round.
            kwargs = {**kwargs, "workdir": str(workdir / f"{name}-{round_}" if fn is run_kit else workdir)}
            r = in_process(fn, model=model, pairs=args.pairs, **kwargs)
            r["pairs_per_s"] = r["pairs"] / r["seconds"]
            samples[name].append(r)
            print(f"round {round_} {name:26s} {r['pairs_per_s']:7.1f} pairs/s  peak RSS {r['peak_rss_mb']:6.0f} MB",
                  flush=True)
    results = {}
    for name, rs in samples.items():
        results[name] = {"pairs": rs[0]["pairs"], "hard": rs[0]["hard"],
                         "pairs_per_s": float(np.median([r["pairs_per_s"] for r in rs])),
                         "pairs_per_s_all": [r["pairs_per_s"] for r in rs],
                         "peak_rss_mb": max(r["peak_rss_mb"] for r in rs)}
    # Ratios lead against TRL's fastest option (precomputed reference); its default peer comes second.
    best, default = results["trl_dpo_precomputed_ref"], results["trl_dpo"]
    for r in results.values():
        r["speed_vs_trl_precomputed"] = r["pairs_per_s"] / best["pairs_per_s"]
        r["rss_vs_trl_precomputed"] = r["peak_rss_mb"] / best["peak_rss_mb"]
        r["speed_vs_trl_dpo"] = r["pairs_per_s"] / default["pairs_per_s"]
    Path(args.out).write_text(json.dumps({"pairs": args.pairs, "repeats": args.repeats,
                                          "model": f"llama {LAYERS}x{HIDDEN}, LoRA r=16, fp32",
                                          "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
