"""Whole runs: train + evaluate + write the summary and report; the demo; re-evaluating a saved run."""
from __future__ import annotations

import shutil
import time
from pathlib import Path

from transformers import TrainerCallback

from mixdpo_kit.core.cache import digest
from mixdpo_kit.core.config import RunConfig, preset
from mixdpo_kit.core.distributed import on_main
from mixdpo_kit.core.errors import UserError
from mixdpo_kit.data.chat import as_text
from mixdpo_kit.data.loading import read_source
from mixdpo_kit.data.tokenization import TokenizationSettings
from mixdpo_kit.evaluation.evaluate import builtin_reward, generate, pair_logps, preference_metrics
from mixdpo_kit.evaluation.judge import judge_policy, verdict_lines
from mixdpo_kit.margins.curriculum import lr_mass_by_route
from mixdpo_kit.modeling.model import Policy, load_trained_policy
from mixdpo_kit.objectives.routing import resolve as resolve_objective
from mixdpo_kit.reports import viz
from mixdpo_kit.reports.explain import worked_pairs
from mixdpo_kit.reports.report import read_metrics, write_html
from mixdpo_kit.reports.results import RunSummary, read_summary, write_summary
from mixdpo_kit.training.pipeline import (PreparedPairs, RunStopped, analyze_data, data_report, sft_warmup, tokenized_pairs,
                                          train)
from mixdpo_kit.training.trainer import route_sft_share


def evaluate_policy(cfg: RunConfig, policy: Policy, reference_memo: dict | None = None) -> dict:
    """Held-out preference metrics (policy vs reference), greedy generations of a few prompts
    before (reference) and after (policy) side by side and, on the built-in task, the ground-truth
    reward of the generations before and after.

    Runs that share the base model and the data and evaluation settings share their reference
    side too: pass the same ``reference_memo`` dict to reuse its log-probs and generations.
    """
    out: dict = {}
    tok, ec = policy.tokenizer, cfg.eval
    device = next(policy.model.parameters()).device
    memo = {} if reference_memo is None else reference_memo
    # Keyed by a digest of what the reference side depends on: the reference model (its weights
    # fingerprint tells a retrained checkpoint at the same path apart) and the model, data and
    # evaluation settings; and by which result it is.
    sections = {k: v for k, v in cfg.to_dict().items() if k in ("model", "data", "eval")}
    settings = digest({"reference": policy.identity(), **sections})

    def on_reference(what: str, compute):
        if (settings, what) not in memo:
            with policy.reference() as ref:
                memo[settings, what] = compute(ref)
        return memo[settings, what]

    if cfg.data.eval_source:
        pairs = tokenized_pairs(cfg.data.eval_source, cfg.data.eval_split, ec.max_pairs,
                                TokenizationSettings.from_config(cfg.data), tok, cfg.data)
        share = policy.config.share_prompt
        # Every process scores and generates its share (shared=True); all get every result.
        after = pair_logps(policy.model, pairs, tok.pad_token_id, ec.batch_size, device, share, shared=True)
        before = on_reference("pair_logps", lambda ref: pair_logps(ref, pairs, tok.pad_token_id, ec.batch_size, device,
                                                                   share, shared=True))
        out["preference"] = preference_metrics(after, before)
    if cfg.data.source == "builtin" and ec.reward_prompts:
        rows = read_source("builtin", ec.reward_split).select(range(ec.reward_prompts))
        texts = list(rows["prompt"])
        chats = [[{"role": "user", "content": t}] for t in texts]
        after_gen = generate(policy.model, tok, chats, ec.max_new_tokens, ec.batch_size, shared=True)
        before_gen = on_reference("generations", lambda ref: generate(ref, tok, chats, ec.max_new_tokens, ec.batch_size,
                                                                      shared=True))
        out["true_reward"] = {"before": builtin_reward(texts, before_gen), "after": builtin_reward(texts, after_gen)}
        rewards = [out["true_reward"][k]["rewards"] for k in ("before", "after")]
        out["generations"] = [{"prompt": t, "before": b, "after": a, "reward before": round(rb, 3),
                               "reward after": round(ra, 3)}
                              for t, b, a, rb, ra in list(zip(texts, before_gen, after_gen, *rewards))[:ec.n_generations]]
    elif cfg.data.eval_source:
        prompts = list(pairs.select(range(min(ec.n_generations, len(pairs))))["prompt"])
        after_gen = generate(policy.model, tok, prompts, ec.max_new_tokens, ec.batch_size, shared=True)
        before_gen = on_reference("sample generations",
                                  lambda ref: generate(ref, tok, prompts, ec.max_new_tokens, ec.batch_size,
                                                       shared=True))
        out["generations"] = [{"prompt": as_text(p), "before": b, "after": a}
                              for p, b, a in zip(prompts, before_gen, after_gen)]
    return out


def write_run_outputs(out_dir: Path, cfg: RunConfig, prep: PreparedPairs, evaluation: dict, extra: dict,
                      sft_share=None) -> RunSummary:
    """Write ``summary.json`` and ``report.html`` for a finished run; returns the summary.
    ``sft_share``: each trained pair's SFT share of its loss weight (default: the hard mask)."""
    rows = read_metrics(out_dir)
    summary = RunSummary.from_dict({"config": cfg.to_dict(), "data": data_report(prep), "split": prep.split.summary(),
                                    "final_train_metrics": next((r for r in reversed(rows) if "loss" in r), {}),
                                    "evaluation": evaluation, **extra})
    write_summary(out_dir, summary)
    ev = summary.evaluation
    lengths = [list(map(len, prep.dataset[c])) for c in ("chosen_ids", "rejected_ids")]
    unit = prep.margin_unit
    figures = [viz.margin_histogram(prep.margins, prep.split, unit=unit),
               viz.margin_vs_length(prep.margins, *lengths, prep.split, length_unit="tokens", unit=unit),
               viz.curriculum_timeline(prep.plan, prep.split.hard if sft_share is None else sft_share, cfg.train,
                                       unit=unit),
               viz.training_curves(rows), viz.logprob_dynamics(rows, ev.to_dict().get("preference"))]
    tables = {"Generations before (reference) and after training": ev.generations}
    if ev.true_reward_after is not None:
        tables["Ground-truth reward of greedy generations"] = [
            {"model": k, "mean_reward": r.mean_reward, "exact_match": r.exact_match, "n": r.n}
            for k, r in (("before", ev.true_reward_before), ("after", ev.true_reward_after))]
    if ev.judge is not None:
        tables["Judged against the SFT model (a local reward model; see docs/evaluation.md)"] = [
            {"verdict": line} for line in verdict_lines(ev.judge)]
    write_html(out_dir / "report.html", f"mixdpo-kit run: {out_dir.name}", figures, tables)
    return summary


# What a run writes into its folder (a new run in the same folder replaces all of it; caches stay).
RUN_OUTPUTS = ("config.yaml", "data_report.json", "metrics.jsonl", "summary.json", "report.html", "checkpoints",
               "adapter", "model", "sft_model", "sft_warmup", "answers", "judge")


def clear_run_folder(out_dir: Path, keep: str | Path | None = None) -> bool:
    """Remove a previous run's outputs from ``out_dir`` so that the folder holds one run; returns
    whether there was one. ``keep``: a path the new run reads (its model): refused if it would go."""
    found = [out_dir / name for name in RUN_OUTPUTS if (out_dir / name).exists()]
    if keep is not None:
        keep = Path(keep).resolve()
        for path in found:
            if keep == path.resolve() or path.resolve() in keep.parents:
                raise UserError(f"{out_dir} holds {path.name}, which this run loads ({keep}); a new run there would "
                                "delete it. Train into another folder.")
    for path in found:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    return bool(found)


class StopOnRequest(TrainerCallback):
    """Ends a training at the next optimiser step once ``stop.is_set()``; ``save``: keep a checkpoint there."""

    def __init__(self, stop, save: bool = True):
        self.stop, self.save = stop, save

    def on_step_end(self, args, state, control, **kw):
        if self.stop.is_set():
            control.should_training_stop = True
            control.should_save = self.save


def run(cfg: RunConfig, out_dir: str | Path, resume_from_checkpoint=None, callbacks=(),
        reference_memo: dict | None = None, on_stage=None, stop=None) -> RunSummary:
    """Train, evaluate and report one run (with the SFT warm-up first when the config asks for it).

    A new run (not a resume) first removes a previous run from ``out_dir``, so the folder's curves,
    metrics and summary are this run's alone. ``callbacks`` are transformers ``TrainerCallback``s for
    the main training (e.g. a live plot); ``reference_memo`` is passed to :func:`evaluate_policy`;
    ``on_stage(text)`` hears which long step starts (warm-up, data and reference log-probs,
    training, evaluation). ``stop``: an event (``threading.Event``) that ends the run early — during
    the warm-up or before training it raises :class:`~mixdpo_kit.training.pipeline.RunStopped` (nothing was
    trained); during training it stops at the next step, keeps a checkpoint and evaluates what was trained.
    """
    stage = on_stage or (lambda text: None)
    out_dir = Path(out_dir)
    cfg = resolve_objective(cfg)  # config.yaml and summary.json both record what actually ran
    if not resume_from_checkpoint and on_main(clear_run_folder, out_dir, keep=_local_path(cfg.model.name_or_path)):
        stage(f"replaced the previous run in {out_dir}")
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.time()
    extra = {}
    stoppers = [] if stop is None else [StopOnRequest(stop)]
    if cfg.sft_warmup.enabled:
        stage(f"SFT warm-up ({cfg.sft_warmup.max_steps} steps)…")
        sft_path = sft_warmup(cfg, out_dir, callbacks=[StopOnRequest(stop, save=False)] if stop is not None else ())
        if stop is not None and stop.is_set():
            on_main(shutil.rmtree, sft_path)  # half warmed up: not an SFT model anything should start from
            raise RunStopped("stopped during the SFT warm-up: nothing was trained")
        cfg = cfg.override(model={"name_or_path": str(sft_path)}, sft_warmup={"enabled": False})
        extra["sft_warmup_seconds"] = round(time.time() - start, 1)
    stage("loading the model and the pairs, computing margins and reference log-probs…")
    trainer, policy, prep = train(cfg, out_dir, resume_from_checkpoint=resume_from_checkpoint,
                                  callbacks=[StageCallback(stage), *callbacks, *stoppers], stop=stop)
    sft_share = route_sft_share(trainer.train_dataset)
    extra["lr_mass"] = lr_mass_by_route(prep.plan, sft_share, cfg.train, steps_done=trainer.state.global_step,
                                        processes=trainer.args.world_size)
    return evaluate_and_report(cfg, policy, prep, out_dir, extra, sft_share, reference_memo, stage, start)


def evaluate_and_report(cfg: RunConfig, policy, prep, out_dir: Path, extra: dict, sft_share=None,
                        reference_memo: dict | None = None, on_stage=None, start: float | None = None) -> RunSummary:
    """The end of a run, trained or reloaded: evaluate (and judge, when the config names a reward
    model), explain a few worked pairs, write ``summary.json`` and ``report.html``; returns the
    summary. ``extra``: what else the summary records; ``start``: when the run began (its wall time)."""
    stage = on_stage or (lambda text: None)
    stage("evaluating on held-out data…")
    evaluation = evaluate_policy(cfg, policy, reference_memo)
    if cfg.judge.reward_model:
        stage("judging the answers against the SFT model…")
        evaluation["judge"] = judge_policy(cfg, policy, out_dir)
    extra = {**extra, "worked_pairs": worked_pairs(cfg, policy, prep)}
    if start is not None:
        extra["wall_seconds"] = round(time.time() - start, 1)
    return on_main(write_run_outputs, out_dir, cfg, prep, evaluation, extra, sft_share)


def _local_path(name_or_path: str) -> Path | None:
    return Path(name_or_path) if Path(name_or_path).exists() else None


class StageCallback(TrainerCallback):
    """Reports the start of training to ``on_stage``."""

    def __init__(self, on_stage):
        self.on_stage = on_stage

    def on_train_begin(self, args, state, control, **kw):
        self.on_stage(f"training ({state.max_steps} optimiser steps)…")


def demo_config(out_dir: str | Path | None = None) -> RunConfig:
    """The ``demo`` preset writing to ``out_dir`` (default: the preset's), with its caches inside it."""
    cfg = preset("demo")
    out = Path(out_dir or cfg.train.output_dir)
    return cfg.override(train={"output_dir": str(out)}, cache={"dir": str(out / "cache")})


def run_demo(out_dir: str | Path | None = None, on_stage=None, reuse: bool = False) -> RunSummary:
    """The built-in pipeline: tiny model, SFT warm-up, QLoRA MixDPO on CPU, evaluation, report.
    ``reuse``: return the summary of a demo that already finished in ``out_dir`` with the same config."""
    cfg = demo_config(out_dir)
    if reuse and (Path(cfg.train.output_dir) / "summary.json").exists():
        summary, want = read_summary(cfg.train.output_dir), resolve_objective(cfg).to_dict()
        same = {k: v for k, v in summary.config.items() if k not in ("model", "sft_warmup")} == \
            {k: v for k, v in want.items() if k not in ("model", "sft_warmup")}  # the warm-up rewrites those two
        if same and summary.worked_pairs is not None:
            return summary
    return run(cfg, cfg.train.output_dir, on_stage=on_stage)


def load_run(run_dir: str | Path):
    """A finished run's resolved config, its trained policy (adapter on; the reference is the same
    model with it off) and its prepared pairs: ``(cfg, policy, prep)``."""
    cfg, _, policy = load_trained_policy(run_dir)
    return cfg, policy, analyze_data(cfg, policy=policy)


def evaluate_saved_run(run_dir: str | Path) -> RunSummary:
    """Reload a finished run's adapter (or model) and evaluate it again; rewrites summary and report."""
    run_dir = Path(run_dir)
    cfg, policy, prep = load_run(run_dir)
    old = read_summary(run_dir).to_dict() if (run_dir / "summary.json").exists() else {}
    keep = {k: v for k, v in old.items() if k in ("wall_seconds", "sft_warmup_seconds", "lr_mass")}
    return evaluate_and_report(cfg, policy, prep, run_dir, keep)
