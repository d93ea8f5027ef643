"""One configuration of the QLoRA benchmark in this process: the kit's trainer, as ``mixdpo-kit
train`` builds it, or TRL's DPOTrainer, on a random-weight shape at real size.

    python bench/gpu_qlora.py --worker '{"config": "kit_mixdpo", "shape": DIR, "batches": [1, 2], ...}' --result R.json

``bench/gpu_check.py`` runs it, one process per configuration, and prints the comparison. Both
sides train the same shape (:mod:`shapes`: weights drawn in memory, seeded) in 4-bit NF4 with
double quantisation, LoRA r 16 / alpha 32 on all linear layers, gradient checkpointing, bf16 on a
GPU (fp32 on a CPU). Every word of the data is one token, so each sequence is exactly ``seq_len``
tokens, split between prompt and response as the medians of the shipped UltraFeedback sample
split them.

Configurations:
- ``kit_dpo``: the kit's ``curriculum_dpo`` (cDPO on every pair: 0 % hard), each pair's prompt
  computed once (the default);
- ``kit_dpo_separate``: the same with ``model.share_prompt: false`` (one row per sequence);
- ``kit_mixdpo``: MixDPO with 12 % of the pairs at margin 0 (routed to SFT: no rejected and no
  reference pass for them); curriculum order random, so hard pairs fall among the timed steps;
- ``trl_best``: TRL's DPOTrainer with ``precompute_ref_log_probs=True`` (its fastest setting);
- ``trl_default``: TRL's DPOTrainer as it comes (reference computed in every step).
The kit's side is built by ``pipeline.analyze_data`` and ``pipeline.build_trainer`` around
``model.prepare_policy``; its reference precompute runs in the timed process, as TRL's does.

Measured per batch size, each on a fresh model: the time to draw and quantise it; each training step's wall time (CUDA-synchronised),
of which the first ``warmup`` are left out; the reference precompute's time; tokens counted from
the batches the trainer's collator produced; peak GPU memory (allocated and reserved) during the
precompute and during training; the resident memory at a step's start and the step's transient
peak; and, for ``snapshot_batch``, where the memory of one warm-up step went at its peak (a CUDA
memory history, summarised by the code that allocated it). pairs/s amortises the precompute:
``1 / (median step seconds / batch + precompute seconds / pairs)``.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import random
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch

from shapes import materialise, vocabulary_words
from stage import measured  # bench/stage.py: wall time and peak memory of a function's calls

CONFIGS = ("kit_dpo", "kit_dpo_separate", "kit_mixdpo", "trl_best", "trl_default")
HARD_SHARE = 0.12
BETA, LABEL_SMOOTHING = 0.01, 0.1  # MixDPO's cDPO, on both sides
TEMPLATE_TOKENS = 4  # <s> <|user|> ... <|end|> <|assistant|> around the prompt; <|end|> after a response
GIB = 2 ** 30
# Where a snapshot's memory is attributed: the first frame (innermost first) in one of these.
LIBRARIES = ("mixdpo_kit", "trl", "peft", "bitsandbytes", "transformers", "accelerate", "torch")


# ---------------------------------------------------------------- inputs

def prompt_share() -> float:
    """The prompt's share of prompt + chosen response, from the medians of the shipped sample."""
    from mixdpo_kit.data.loading import load_preferences

    ds, _ = load_preferences("ultrafeedback-sample")
    prompt = statistics.median(len(p[-1]["content"]) for p in ds["prompt"])
    chosen = statistics.median(len(c) for c in ds["chosen"])  # canonical rows: the response text
    return prompt / (prompt + chosen)


def build_pairs(path: Path, pairs: int, prompt_words: int, response_words: int, vocab_words: int) -> Path:
    """A JSONL of conversational pairs with ratings; ``HARD_SHARE`` of them tie (margin 0)."""
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


# ---------------------------------------------------------------- measurement

class StepProbe:
    """Times each training step, counts the tokens of each batch the collator produced, and
    records the resident memory at a step's start and its peak; optionally summarises where the
    memory of one step went (``snapshot_step``, a warm-up step, so the timing is not disturbed)."""

    def __init__(self, snapshot_step: int | None = None):
        self.seconds: list[float] = []
        self.tokens: list[int] = []
        self.resident: list[int] = []
        self.step_peak: list[int] = []
        self.snapshot_step = snapshot_step
        self.snapshot: dict | None = None
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
                        torch.cuda.memory._record_memory_history(max_entries=200_000, stacks="python")
                probe._start = time.perf_counter()

            def on_step_end(self, args, state, control, optimizer=None, **kwargs):
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                    probe.step_peak.append(torch.cuda.max_memory_allocated())
                    if len(probe.seconds) == probe.snapshot_step:
                        probe.snapshot = summarise_snapshot(torch.cuda.memory._snapshot())
                        torch.cuda.memory._record_memory_history(enabled=None)
                probe.seconds.append(time.perf_counter() - probe._start)
                if optimizer is not None and not probe.optimizer_bytes:
                    probe.optimizer_bytes = sum(t.numel() * t.element_size() for s in optimizer.state.values()
                                                for t in s.values() if torch.is_tensor(t))
        return Callback()


def allocation_site(frames: list[dict]) -> str:
    """``library/file.py:function`` of the innermost frame in one of ``LIBRARIES`` (else the innermost)."""
    for frame in frames:
        parts = frame.get("filename", "").replace("\\", "/").split("/")
        for i, part in enumerate(parts[:-1]):
            if part in LIBRARIES:
                return f"{part}/{'/'.join(parts[i + 1:])}:{frame.get('name', '?')}"
    return f"{frames[0].get('filename', '?').rsplit('/', 1)[-1]}:{frames[0].get('name', '?')}" if frames else "unknown"


def summarise_snapshot(snapshot: dict, top: int = 8) -> dict:
    """Where a recorded step's memory went at its peak: replays the allocations and frees of
    ``snapshot['device_traces']`` (blocks allocated before the recording started are not in it:
    the result is the step's own memory) and groups the blocks alive at the peak by the code that
    allocated them. Returns the peak in GiB and the ``top`` sites with their GiB."""
    events = [e for trace in snapshot.get("device_traces", []) for e in trace]
    live: dict[int, tuple[int, str]] = {}
    total = peak = 0
    at_peak: dict[int, tuple[int, str]] = {}
    for e in events:
        if e["action"] == "alloc":
            live[e["addr"]] = (e["size"], allocation_site(e.get("frames", [])))
            total += e["size"]
            if total > peak:
                peak, at_peak = total, dict(live)
        elif e["action"] == "free_completed" and e["addr"] in live:
            total -= live.pop(e["addr"])[0]
    sites: dict[str, int] = {}
    for size, site in at_peak.values():
        sites[site] = sites.get(site, 0) + size
    ranked = sorted(sites.items(), key=lambda kv: -kv[1])
    shown = [{"site": s, "gib": b / GIB} for s, b in ranked[:top]]
    rest = sum(b for _, b in ranked[top:])
    return {"step_peak_gib": peak / GIB, "events": len(events), "by_site": shown + ([{"site": "other", "gib": rest / GIB}]
                                                                                  if rest else [])}


def parameter_bytes(model) -> dict[str, int]:
    """Resident parameter bytes by kind: 4-bit packed weights, trainable (LoRA), other (frozen
    unquantised: embeddings, head, norms) and their dtypes."""
    out: dict[str, int] = {}
    for p in model.parameters():
        kind = "4-bit" if type(p).__name__ == "Params4bit" else "trainable" if p.requires_grad else f"frozen {p.dtype}"
        out[kind] = out.get(kind, 0) + p.numel() * p.element_size()
    return out


def device() -> torch.device:
    return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")


def run_kit(shape: Path, data: Path, batch: int, objective: str, probe: StepProbe, work: Path, ref: dict,
            share_prompt: bool = True) -> dict:
    from mixdpo_kit.core.config import preset
    from mixdpo_kit.modeling.model import compute_dtype, load_tokenizer, prepare_policy
    from mixdpo_kit.objectives.routing import resolve
    from mixdpo_kit.training import pipeline

    cfg = resolve(preset("mixdpo_paper").override(
        model={"name_or_path": str(shape), "mode": "qlora", "lora_r": 16, "lora_alpha": 32,
               "gradient_checkpointing": True, "share_prompt": share_prompt},
        data={"source": str(data), "max_rows": None, "max_length": 4096, "max_prompt_length": 4096},
        loss={"objective": objective}, split={"tau": 0.5, "quantile": None}, curriculum={"order": "random"},
        train={"per_device_train_batch_size": batch, "gradient_accumulation_steps": 1, "num_train_epochs": 1,
               "max_steps": -1, "logging_steps": 1, "seed": 0},
        cache={"dir": str(work / "cache")}))
    dtype = compute_dtype(device(), cfg.model.dtype)
    start = time.perf_counter()
    model = materialise(shape, device(), dtype, quantize=True, quant_storage=dtype)  # the kit's storage dtype
    build_s = time.perf_counter() - start
    policy = prepare_policy(model, load_tokenizer(cfg.model), cfg.model, device(), dtype)
    prep = pipeline.analyze_data(cfg, policy=policy)
    reset_peaks()
    trainer, prep = pipeline.build_trainer(cfg, policy, prep, work / "run", save_strategy="no", disable_tqdm=True,
                                           callbacks=[probe.callback()], show_bar=False)
    precompute_peak = peaks()
    trainer.data_collator = probe.wrap_collator(trainer.data_collator)
    trainer.train()
    return {"pairs": len(prep.dataset), "hard": int(prep.split.n_hard), "build_s": build_s,
            "precompute_s": ref.get("precompute", {}).get("seconds", 0.0), "precompute_peak": precompute_peak,
            "params": parameter_bytes(policy.model), "losses": [h["loss"] for h in trainer.state.log_history if "loss" in h]}


def run_trl(shape: Path, data: Path, batch: int, precompute: bool, probe: StepProbe, work: Path, ref: dict) -> dict:
    import datasets
    import trl
    from peft import LoraConfig

    from mixdpo_kit.modeling.model import compute_dtype
    from mixdpo_kit.modeling.tokenizer import auto_tokenizer

    dtype = compute_dtype()
    start = time.perf_counter()
    model = materialise(shape, device(), dtype, quantize=True)  # TRL's documented QLoRA: uint8 storage
    build_s = time.perf_counter() - start
    ds = datasets.load_dataset("json", data_files=str(data), split="train").remove_columns(["score_chosen",
                                                                                            "score_rejected"])
    args = trl.DPOConfig(output_dir=str(work / "run"), beta=BETA, loss_type=["sigmoid"], label_smoothing=LABEL_SMOOTHING,
                         per_device_train_batch_size=batch, num_train_epochs=1, learning_rate=1e-6,
                         gradient_checkpointing=True, bf16=dtype == torch.bfloat16, fp16=dtype == torch.float16,
                         precompute_ref_log_probs=precompute, max_length=None, report_to="none", save_strategy="no",
                         logging_steps=1, disable_tqdm=True, dataloader_num_workers=0, seed=0,
                         use_cpu=not torch.cuda.is_available())
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    reset_peaks()
    trainer = trl.DPOTrainer(model=model, args=args, train_dataset=ds, processing_class=auto_tokenizer(str(shape)),
                             peft_config=lora, callbacks=[probe.callback()])
    precompute_peak = peaks()
    trainer.data_collator = probe.wrap_collator(trainer.data_collator)
    trainer.train()
    return {"pairs": len(ds), "hard": 0, "build_s": build_s, "precompute_s": ref.get("precompute", {}).get("seconds", 0.0),
            "precompute_peak": precompute_peak, "params": parameter_bytes(trainer.model),
            "losses": [h["loss"] for h in trainer.state.log_history if "loss" in h]}


def reset_peaks() -> None:
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def peaks() -> dict[str, int]:
    """Peak allocated and reserved GPU memory since the last reset (zeros on a CPU)."""
    if not torch.cuda.is_available():
        return {"allocated": 0, "reserved": 0}
    return {"allocated": torch.cuda.max_memory_allocated(), "reserved": torch.cuda.max_memory_reserved()}


def run_batch(spec: dict, batch: int, prompt_tokens: int, ref: dict) -> dict:
    """One configuration at one batch size on a fresh model; returns its measurements."""
    work = Path(tempfile.mkdtemp(prefix="gpu-qlora-"))
    os.environ["HF_DATASETS_CACHE"] = str(work / "datasets")  # a cold cache: TRL's precompute is not read back
    shape, name, warm = Path(spec["shape"]), spec["config"], spec["warmup"]
    seq_len = spec["seq_len"]
    data = build_pairs(work / "pairs.jsonl", (warm + spec["steps"]) * batch, prompt_tokens - TEMPLATE_TOKENS,
                       seq_len - prompt_tokens - 1, vocabulary_words(shape))
    probe = StepProbe(warm - 1 if spec.get("snapshot_batch") == batch and torch.cuda.is_available() else None)
    leftover = torch.cuda.memory_allocated() if torch.cuda.is_available() else 0
    start = time.perf_counter()
    ref.clear()
    if name.startswith("kit"):
        objective = "curriculum_dpo" if name.startswith("kit_dpo") else "mixdpo"
        out = run_kit(shape, data, batch, objective, probe, work, ref, share_prompt=not name.endswith("separate"))
    else:
        out = run_trl(shape, data, batch, name == "trl_best", probe, work, ref)
    steps = probe.seconds[warm:]
    q = statistics.quantiles(steps, n=4) if len(steps) > 1 else [steps[0]] * 3
    median = statistics.median(steps)
    train_peak = max(probe.step_peak, default=0)
    out.update(
        batch=batch, seconds=time.perf_counter() - start, timed_steps=len(steps), step_s_median=median,
        step_s_iqr=[q[0], q[2]], tokens_per_step=statistics.mean(probe.tokens[warm:len(probe.seconds)]),
        pairs_per_s=1 / (median / batch + out["precompute_s"] / out["pairs"]), train_peak=train_peak,
        resident=max(probe.resident, default=0), optimizer_bytes=probe.optimizer_bytes, leftover_before=leftover)
    out["tokens_per_s"] = out["tokens_per_step"] / median
    if torch.cuda.is_available():
        out["peak"] = max(train_peak, out["precompute_peak"]["allocated"])
        out["peak_reserved"] = max(torch.cuda.max_memory_reserved(), out["precompute_peak"]["reserved"])
    else:  # a CPU run checks the code: its peak is the process's RSS
        out["peak"] = out["peak_reserved"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out["transient"] = train_peak - out["resident"]
    if probe.snapshot is not None:
        out["snapshot"] = probe.snapshot
    return out


def worker(spec: dict) -> dict:
    """Every batch size of one configuration, in this process, each on a freshly drawn model."""
    import warnings

    warnings.simplefilter("ignore")
    from mixdpo_kit.core import progress

    progress.quiet_libraries()
    prompt_tokens = round(prompt_share() * spec["seq_len"])
    result = {"config": spec["config"], "shape": Path(spec["shape"]).name, "seq_len": spec["seq_len"],
              "prompt_tokens": prompt_tokens, "warmup": spec["warmup"], "device": device_name(), "batches": {}}
    if torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info()
        result["cuda_context_gib"] = (total - free - torch.cuda.memory_reserved()) / GIB  # outside torch's allocator
    ref: dict = {}  # the reference precompute's time, filled by the wrapper below for each batch
    if spec["config"].startswith("kit"):
        from mixdpo_kit.training import pipeline

        measured(pipeline, "reference_logps", "precompute", ref)
    else:
        import trl

        measured(trl.DPOTrainer, "_precompute_ref_logps", "precompute", ref)  # TRL precomputes in its constructor
    for batch in spec["batches"]:
        result["batches"][str(batch)] = run_batch(spec, batch, prompt_tokens, ref)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return result


def device_name() -> str:
    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", required=True, help="the JSON spec: config, shape, batches, steps, warmup, seq_len, "
                                                    "snapshot_batch")
    ap.add_argument("--result", type=Path, required=True, help="where the measurements go (JSON)")
    args = ap.parse_args(argv)
    args.result.write_text(json.dumps(worker(json.loads(args.worker))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
