"""The GPU check: everything the kit needs to show on one borrowed GPU, in one command that keeps
to a time budget and keeps each stage's result as it finishes.

    bash scripts/gpu_check.sh                      # installs the carried wheels, then runs this
    python bench/gpu_check.py --out DIR [--budget 420] [--tiny] [--only NAME,...] [--estimate NAME=SECONDS ...]

Stages, in this order (the user's path first, so a short lease loses the least useful part):

1. ``train_bf16``: ``mixdpo-kit train`` on a random-weight Qwen2.5-0.5B shape with a tokenizer
   trained on the shipped UltraFeedback sample's text (the shape and a small judge built here,
   once): reference precompute, training, held-out evaluation;
   ``train_fp16``: the same run forced to fp16 (the T4 path), its losses and reference log-probs
   compared with the bf16 run's;
2. ``generate`` on 32 AlpacaEval instructions, and ``judge`` against AlpacaEval's baseline answers;
3. ``qwen1.5b_*``: the benchmark at the Qwen2.5-1.5B shape, batch 1 and 2: TRL's best setting
   (``precompute_ref_log_probs``), the kit's DPO and MixDPO (12 % hard): pairs/s and peak memory,
   with a CUDA memory history of one batch-2 step summarised;
4. ``llama8b_kit_mixdpo``: the Llama-3-8B shape through the kit's trainer at batch 1 and 2, against
   a T4's 15 GiB;
5. ``notebook_03``: notebook 03 headless on its GPU branch;
6. what remains of the benchmark (one row per sequence, TRL as it comes, TRL at 8B, batch 4).

The budget counts from the command's start (``--started``, set by the shell script before it
installs the wheels). A stage starts only if its estimate, scaled by how the finished stages
compared with theirs, fits in what is left; otherwise it is skipped and the reason recorded. A
stage still running when the budget runs out is stopped, and so is one that the command's own
limit ends (SIGTERM). Every stage runs in its own process.

Results, rewritten after each stage starts and ends, so whatever stops the command leaves the
finished stages' numbers: ``OUT/gpu_check.json`` (every stage's numbers), ``OUT/gpu_check.md``
(the tables) and ``OUT/gpu_check.log`` (each stage's own output). Scratch files live outside OUT.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
ALPACA_FILE = "alpaca-eval-gpt4-1106-preview-outputs.json.gz"
T4_GIB = 15.0
PACKAGES = ("torch", "transformers", "peft", "accelerate", "bitsandbytes", "datasets", "trl", "plotly", "ipywidgets",
            "nbclient", "ipykernel")


@dataclass(frozen=True)
class Sizes:
    """How big each stage's work is: the GPU run's, or the --tiny rehearsal's."""

    rows: int = 128  # training pairs of the user's run (32 steps of 4)
    max_length: int = 1024
    eval_pairs: int = 32
    eval_new_tokens: int = 64
    fp16_steps: int = 8
    prompts: int = 32  # AlpacaEval instructions answered
    new_tokens: int = 256
    seq_len: int = 1024  # the benchmark's sequence length
    warmup: int = 2
    steps: int = 8  # timed steps per batch size
    notebook_rows: int = 128
    notebook_prompts: int = 16
    notebook_new_tokens: int = 128


TINY = Sizes(rows=32, max_length=512, eval_pairs=8, eval_new_tokens=8, fp16_steps=4, prompts=8, new_tokens=8,
             seq_len=64, warmup=2, steps=2, notebook_rows=32, notebook_prompts=8, notebook_new_tokens=8)


class StageStopped(Exception):
    """A stage's process was stopped: the budget ran out, or the command was told to end."""


@dataclass
class Check:
    """One command's state: where things go, what has run, and how long is left."""

    out: Path
    work: Path
    tiny: bool
    sizes: Sizes
    budget: float
    started: float
    shared_data: Path
    python: str = sys.executable
    records: dict = field(default_factory=dict)  # stage name -> its record (also in the JSON)
    report: dict = field(default_factory=dict)
    child: subprocess.Popen | None = None
    terminated: bool = False
    on_child: Callable[[int], None] = lambda pid: None  # hears each process a stage starts (its group's id)

    def left(self) -> float:
        return self.budget - (time.time() - self.started)

    def call(self, args: list[str], env: dict | None = None) -> float:
        """Run one process to completion within the budget; its output goes to the log. Returns
        its wall seconds; raises StageStopped when the budget ends it, RuntimeError when it fails."""
        start = time.time()
        with (self.out / "gpu_check.log").open("a") as log:
            log.write(f"\n$ {' '.join(args)}\n")
            log.flush()
            self.child = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=self.work,
                                          env={**os.environ, **(env or {})}, preexec_fn=os.setpgrp)
            self.on_child(self.child.pid)
            try:
                rc = self.child.wait(timeout=max(self.left(), 0.1))
            except subprocess.TimeoutExpired:
                self.stop_child()
                raise StageStopped(f"stopped at the budget's end, after {time.time() - start:.0f} s") from None
            finally:
                self.child = None
        if self.terminated:
            raise StageStopped("stopped: the command was told to end (SIGTERM)")
        if rc != 0:
            raise RuntimeError(f"exit code {rc}: {last_lines(self.out / 'gpu_check.log')}")
        return time.time() - start

    def stop_child(self) -> None:
        """End the running stage's process group: SIGTERM, then SIGKILL after 5 s."""
        child = self.child
        if child is None or child.poll() is not None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(child.pid, sig)
                child.wait(timeout=5)
                return
            except subprocess.TimeoutExpired:
                continue
            except ProcessLookupError:
                return

    def python_script(self, script: str, *args: str, env: dict | None = None) -> float:
        return self.call([self.python, str(BENCH / script), *args], env)

    def kit(self, name: str, *args: str) -> dict:
        """One ``mixdpo-kit`` command, its wall time and peak memory recorded by bench/stage.py."""
        record = self.work / f"{name}.record.json"
        seconds = self.python_script("stage.py", str(record), "--", *args)
        measured = json.loads(record.read_text())
        measured["command_s"] = measured.pop("seconds")  # inside the process; the stage's own time is wall time
        return {**measured, "process_s": seconds}


def last_lines(path: Path, n: int = 6) -> str:
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return " / ".join(lines[-n:])[-800:]


# ---------------------------------------------------------------- stages

def run_yaml(check: Check, name: str, dtype: str, max_steps: int, evaluate: bool) -> Path:
    """The user's run: the shipped sample's first rows on the built Qwen2.5-0.5B shape."""
    s, models = check.sizes, check.work / "models"
    text = f"""preset: mixdpo_paper
model: {{name_or_path: {models / 'policy'}, mode: qlora, lora_r: 16, lora_alpha: 32, dtype: {dtype}}}
data: {{source: ultrafeedback-sample, eval_source: {'ultrafeedback-sample' if evaluate else 'null'}, max_rows: {s.rows},
       max_length: {s.max_length}, max_prompt_length: {s.max_length // 2}}}
train: {{learning_rate: 5.0e-5, per_device_train_batch_size: 4, gradient_accumulation_steps: 1, logging_steps: 1,
        max_steps: {max_steps}, save_steps: 100000}}
cache: {{dir: {check.work / ('cache_' + name)}}}
eval: {{batch_size: 8, max_pairs: {s.eval_pairs}, max_new_tokens: {s.eval_new_tokens}, n_generations: 2,
       reward_prompts: 0}}
"""
    path = check.work / f"{name}.yaml"
    path.write_text(text)
    return path


def run_numbers(check: Check, name: str) -> dict:
    """What a finished run folder says: pairs, steps, losses, reference log-probs, evaluation."""
    run = check.work / name
    summary = json.loads((run / "summary.json").read_text())
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    refs = next((check.work / f"cache_{name}" / "reference").glob("*.json"), None)
    ref = json.loads(refs.read_text()) if refs else {}  # pair position -> [chosen, rejected] (core.cache.cached_items)
    return {"losses": [m["loss"] for m in metrics if "loss" in m],
            "ref_chosen_logps": {k: v[0] for k, v in ref.items()},
            "data": {k: summary.get("data", {}).get(k) for k in ("rows_read", "rows_kept")},
            "heldout": summary.get("evaluation", {}).get("preference"), "wall_seconds": summary.get("wall_seconds")}


def stage_train_bf16(check: Check) -> dict:
    start = time.time()
    check.python_script("local_models.py", str(check.work / "models"), *(["--tiny"] if check.tiny else []))
    built = time.time() - start
    record = check.kit("train_bf16", "train", "--config", str(run_yaml(check, "run_bf16", "auto", -1, True)),
                       "--out", str(check.work / "run_bf16"))
    record["parts"] = {"build the 0.5B shape and its judge": {"seconds": built}, **record["parts"]}
    return {**record, "results": run_numbers(check, "run_bf16")}


def stage_train_fp16(check: Check) -> dict:
    record = check.kit("train_fp16", "train", "--config",
                       str(run_yaml(check, "run_fp16", "float16", check.sizes.fp16_steps, False)),
                       "--out", str(check.work / "run_fp16"))
    fp16 = run_numbers(check, "run_fp16")
    bf16 = check.records["train_bf16"]["results"]
    return {**record, "results": {**fp16, "vs_bf16": compare_precisions(bf16, fp16)}}


def compare_precisions(bf16: dict, fp16: dict) -> dict:
    """fp16 (the T4 path) against bf16 on the same pairs, weights and order: every loss and
    reference log-prob finite, the reference log-probs within 1 % and the first losses within 5 %."""
    losses = list(zip(bf16["losses"], fp16["losses"]))
    common = sorted(set(bf16["ref_chosen_logps"]) & set(fp16["ref_chosen_logps"]), key=int)
    refs = [(bf16["ref_chosen_logps"][k], fp16["ref_chosen_logps"][k]) for k in common]
    finite = all(math.isfinite(x) for pair in losses + refs for x in pair)
    ref_diff = max((abs(a - b) / max(abs(a), 1e-9) for a, b in refs), default=None)
    loss_diff = max((abs(a - b) / max(abs(a), 1e-9) for a, b in losses), default=None)
    return {"steps_compared": len(losses), "pairs_compared": len(refs), "finite": finite,
            "max_ref_logp_rel_diff": ref_diff, "max_loss_rel_diff": loss_diff,
            "close": finite and bool(refs) and bool(losses) and ref_diff <= 0.01 and loss_diff <= 0.05}


def stage_generate(check: Check) -> dict:
    s = check.sizes
    record = check.kit("generate", "generate", "--run", str(check.work / "run_bf16"), "--prompts", alpaca(check),
                       "--max-prompts", str(s.prompts), "--max-new-tokens", str(s.new_tokens),
                       "--out", str(check.work / "answers" / "policy.json"))
    answers = json.loads((check.work / "answers" / "policy.json").read_text())
    words = sorted(len(a["output"].split()) for a in answers)
    return {**record, "results": {"answers": len(answers), "median_words": words[len(words) // 2] if words else 0}}


def stage_judge(check: Check) -> dict:
    record = check.kit("judge", "judge", "--a", str(check.work / "answers" / "policy.json"), "--b", alpaca(check),
                       "--reward-model", str(check.work / "models" / "reward"), "--out", str(check.work / "judge"),
                       "--cache-dir", str(check.work / "cache_judge"), "--bootstrap", "200")
    judged = json.loads((check.work / "judge" / "judgement.json").read_text())
    keep = ("prompts", "win_rate", "win_rate_ci", "lc_win_rate", "left_out")
    return {**record, "results": {k: judged[k] for k in keep if k in judged}}


def alpaca(check: Check) -> str:
    return str(check.shared_data / ALPACA_FILE)


def shape(check: Check, name: str) -> Path:
    """The shape's folder (config and tokenizer), written on first use."""
    folder = check.work / "shapes" / name
    if not folder.exists():
        check.python_script("shapes.py", str(check.work / "shapes"), name, *(["--tiny"] if check.tiny else []))
    return folder


def benchmark_stage(shape_name: str, config: str, batches: tuple[int, ...], snapshot: bool = False) -> Callable:
    """A stage running one benchmark configuration at ``batches`` in its own process."""
    def run(check: Check) -> dict:
        s = check.sizes
        start = time.time()
        folder = shape(check, shape_name)
        spec = {"config": config, "shape": str(folder), "batches": list(batches), "steps": s.steps,
                "warmup": s.warmup, "seq_len": s.seq_len, "snapshot_batch": 2 if snapshot else None}
        result_path = check.work / f"{shape_name}-{config}-{'-'.join(map(str, batches))}.json"
        check.call([check.python, str(BENCH / "gpu_qlora.py"), "--worker", json.dumps(spec),
                    "--result", str(result_path)])
        result = json.loads(result_path.read_text())
        peak = max(b["peak"] for b in result["batches"].values()) / 2 ** 30
        return {"seconds": time.time() - start, "peak_gib": peak, "results": result}
    return run


def stage_notebook(check: Check) -> dict:
    s, models = check.sizes, check.work / "models"
    env = {"MIXDPO_KIT_MODEL": str(models / "policy"), "MIXDPO_KIT_DATA": "ultrafeedback-sample",
           "MIXDPO_KIT_MAX_ROWS": str(s.notebook_rows), "MIXDPO_KIT_PROMPTS": alpaca(check),
           "MIXDPO_KIT_MAX_PROMPTS": str(s.notebook_prompts), "MIXDPO_KIT_REWARD_MODEL": str(models / "reward"),
           "MIXDPO_KIT_MAX_NEW_TOKENS": str(s.notebook_new_tokens), "MIXDPO_KIT_BLOCKING_RUNS": "1"}
    if check.tiny:
        env["MIXDPO_KIT_GPU_BRANCH"] = "1"  # the branch's code on a CPU
    record = check.work / "notebook.record.json"
    seconds = check.python_script("run_notebook.py", str(ROOT / "notebooks" / "03_train_qlora.ipynb"),
                                  str(check.work / "notebook"), str(record), env=env)
    result = json.loads(record.read_text())
    return {"process_s": seconds, "peak_gib": result.pop("peak_gib", None), "results": result}


@dataclass(frozen=True)
class Stage:
    name: str
    title: str
    gpu_s: float  # estimated seconds on one H100 / H200, its process start and imports included
    tiny_s: float  # estimated seconds of the --tiny rehearsal on 2 CPU cores
    run: Callable[[Check], dict]
    needs: tuple[str, ...] = ()


def bench(name, title, gpu_s, tiny_s, shape_name, config, batches=(1, 2), snapshot=False) -> Stage:
    return Stage(name, title, gpu_s, tiny_s, benchmark_stage(shape_name, config, batches, snapshot))


STAGES = [
    Stage("train_bf16", "1. mixdpo-kit train, Qwen2.5-0.5B shape, UltraFeedback sample, bf16", 60, 40, stage_train_bf16),
    Stage("train_fp16", "1. the same run forced to fp16 (the T4 path), compared with bf16", 30, 15, stage_train_fp16,
          needs=("train_bf16",)),
    Stage("generate", "2. generate: AlpacaEval instructions", 40, 10, stage_generate, needs=("train_bf16",)),
    Stage("judge", "2. judge against AlpacaEval's baseline answers", 15, 8, stage_judge, needs=("generate",)),
    bench("qwen1.5b_trl_best", "3. benchmark, Qwen2.5-1.5B shape: TRL DPOTrainer, precomputed reference", 35, 12,
          "qwen2.5-1.5b", "trl_best", snapshot=True),
    bench("qwen1.5b_kit_dpo", "3. benchmark, Qwen2.5-1.5B shape: the kit's DPO (0 % hard)", 35, 12,
          "qwen2.5-1.5b", "kit_dpo"),
    bench("qwen1.5b_kit_mixdpo", "3. benchmark, Qwen2.5-1.5B shape: the kit's MixDPO (12 % hard)", 35, 12,
          "qwen2.5-1.5b", "kit_mixdpo", snapshot=True),
    bench("llama8b_kit_mixdpo", "4. Llama-3-8B shape through the kit's trainer, against a T4's 15 GiB", 70, 12,
          "llama-3-8b", "kit_mixdpo"),
    Stage("notebook_03", "5. notebook 03 headless on its GPU branch", 75, 35, stage_notebook,
          needs=("train_bf16",)),
    bench("qwen1.5b_kit_dpo_separate", "6. benchmark, Qwen2.5-1.5B: the kit's DPO, one row per sequence", 35, 12,
          "qwen2.5-1.5b", "kit_dpo_separate"),
    bench("qwen1.5b_trl_default", "6. benchmark, Qwen2.5-1.5B: TRL DPOTrainer as it comes", 40, 12,
          "qwen2.5-1.5b", "trl_default"),
    bench("llama8b_trl_best", "6. benchmark, Llama-3-8B: TRL DPOTrainer, precomputed reference", 70, 12,
          "llama-3-8b", "trl_best"),
    bench("llama8b_kit_dpo", "6. benchmark, Llama-3-8B: the kit's DPO (0 % hard)", 70, 12, "llama-3-8b", "kit_dpo"),
    bench("qwen1.5b_b4_trl_best", "6. benchmark, Qwen2.5-1.5B, batch 4: TRL, precomputed reference", 35, 10,
          "qwen2.5-1.5b", "trl_best", batches=(4,)),
    bench("qwen1.5b_b4_kit_mixdpo", "6. benchmark, Qwen2.5-1.5B, batch 4: the kit's MixDPO", 35, 10,
          "qwen2.5-1.5b", "kit_mixdpo", batches=(4,)),
]


# ---------------------------------------------------------------- the run

PREFLIGHT = "import bitsandbytes, datasets, ipykernel, nbclient, peft, plotly, trl; import mixdpo_kit.workflows.runs"


def preflight(check: Check) -> dict:
    """Import what every stage needs, once, before any stage: a carried wheel that does not fit
    the machine's packages shows here in seconds instead of failing each stage."""
    start = time.time()
    try:
        check.call([check.python, "-c", PREFLIGHT])
        return {"ok": True, "seconds": time.time() - start}
    except (RuntimeError, StageStopped) as err:
        print(f"gpu_check: the kit's packages do not import: {err}", file=sys.stderr)
        return {"ok": False, "seconds": time.time() - start, "error": str(err)}

def run_stages(check: Check, stages: list[Stage], estimates: dict[str, float]) -> None:
    """Each stage in order: skipped when its scaled estimate does not fit or what it needs did not
    finish, else run; the report is written before and after each."""
    for stage in stages:
        estimate = estimates.get(stage.name, stage.tiny_s if check.tiny else stage.gpu_s)
        scaled = estimate * estimate_scale(check)
        entry = {"name": stage.name, "title": stage.title, "estimate_s": estimate, "scaled_estimate_s": scaled}
        missing = [n for n in stage.needs if check.records.get(n, {}).get("status") != "done"]
        if check.terminated:
            entry.update(status="skipped", reason="the command was told to end")
        elif missing:
            entry.update(status="skipped", reason=f"needs {', '.join(missing)}, which did not finish")
        elif scaled > check.left():
            entry.update(status="skipped", reason=f"estimate {scaled:.0f} s > {max(check.left(), 0):.0f} s left")
        else:
            entry.update(status="running", started_at_s=time.time() - check.started)
            check.records[stage.name] = entry
            check.on_child = lambda pid: (entry.update(process_group=pid), write_report(check))
            write_report(check)
            print(f"== {stage.title} (estimate {scaled:.0f} s, {check.left():.0f} s left)", flush=True)
            start = time.time()
            try:
                entry.update(stage.run(check), status="done")
            except StageStopped as stop:
                entry.update(status="stopped", reason=str(stop))
            except Exception as err:  # a failed stage is recorded; the next ones still run
                entry.update(status="failed", reason=f"{type(err).__name__}: {err}"[:1000])
            entry["seconds"] = time.time() - start
            entry.pop("process_group", None)
        check.records[stage.name] = entry
        print(f"   {stage.name}: {entry['status']}" + (f" ({entry['reason']})" if "reason" in entry else
                                                       f" in {entry['seconds']:.0f} s"), flush=True)
        write_report(check)


def estimate_scale(check: Check) -> float:
    """How the finished stages' times compared with their estimates (between 0.5 and 4)."""
    done = [r for r in check.records.values() if r.get("status") == "done"]
    if not done:
        return 1.0
    return min(4.0, max(0.5, sum(r["seconds"] for r in done) / sum(r["estimate_s"] for r in done)))


def targets(records: dict) -> dict:
    """The GPU targets from whichever stages finished (None where a side is missing)."""
    def batch_row(name: str, batch: str) -> dict | None:
        r = records.get(name, {})
        return r.get("results", {}).get("batches", {}).get(batch) if r.get("status") == "done" else None

    out: dict = {}
    for batch in ("1", "2", "4"):
        trl = batch_row("qwen1.5b_trl_best" if batch != "4" else "qwen1.5b_b4_trl_best", batch)
        kit_dpo = batch_row("qwen1.5b_kit_dpo", batch)
        mix = batch_row("qwen1.5b_kit_mixdpo" if batch != "4" else "qwen1.5b_b4_kit_mixdpo", batch)
        if trl is None or (kit_dpo is None and mix is None):
            continue
        speed = lambda r: None if r is None else r["pairs_per_s"] / trl["pairs_per_s"]  # noqa: E731
        peaks = [r["peak"] / trl["peak"] for r in (kit_dpo, mix) if r is not None]
        out[f"qwen2.5-1.5b batch {batch}"] = {
            "kit peak <= 0.9x TRL best": max(peaks) <= 0.9,
            "kit DPO >= 1.0x TRL best pairs/s": None if kit_dpo is None else speed(kit_dpo) >= 1.0,
            "MixDPO 12% >= 1.15x TRL best pairs/s": None if mix is None else speed(mix) >= 1.15}
    eight = records.get("llama8b_kit_mixdpo", {})
    if eight.get("status") == "done":
        context = eight["results"].get("cuda_context_gib", 0.0)
        out["llama-3-8b on a T4 (15 GiB)"] = {
            f"fits at batch {b}": (r["peak_reserved"] / 2 ** 30 + context) <= T4_GIB
            for b, r in eight["results"]["batches"].items()}
    fp16 = records.get("train_fp16", {})
    if fp16.get("status") == "done":
        cmp = fp16["results"]["vs_bf16"]
        out["fp16 (T4 path)"] = {"finite": cmp["finite"], "close to bf16": cmp["close"]}
    return out


def write_report(check: Check) -> None:
    """gpu_check.json and gpu_check.md, each written whole and moved into place."""
    check.report.update(elapsed_s=time.time() - check.started, stages=list(check.records.values()),
                        targets=targets(check.records))
    for name, text in (("gpu_check.json", json.dumps(check.report, indent=1)),
                       ("gpu_check.md", markdown(check.report))):
        tmp = check.out / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, check.out / name)


def gib(b: float | None) -> str:
    return "" if b is None else f"{b / 2 ** 30:.2f}"


def markdown(report: dict) -> str:
    """The stage table, the benchmark table, the targets, and the skipped stages with their reasons."""
    lines = [f"# GPU check on {report['device']}: {report['elapsed_s']:.0f} s of a {report['budget_s']:.0f} s budget",
             "", f"{report['date']}; wheels installed in {report.get('install_s', 0):.0f} s; imports "
             + (f"checked in {report['imports']['seconds']:.0f} s; " if report.get("imports", {}).get("ok")
                else f"FAILED: {report.get('imports', {}).get('error', 'not checked')}; ")
             + ", ".join(f"{k} {v}" for k, v in report["versions"].items()), "",
             "| stage | status | estimate s (scaled) | seconds | peak GiB | result |", "|---|---|---|---|---|---|"]
    for s in report["stages"]:
        peak = f"{s['peak_gib']:.2f}" if isinstance(s.get("peak_gib"), (int, float)) else ""
        seconds = f"{s['seconds']:.0f}" if "seconds" in s else ""
        lines.append(f"| {s['name']} | {s['status']} | {s['scaled_estimate_s']:.0f} | {seconds} | {peak} | "
                     f"{stage_result(s)} |")
    rows = [(s["name"], b, r) for s in report["stages"] if s["status"] == "done" and "batches" in s.get("results", {})
            for b, r in s["results"]["batches"].items()]
    if rows:
        trl = {(s["results"]["shape"], b): r for s in report["stages"] if s["status"] == "done"
               and s.get("results", {}).get("config") == "trl_best" for b, r in s["results"]["batches"].items()}
        lines += ["", "| stage | batch | pairs/s | vs TRL best | step s (IQR) | tokens/step | peak GiB | vs TRL best "
                  "| reserved GiB | resident GiB | step transient GiB |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for name, b, r in rows:
            shape_name = next(s["results"]["shape"] for s in report["stages"] if s["name"] == name)
            base = trl.get((shape_name, b))
            ratio = lambda k: f"{r[k] / base[k]:.2f}×" if base and base[k] else ""  # noqa: E731
            lines.append(f"| {name} | {b} | {r['pairs_per_s']:.2f} | {ratio('pairs_per_s')} | {r['step_s_median']:.3f} "
                         f"({r['step_s_iqr'][0]:.3f}–{r['step_s_iqr'][1]:.3f}) | {r['tokens_per_step']:.0f} | "
                         f"{gib(r['peak'])} | {ratio('peak')} | {gib(r['peak_reserved'])} | {gib(r['resident'])} | "
                         f"{gib(r['transient'])} |")
    for s in report["stages"]:
        for b, r in s.get("results", {}).get("batches", {}).items() if s["status"] == "done" else ():
            if "snapshot" in r:
                sites = "; ".join(f"{x['site']} {x['gib']:.2f}" for x in r["snapshot"]["by_site"])
                lines += ["", f"Memory of one {s['name']} step at batch {b}, at its peak "
                          f"({r['snapshot']['step_peak_gib']:.2f} GiB above the resident weights), by the code "
                          f"that allocated it: {sites}."]
    if report["targets"]:
        lines += ["", "Targets: " + "; ".join(f"{group}: " + ", ".join(
            f"{k} {'met' if v else 'missed' if v is not None else 'n/a'}" for k, v in checks.items())
            for group, checks in report["targets"].items()) + "."]
    return "\n".join(lines) + "\n"


def stage_result(s: dict) -> str:
    """One cell: why a stage was skipped or stopped, or its headline numbers."""
    if s["status"] != "done":
        return s.get("reason", "")
    r = s.get("results", {})
    if "vs_bf16" in r:
        c = r["vs_bf16"]
        return (f"{c['steps_compared']} losses, {c['pairs_compared']} reference log-probs: finite {c['finite']}, "
                f"max rel. diff {c['max_ref_logp_rel_diff'] or 0:.1e} (log-probs), {c['max_loss_rel_diff'] or 0:.1e} "
                f"(losses)")
    if "losses" in r:
        return f"{len(r['losses'])} steps, last loss {r['losses'][-1]:.4f}" if r["losses"] else "no loss logged"
    if "answers" in r:
        return f"{r['answers']} answers, median {r['median_words']} words"
    if "win_rate" in r:
        return f"win rate {r['win_rate']:.3f} over {r.get('prompts')} prompts"
    if "batches" in r:
        return "; ".join(f"batch {b}: {x['pairs_per_s']:.2f} pairs/s, {gib(x['peak'])} GiB (model drawn and "
                         f"quantised in {x['build_s']:.1f} s)" for b, x in r["batches"].items())
    if "errors" in r:
        return f"{len(r['errors'])} cells raised; " + " / ".join(r.get("results", [])[:3])
    return ""


def versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "missing"
    return out


def device_name(tiny: bool) -> str:
    if shutil.which("nvidia-smi"):
        res = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True)
        if res.returncode == 0 and res.stdout.strip():
            return res.stdout.strip().splitlines()[0]
    return "cpu (the --tiny rehearsal)" if tiny else "no GPU found"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, help="where gpu_check.json, .md and .log go (required)")
    ap.add_argument("--budget", type=float, default=420, help="seconds from --started that the stages may use")
    ap.add_argument("--started", type=float, help="the command's start (epoch seconds; default: now)")
    ap.add_argument("--install-seconds", type=float, default=0.0, help="how long the wheel install took")
    ap.add_argument("--tiny", action="store_true", help="the same stages at small shapes on a CPU (a rehearsal)")
    ap.add_argument("--only", help="comma-separated stage names to run (default: all, in order)")
    ap.add_argument("--estimate", action="append", default=[], metavar="NAME=SECONDS",
                    help="replace a stage's estimate (e.g. with a time a GPU run measured)")
    ap.add_argument("--list", action="store_true", help="print the stages with their estimates and exit")
    args = ap.parse_args(argv)
    if args.list:
        for s in STAGES:
            print(f"{s.name:28s} {s.gpu_s:5.0f} s (GPU)  {s.tiny_s:4.0f} s (--tiny)  {s.title}")
        return 0
    if args.out is None:
        ap.error("--out is required")
    estimates = {name: float(value) for name, value in (e.split("=", 1) for e in args.estimate)}
    chosen = [s for s in STAGES if not args.only or s.name in args.only.split(",")]
    unknown = set(args.only.split(",")) - {s.name for s in STAGES} if args.only else set()
    if unknown:
        ap.error(f"unknown stage(s) {sorted(unknown)}; --list shows them")
    args.out.mkdir(parents=True, exist_ok=True)
    shared = Path(os.environ.get("SHARED_DATA") or ROOT.parent / "shared" / "data")
    if not (shared / ALPACA_FILE).exists():
        print(f"gpu_check: {shared / ALPACA_FILE} is missing (set SHARED_DATA)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    check = Check(out=args.out.resolve(), work=work, tiny=args.tiny, sizes=TINY if args.tiny else Sizes(),
                  budget=args.budget, started=args.started or time.time(), shared_data=shared.resolve())
    (check.out / "gpu_check.log").write_text("")
    check.report = {"device": device_name(args.tiny), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                    "budget_s": args.budget, "install_s": args.install_seconds, "versions": versions(),
                    "sizes": check.sizes.__dict__, "stages": []}

    def on_term(signum, frame):  # the command's own limit: stop the stage, keep what finished
        check.terminated = True
        check.stop_child()
    signal.signal(signal.SIGTERM, on_term)
    try:
        check.report["imports"] = preflight(check)
        if check.report["imports"]["ok"]:
            run_stages(check, chosen, estimates)
    finally:
        write_report(check)
        shutil.rmtree(work, ignore_errors=True)
    print((check.out / "gpu_check.md").read_text())
    failed = not check.report["imports"]["ok"] or any(r["status"] == "failed" for r in check.records.values())
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
