"""GPU benchmark: the kit's QLoRA training, as ``mixdpo-kit train`` runs it, vs TRL's DPOTrainer.

    python bench/gpu_qlora.py --out $OUT/gpu_qlora                 # Qwen2.5-1.5B and Llama-3-8B shapes
    python bench/gpu_qlora.py --tiny --steps 2 --out /tmp/gpu     # the same code on a CPU, tiny shape

Both sides load the same random-weight checkpoint of a real architecture (built locally: no hub)
in 4-bit NF4 with double quantisation, add LoRA (r 16, alpha 32, all linear layers), turn on
gradient checkpointing and train in bf16 (fp32 on a CPU). Every word of the data is one token,
so each sequence is exactly ``--seq-len`` tokens, split between prompt and response as the
medians of the shipped UltraFeedback sample split them.

Configurations, each in its own process (the driver interleaves them, rotating the order each
repeat):
- ``kit_dpo``: the kit's ``curriculum_dpo`` (cDPO on every pair: 0 % hard), each pair's prompt
  computed once (the default);
- ``kit_dpo_separate``: the same with ``model.share_prompt: false`` (one row per sequence);
- ``kit_mixdpo``: MixDPO with 12 % of the pairs at margin 0 (routed to SFT: no rejected and no
  reference pass for them); curriculum order random, so hard pairs fall among the timed steps;
- ``trl_best``: TRL's DPOTrainer with ``precompute_ref_log_probs=True`` (its fastest setting);
- ``trl_default``: TRL's DPOTrainer as it comes (reference computed in every step);
- ``kit_mixdpo_fp16`` (first shape, first batch size): the T4 path forced on (fp16 compute and loss
  scaling), compared with ``kit_mixdpo`` in bf16.
The kit's side is built by ``pipeline.analyze_data`` and ``pipeline.build_trainer``, the code of
``mixdpo-kit train``; its reference precompute runs in the timed process, as TRL's does.

Measured per configuration: each training step's wall time (CUDA-synchronised), of which the
first ``--warmup`` are left out; the reference precompute's time; tokens counted from the
batches the trainer's collator produced; peak GPU memory during the precompute and during
training; a breakdown of the resident memory (4-bit weights, 16-bit weights, LoRA, optimizer
state) and the step's transient peak; optionally (``--snapshot``) a CUDA memory snapshot of one
step at batch 2 (open it at https://pytorch.org/memory_viz). pairs/s amortises the precompute:
``1 / (median step seconds / batch + precompute seconds / pairs)``.

Writes ``OUT.json`` and ``OUT.md`` (a table and the targets: the kit's peak ≤ 0.9× TRL's best,
kit DPO ≥ 1.0× TRL's best pairs/s, MixDPO at 12 % hard ≥ 1.15×; on a CPU they are computed but
say nothing about a GPU).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from stage import measured  # bench/stage.py: wall time and peak memory of a function's calls

SHAPES = {
    "qwen2.5-1.5b": dict(arch="qwen2", hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                         num_attention_heads=12, num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "llama-3-8b": dict(arch="llama", hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                       num_attention_heads=32, num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False),
}
TINY = {"tiny": dict(arch="llama", hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2, vocab_size=2000, tie_word_embeddings=False)}
CONFIGS = ("kit_dpo", "kit_dpo_separate", "kit_mixdpo", "trl_best", "trl_default")
HARD_SHARE = 0.12
BETA, LABEL_SMOOTHING = 0.01, 0.1  # MixDPO's cDPO, on both sides
TEMPLATE_TOKENS = 4  # <s> <|user|> ... <|end|> <|assistant|> around the prompt; <|end|> after a response
T4_GIB = 15.0


# ---------------------------------------------------------------- inputs (driver)

def prompt_share() -> float:
    """The prompt's share of prompt + chosen response, from the medians of the shipped sample."""
    from mixdpo_kit.data.loading import load_preferences

    ds, _ = load_preferences("ultrafeedback-sample")
    prompt = statistics.median(len(p[-1]["content"]) for p in ds["prompt"])
    chosen = statistics.median(len(c) for c in ds["chosen"])  # canonical rows: the response text
    return prompt / (prompt + chosen)


def build_checkpoint(shape: dict, directory: Path) -> Path:
    """Random weights of ``shape`` (bf16 on a GPU, initialised there) with a word-level tokenizer
    of the same vocabulary: every word is one token for both trainers."""
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    from mixdpo_kit.modeling.tiny import SPECIAL, build_tokenizer

    shape = dict(shape)
    arch = shape.pop("arch")
    tok = build_tokenizer([f"w{i}" for i in range(shape["vocab_size"] - len(SPECIAL))])
    config = (Qwen2Config if arch == "qwen2" else LlamaConfig)(
        max_position_embeddings=4096, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, **shape)
    cuda = torch.cuda.is_available()
    torch.manual_seed(0)
    with torch.device("cuda" if cuda else "cpu"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16 if cuda else torch.float32)
    model.save_pretrained(directory)
    tok.save_pretrained(directory)
    del model
    torch.cuda.empty_cache() if cuda else None
    return directory


def build_pairs(path: Path, pairs: int, prompt_words: int, response_words: int, vocab_words: int) -> Path:
    """A JSONL of conversational pairs with ratings; ``HARD_SHARE`` of them tie (margin 0)."""
    import random

    rng = random.Random(0)
    text = lambda n: " ".join(f"w{rng.randrange(vocab_words)}" for _ in range(n))  # noqa: E731
    hard = set(rng.sample(range(pairs), round(HARD_SHARE * pairs)))
    with path.open("w") as f:
        for i in range(pairs):
            f.write(json.dumps({"prompt": [{"role": "user", "content": text(prompt_words)}],
                                "chosen": [{"role": "assistant", "content": text(response_words)}],
                                "rejected": [{"role": "assistant", "content": text(response_words)}],
                                "score_chosen": 5.0 if i in hard else 8.0,
                                "score_rejected": 5.0 if i in hard else 3.0}) + "\n")
    return path


# ---------------------------------------------------------------- measurement (worker)

class StepProbe:
    """Times each training step, counts the tokens of each batch the collator produced, and
    records the resident memory at a step's start and its peak; optionally snapshots one step."""

    def __init__(self, snapshot_step: int | None = None, snapshot_path: str | None = None):
        self.seconds: list[float] = []
        self.tokens: list[int] = []
        self.resident: list[int] = []
        self.step_peak: list[int] = []
        self.snapshot_step, self.snapshot_path = snapshot_step, snapshot_path
        self.optimizer_bytes = 0

    def wrap_collator(self, collator):
        def counted(features):
            batch = collator(features)
            self.tokens.append(int(batch["attention_mask"].sum()))
            return batch
        return counted

    def callback(self):
        from transformers import TrainerCallback

        probe = self

        class Callback(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                    probe.resident.append(torch.cuda.memory_allocated())
                    torch.cuda.reset_peak_memory_stats()
                    if len(probe.seconds) == probe.snapshot_step:
                        torch.cuda.memory._record_memory_history(max_entries=200_000)
                probe._start = time.perf_counter()

            def on_step_end(self, args, state, control, optimizer=None, **kwargs):
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                    probe.step_peak.append(torch.cuda.max_memory_allocated())
                    if len(probe.seconds) == probe.snapshot_step:
                        torch.cuda.memory._dump_snapshot(probe.snapshot_path)
                        torch.cuda.memory._record_memory_history(enabled=None)
                probe.seconds.append(time.perf_counter() - probe._start)
                if optimizer is not None and not probe.optimizer_bytes:
                    probe.optimizer_bytes = sum(t.numel() * t.element_size() for s in optimizer.state.values()
                                                for t in s.values() if torch.is_tensor(t))
        return Callback()


def parameter_bytes(model) -> dict[str, int]:
    """Resident parameter bytes by kind: 4-bit packed weights, trainable (LoRA), other (frozen
    unquantised: embeddings, head, norms) and their dtypes."""
    out: dict[str, int] = {}
    for p in model.parameters():
        kind = "4-bit" if type(p).__name__ == "Params4bit" else "trainable" if p.requires_grad else f"frozen {p.dtype}"
        out[kind] = out.get(kind, 0) + p.numel() * p.element_size()
    return out


def run_kit(model: str, data: str, batch: int, objective: str, probe: StepProbe, work: Path, dtype: str,
            share_prompt: bool = True) -> dict:
    from mixdpo_kit.training import pipeline
    from mixdpo_kit.core.config import preset
    from mixdpo_kit.modeling.model import build_policy
    from mixdpo_kit.objectives.routing import resolve

    cfg = resolve(preset("mixdpo_paper").override(
        model={"name_or_path": model, "mode": "qlora", "lora_r": 16, "lora_alpha": 32, "gradient_checkpointing": True,
               "dtype": dtype, "share_prompt": share_prompt},
        data={"source": data, "max_rows": None, "max_length": 4096, "max_prompt_length": 4096},
        loss={"objective": objective}, split={"tau": 0.5, "quantile": None}, curriculum={"order": "random"},
        train={"per_device_train_batch_size": batch, "gradient_accumulation_steps": 1, "num_train_epochs": 1,
               "max_steps": -1, "logging_steps": 1, "cache_dir": str(work / "cache"), "seed": 0}))
    policy = build_policy(cfg.model)
    prep = pipeline.analyze_data(cfg, policy=policy)
    ref: dict = {}
    measured(pipeline, "reference_logps", "precompute", ref)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    trainer, prep = pipeline.build_trainer(cfg, policy, prep, work / "run", save_strategy="no", disable_tqdm=True,
                                           callbacks=[probe.callback()], show_bar=False)
    precompute_peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else 0
    trainer.data_collator = probe.wrap_collator(trainer.data_collator)
    trainer.train()
    ref_c = trainer.train_dataset["ref_chosen_logps"]
    return {"pairs": len(prep.dataset), "hard": int(prep.split.n_hard), "precompute_s": ref.get("precompute", {}).get("seconds", 0.0),
            "precompute_peak": precompute_peak, "params": parameter_bytes(policy.model),
            "losses": [h["loss"] for h in trainer.state.log_history if "loss" in h],
            "ref_chosen_logps": [float(x) for x in ref_c if x == x][:8]}  # preference pairs (SFT pairs have none)


def run_trl(model: str, data: str, batch: int, precompute: bool, probe: StepProbe, work: Path) -> dict:
    import datasets
    import trl
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    from mixdpo_kit.modeling.model import compute_dtype

    dtype = compute_dtype()
    bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                             bnb_4bit_compute_dtype=dtype)
    policy = AutoModelForCausalLM.from_pretrained(model, quantization_config=bnb, dtype=dtype,
                                                  device_map={"": 0 if torch.cuda.is_available() else "cpu"})
    ds = datasets.load_dataset("json", data_files=data, split="train").remove_columns(["score_chosen", "score_rejected"])
    args = trl.DPOConfig(output_dir=str(work / "run"), beta=BETA, loss_type=["sigmoid"], label_smoothing=LABEL_SMOOTHING,
                         per_device_train_batch_size=batch, num_train_epochs=1, learning_rate=1e-6,
                         gradient_checkpointing=True, bf16=dtype == torch.bfloat16, fp16=dtype == torch.float16,
                         precompute_ref_log_probs=precompute, max_length=None, report_to="none", save_strategy="no",
                         logging_steps=1, disable_tqdm=True, dataloader_num_workers=0, seed=0,
                         use_cpu=not torch.cuda.is_available())
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    ref: dict = {}
    measured(trl.DPOTrainer, "_precompute_ref_logps", "precompute", ref)  # TRL precomputes inside its constructor
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    trainer = trl.DPOTrainer(model=policy, args=args, train_dataset=ds, processing_class=AutoTokenizer.from_pretrained(model),
                             peft_config=lora, callbacks=[probe.callback()])
    precompute_peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else 0
    trainer.data_collator = probe.wrap_collator(trainer.data_collator)
    trainer.train()
    return {"pairs": len(ds), "hard": 0, "precompute_s": ref.get("precompute", {}).get("seconds", 0.0), "precompute_peak": precompute_peak,
            "params": parameter_bytes(trainer.model), "losses": [h["loss"] for h in trainer.state.log_history if "loss" in h]}


def worker(spec: dict) -> dict:
    """One configuration at one batch size, in this process; returns its measurements."""
    import warnings

    warnings.simplefilter("ignore")
    work = Path(tempfile.mkdtemp(prefix="gpu-qlora-"))
    os.environ["HF_DATASETS_CACHE"] = str(work / "datasets")  # a cold cache: TRL's precompute is not read back
    probe = StepProbe(spec["warmup"] if spec.get("snapshot") else None, spec.get("snapshot"))
    name, batch = spec["config"], spec["batch"]
    if name.startswith("kit"):
        objective = "curriculum_dpo" if name.startswith("kit_dpo") else "mixdpo"
        dtype = "float16" if name.endswith("fp16") else "auto"
        out = run_kit(spec["model"], spec["data"], batch, objective, probe, work, dtype,
                      share_prompt=not name.endswith("separate"))
    else:
        out = run_trl(spec["model"], spec["data"], batch, name == "trl_best", probe, work)
    warm = spec["warmup"]
    steps = probe.seconds[warm:]
    q = statistics.quantiles(steps, n=4) if len(steps) > 1 else [steps[0]] * 3
    median = statistics.median(steps)
    out.update(
        config=name, batch=batch, timed_steps=len(steps), step_s_median=median, step_s_iqr=[q[0], q[2]],
        tokens_per_step=statistics.mean(probe.tokens[warm:len(probe.seconds)]),
        pairs_per_s=1 / (median / batch + out["precompute_s"] / out["pairs"]),
        train_peak=max(probe.step_peak, default=0), resident=max(probe.resident, default=0),
        optimizer_bytes=probe.optimizer_bytes)
    out["tokens_per_s"] = out["tokens_per_step"] / median
    out["peak"] = max(out["train_peak"], out["precompute_peak"])
    if not torch.cuda.is_available():  # a CPU run checks the code: its peak is the process's RSS
        out["peak"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out["transient"] = out["train_peak"] - out["resident"]
    return out


# ---------------------------------------------------------------- driver

def rotate(configs: list[str], k: int) -> list[str]:
    k %= len(configs)
    return configs[k:] + configs[:k]


def run_worker(spec: dict) -> dict:
    res = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True)
    if res.returncode != 0:
        tail = res.stderr.strip().splitlines()[-3:]
        return {"config": spec["config"], "batch": spec["batch"], "error": " / ".join(tail).replace("|", "/")}
    return json.loads(res.stdout.strip().splitlines()[-1])


def summarise(rows: list[dict]) -> dict:
    """Median of the repeats per configuration, and the ratios and targets against TRL's best."""
    by: dict[str, list[dict]] = {}
    for r in rows:
        by.setdefault(r["config"], []).append(r)
    out = {}
    for name, rs in by.items():
        ok = [r for r in rs if "error" not in r]
        if not ok:
            out[name] = {"error": rs[0]["error"]}
            continue
        best = sorted(ok, key=lambda r: r["pairs_per_s"])[len(ok) // 2]  # the median repeat
        out[name] = {**best, "pairs_per_s_repeats": [r["pairs_per_s"] for r in ok],
                     "peak": max(r["peak"] for r in ok)}
    base = out.get("trl_best", {})
    if "pairs_per_s" in base:
        for r in out.values():
            if "pairs_per_s" in r:
                r["speed_vs_trl_best"] = r["pairs_per_s"] / base["pairs_per_s"]
                r["peak_vs_trl_best"] = r["peak"] / base["peak"] if base["peak"] else None
    return out


def targets(row: dict) -> dict:
    """The three targets for one shape and batch (None where a side is missing)."""
    get = lambda k, key: row.get(k, {}).get(key)  # noqa: E731
    peaks = [get(k, "peak_vs_trl_best") for k in ("kit_dpo", "kit_mixdpo")]
    return {"kit peak <= 0.9x TRL best": None if None in peaks else max(peaks) <= 0.9,
            "kit DPO >= 1.0x TRL best pairs/s": None if get("kit_dpo", "speed_vs_trl_best") is None
            else get("kit_dpo", "speed_vs_trl_best") >= 1.0,
            "MixDPO 12% >= 1.15x TRL best pairs/s": None if get("kit_mixdpo", "speed_vs_trl_best") is None
            else get("kit_mixdpo", "speed_vs_trl_best") >= 1.15}


def fp16_check(bf16: dict, fp16: dict) -> dict:
    """fp16 (the T4 path) against bf16 on the same pairs, weights and order."""
    import math

    losses = [(a, b) for a, b in zip(bf16.get("losses", []), fp16.get("losses", []))]
    refs = list(zip(bf16.get("ref_chosen_logps", []), fp16.get("ref_chosen_logps", [])))
    finite = all(math.isfinite(x) for pair in losses + refs for x in pair)
    return {"finite": finite, "first_loss": losses[0] if losses else None,
            "max_ref_logp_rel_diff": max((abs(a - b) / max(abs(a), 1e-9) for a, b in refs), default=None),
            "close": finite and bool(refs) and all(abs(a - b) <= 0.01 * abs(a) for a, b in refs)
            and abs(losses[0][0] - losses[0][1]) <= 0.05 * abs(losses[0][0])}


def markdown(report: dict) -> str:
    gib = lambda b: f"{b / 2**30:.2f}"  # noqa: E731
    lines = [f"# QLoRA: the kit vs TRL {report['trl']} on {report['device']}", "",
             f"{report['seq_len']} tokens a sequence (prompt {report['prompt_tokens']}), {report['timed_steps']} timed "
             f"steps after {report['warmup']} warm-up, {report['repeats']} repeat(s). Step time: median (IQR).", "",
             f"| shape | batch | configuration | pairs/s | vs TRL best | step s | tokens/step | {report['memory']} GiB "
             "| vs TRL best |"
             " resident GiB | step transient GiB |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for shape, batches in report["shapes"].items():
        for batch, row in batches.items():
            for name, r in row["configs"].items():
                if "error" in r:
                    lines.append(f"| {shape} | {batch} | {name} | error: {r['error'][-120:]} |" + " |" * 7)
                    continue
                lines.append(
                    f"| {shape} | {batch} | {name} | {r['pairs_per_s']:.2f} | {r.get('speed_vs_trl_best', float('nan')):.2f}× "
                    f"| {r['step_s_median']:.3f} ({r['step_s_iqr'][0]:.3f}–{r['step_s_iqr'][1]:.3f}) "
                    f"| {r['tokens_per_step']:.0f} | {gib(r['peak'])} | {(r.get('peak_vs_trl_best') or float('nan')):.2f}× "
                    f"| {gib(r['resident'])} | {gib(r['transient'])} |")
            lines.append(f"| {shape} | {batch} | targets | " + "; ".join(
                f"{k}: {'met' if v else 'missed' if v is not None else 'n/a'}" for k, v in row["targets"].items())
                + " |" + " |" * 7)
    for key in ("fp16_vs_bf16", "t4_check"):
        if key in report:
            lines += ["", f"{key}: `{json.dumps(report[key])}`"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", help="path without suffix: writes OUT.json and OUT.md (required)")
    ap.add_argument("--steps", type=int, default=20, help="timed steps per configuration")
    ap.add_argument("--warmup", type=int, default=2, help="steps left out of the timing")
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--batches", default="1,2,4")
    ap.add_argument("--repeats", type=int, default=1, help="rounds; the configurations' order rotates each round")
    ap.add_argument("--shapes", help="comma-separated names from SHAPES (default: all)")
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--snapshot", action="store_true", help="a CUDA memory snapshot of one step at batch 2")
    ap.add_argument("--tiny", action="store_true", help="a tiny shape on the CPU: checks the code, measures nothing")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    if not args.out:
        ap.error("--out is required")
    import trl

    shapes = TINY if args.tiny else {k: v for k, v in SHAPES.items() if not args.shapes or k in args.shapes.split(",")}
    seq_len = 64 if args.tiny else args.seq_len
    prompt_tokens = round(prompt_share() * seq_len)
    prompt_words, response_words = prompt_tokens - TEMPLATE_TOKENS, seq_len - prompt_tokens - 1
    out, configs = Path(args.out), args.configs.split(",")
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {"device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu", "trl": trl.__version__,
              "torch": torch.__version__, "memory": "peak allocated" if torch.cuda.is_available() else "peak RSS",
              "seq_len": seq_len, "prompt_tokens": prompt_tokens, "timed_steps": args.steps,
              "warmup": args.warmup, "repeats": args.repeats, "shapes": {}}
    work = Path(tempfile.mkdtemp(prefix="gpu-qlora-models-"))
    for shape_i, (shape_name, shape) in enumerate(shapes.items()):
        start = time.perf_counter()
        model = build_checkpoint(shape, work / shape_name)
        report["shapes"][shape_name] = {}
        for batch in map(int, args.batches.split(",")):
            pairs = (args.warmup + args.steps) * batch
            data = build_pairs(work / f"{shape_name}-{batch}.jsonl", pairs, prompt_words, response_words,
                               shape["vocab_size"] - 7)
            rows = []
            for rep in range(args.repeats):
                for name in rotate(configs, rep + batch):
                    spec = {"config": name, "batch": batch, "model": str(model), "data": str(data),
                            "warmup": args.warmup}
                    if args.snapshot and batch == 2 and rep == 0 and name in ("kit_mixdpo", "trl_best") \
                            and torch.cuda.is_available():
                        spec["snapshot"] = str(out.parent / f"snapshot-{shape_name}-{name}.pickle")
                    rows.append(run_worker(spec))
                    print(shape_name, batch, name, {k: rows[-1].get(k) for k in ("pairs_per_s", "peak", "error")},
                          flush=True)
            summary = summarise(rows)
            report["shapes"][shape_name][f"batch {batch}"] = {"configs": summary, "targets": targets(summary)}
            out.with_suffix(".json").write_text(json.dumps(report, indent=2))  # a cut-off run keeps its rows
        report.setdefault("shape_seconds", {})[shape_name] = time.perf_counter() - start
        if shape_i == 0:  # the T4 path, once, against bf16 (fp32 on a CPU), at the first batch size
            batch = int(args.batches.split(",")[0])
            fp16 = run_worker({"config": "kit_mixdpo_fp16", "batch": batch, "model": str(model),
                               "data": str(work / f"{shape_name}-{batch}.jsonl"), "warmup": args.warmup})
            bf16 = report["shapes"][shape_name].get(f"batch {batch}", {}).get("configs", {}).get("kit_mixdpo", {})
            report["fp16_vs_bf16"] = {"shape": shape_name, **fp16_check(bf16, fp16)} if "error" not in fp16 \
                else {"shape": shape_name, "error": fp16["error"]}
    if "llama-3-8b" in report["shapes"]:
        report["t4_check"] = {b: row["configs"].get("kit_mixdpo", {}).get("peak", float("inf")) / 2**30 <= T4_GIB
                              for b, row in report["shapes"]["llama-3-8b"].items() if b in ("batch 1", "batch 2")}
    out.with_suffix(".json").write_text(json.dumps(report, indent=2))
    out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
