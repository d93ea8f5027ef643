"""The steps of a run, wired together: data → margins → split → curriculum → model → train → evaluate.

Each function does one step and returns plain objects, so notebooks, the CLI and the tests call
the same code. A run folder holds ``config.yaml``, ``data_report.json``, ``metrics.jsonl``,
``checkpoints/``, ``adapter/`` (or ``model/``), ``summary.json`` and ``report.html``.
"""
from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import TrainingArguments

from mixdpo_kit.core import progress
from mixdpo_kit.core.distributed import on_main
from mixdpo_kit.core.config import DataConfig, RunConfig, write_run_config
from mixdpo_kit.core.errors import UserError
from mixdpo_kit.data.loading import DataReport, is_conversational, load_configured, load_demonstrations
from mixdpo_kit.data.tokenization import TokenizationSettings, tokenize_pairs
from mixdpo_kit.evaluation.evaluate import HeldoutLogps
from mixdpo_kit.margins.curriculum import CurriculumPlan
from mixdpo_kit.margins.sources import (MarginContext, compute_margins, margin_source, margin_stats, margin_unit,
                                        normalize_margins)
from mixdpo_kit.margins.split import Split, grid_note, split_by_margin
from mixdpo_kit.modeling.model import Policy, build_policy
from mixdpo_kit.modeling.pairbatch import prompt_sharing
from mixdpo_kit.modeling.refcache import ReferenceCache, reference_logps
from mixdpo_kit.objectives.routing import bound_loss, get_objective, resolve
from mixdpo_kit.training.trainer import JsonlLogger, RoutedPairTrainer, PairCollator, training_dataset


class RunStopped(RuntimeError):
    """A run stopped on request before its main training took a step: nothing was trained."""


@dataclass
class PreparedPairs:
    """Pairs ready for training: tokenised rows aligned with their margins, split and plan."""

    dataset: object  # datasets.Dataset with canonical + token columns
    report: DataReport
    margins: np.ndarray
    split: Split
    plan: CurriculumPlan
    margin_unit: str = "margin units"  # for axis titles: rating points, nats per token, ...


def analyze_data(cfg: RunConfig, tokenizer=None, policy: Policy | None = None, margin_fn=None, pairs=None):
    """Load, validate, compute margins and split; tokenise (and count over-long pairs) when a
    tokenizer is given or the margin source needs token ids. Model-based margin sources use
    ``policy`` (or build one from ``cfg.model`` when none is given); ``margin_fn(dataset) ->
    margins`` replaces the configured source; ``pairs``: a ``datasets.Dataset`` in any format the kit
    reads, instead of ``cfg.data.source`` (read with the data section's format choices)."""
    source, arg = margin_source(margin_fn or cfg.margins.source)
    ctx = MarginContext(cfg, policy, build_policy=lambda: build_policy(cfg.model, models_dir=cfg.cache.path("models")))
    where = {} if pairs is None else {"source": pairs}
    ds, report = load_configured(cfg.data, keep_columns=source.columns(arg), **where)
    if tokenizer is None and (policy is not None or source.needs_tokens):
        tokenizer = ctx.tokenizer
    if tokenizer is not None:
        ds, _ = tokenize_pairs(ds, tokenizer, TokenizationSettings.from_config(cfg.data), report)
    margins = normalize_margins(compute_margins(ds, margin_fn or cfg.margins.source, ctx), cfg.margins.normalize)
    split = split_by_margin(margins, cfg.split.tau, cfg.split.quantile)
    plan = CurriculumPlan(margins, cfg.curriculum.order, cfg.curriculum.n_stages, cfg.curriculum.seed)
    unit = margin_unit(margin_fn or cfg.margins.source, cfg.margins.normalize, ds)
    return PreparedPairs(ds, report, margins, split, plan, unit)


def tokenized_pairs(source: str, split: str, max_rows: int | None, settings: TokenizationSettings, tokenizer,
                    data_cfg: DataConfig | None = None):
    """Load, validate and tokenise pairs without margins (e.g. held-out evaluation data), read with
    ``data_cfg``'s format choices when given."""
    ds, report = load_configured(data_cfg or DataConfig(), source=source, split=split, max_rows=max_rows)
    return tokenize_pairs(ds, tokenizer, settings, report)[0]


def data_report(prep: PreparedPairs) -> dict:
    """The JSON data report: rows read/kept/dropped by reason, margin stats, split counts."""
    split = {**prep.split.summary(), "grid_note": grid_note(prep.margins, prep.split.tau)}
    return {**prep.report.to_dict(), "margins": margin_stats(prep.margins), "split": split,
            "conversational": is_conversational(prep.dataset)}


def training_arguments(cfg: RunConfig, out_dir: Path, dtype: torch.dtype, **overrides) -> TrainingArguments:
    """TrainingArguments from the config; mixed precision follows the policy's compute dtype."""
    refuse_fsdp_without_gpu()
    t = cfg.train
    kwargs = dict(
        output_dir=str(out_dir / "checkpoints"), learning_rate=t.learning_rate, num_train_epochs=t.num_train_epochs,
        max_steps=t.max_steps, per_device_train_batch_size=t.per_device_train_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps, lr_scheduler_type=t.lr_scheduler_type,
        warmup_steps=t.warmup_ratio, weight_decay=t.weight_decay, logging_steps=t.logging_steps,
        save_steps=t.save_steps, save_total_limit=t.save_total_limit, seed=t.seed, data_seed=t.seed,
        report_to=t.report_to, remove_unused_columns=False, dataloader_num_workers=0,
        use_cpu=not torch.cuda.is_available(), disable_tqdm=False, save_only_model=False, **mixed_precision(dtype),
        # Every trainable weight takes part in every step. And DDP's search for unused ones marks a tied
        # weight (input embeddings = output head, e.g. Qwen2.5-0.5B) ready twice and fails a full fine-tune.
        ddp_find_unused_parameters=False,
    )
    kwargs.update(overrides)
    return TrainingArguments(**kwargs)


def refuse_fsdp_without_gpu() -> None:
    """Stop a launch that asks for FSDP on a machine without a GPU, where accelerate would silently
    train with DDP instead (it turns FSDP on only for GPU processes)."""
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true" and not torch.cuda.is_available():
        raise UserError("FSDP was asked for (ACCELERATE_USE_FSDP=true, e.g. by configs/accelerate/fsdp.yaml) but "
                        "this machine has no GPU: accelerate turns FSDP on only for GPU processes and would train "
                        "with plain DDP instead. On CPU launch DDP (torchrun, or configs/accelerate/ddp.yaml).")


def mixed_precision(dtype: torch.dtype) -> dict[str, bool]:
    """TrainingArguments' mixed-precision flags for a compute dtype: bf16 autocast, or fp16
    autocast with the Trainer's loss scaling (GPUs without bf16), or neither (fp32)."""
    return {"bf16": dtype == torch.bfloat16, "fp16": dtype == torch.float16}


def select_pairs(prep: PreparedPairs, keep: np.ndarray, reason: str) -> PreparedPairs:
    """Only the kept pairs, with the drops counted in the report and the plan rebuilt on them."""
    if keep.all():
        return prep
    report = copy.deepcopy(prep.report)
    for row_id in np.asarray(prep.dataset["row_id"])[~keep]:
        report.drop(reason, int(row_id))
    report.rows_kept = int(keep.sum())
    idx = np.flatnonzero(keep)
    margins = prep.margins[idx]
    split = Split(hard=prep.split.hard[idx], tau=prep.split.tau, quantile=prep.split.quantile)
    plan = CurriculumPlan(margins, prep.plan.order, prep.plan.n_stages, prep.plan.seed)
    return PreparedPairs(prep.dataset.select(idx), report, margins, split, plan, prep.margin_unit)


@dataclass
class RoutedPairs:
    """What the trainer takes for a set of prepared pairs: its dataset (route weights, margins,
    reference log-probs), the pairs it keeps, the bound loss and whether a reference is needed."""

    dataset: object  # training_dataset(...)
    prep: PreparedPairs  # after the objective's filtering
    loss: object  # objectives.bound_loss(...)
    needs_reference: bool


def routed_pairs(cfg: RunConfig, policy: Policy, prep: PreparedPairs, cache: ReferenceCache | None = None,
                 loss=None) -> RoutedPairs:
    """Route prepared pairs per the objective (the pairs it filters are dropped and counted in the
    returned pairs' report) and attach reference log-probs (computed once, cached) where the config
    asks for them. ``loss``: a bound loss to share (e.g. the training's, for its held-out pairs)."""
    objective = get_objective(cfg.loss.objective)
    loss = loss or bound_loss(cfg.loss)
    cache = cache or ReferenceCache(cfg.cache.dir)
    settings = TokenizationSettings.from_config(cfg.data).to_dict()
    gap = compute_margins(prep.dataset, "likelihood_gap", MarginContext(cfg, policy)) \
        if objective.needs_reference_gap else None
    routing = objective.route(prep.margins, prep.split, cfg.loss, gap)
    prep = select_pairs(prep, routing.keep, f"filtered out by objective {objective.name}")
    sft_w, pref_w = routing.sft[routing.keep], routing.preference[routing.keep]
    needs_ref = loss.spec.needs_reference and bool((pref_w > 0).any())
    ref_c = ref_r = None
    if needs_ref and cfg.train.precompute_reference:
        ref_c, ref_r = reference_logps(policy, prep.dataset, np.flatnonzero(pref_w > 0).tolist(), settings, cache,
                                       cfg.eval.batch_size)
    return RoutedPairs(training_dataset(prep.dataset, sft_w, pref_w, prep.margins, ref_c, ref_r), prep, loss, needs_ref)


def trainer_inputs(cfg: RunConfig, policy: Policy, routed: RoutedPairs) -> dict:
    """The keyword arguments of :class:`RoutedPairTrainer` for routed pairs, besides ``args`` (the
    kit's run and the TRL-shaped ``MixDPOTrainer`` build the same trainer from them)."""
    return dict(model=policy.model, train_dataset=routed.dataset, processing_class=policy.tokenizer,
                data_collator=PairCollator(policy.tokenizer.pad_token_id,
                                           prompt_sharing(policy.model, cfg.model.share_prompt)),
                plan=routed.prep.plan, loss=routed.loss, reference=policy.reference if routed.needs_reference else None,
                share_prompt=cfg.model.share_prompt)


def build_trainer(cfg: RunConfig, policy: Policy, prep: PreparedPairs, out_dir: Path, cache: ReferenceCache | None = None,
                  callbacks=(), show_bar: bool = True, **arg_overrides) -> tuple[RoutedPairTrainer, PreparedPairs]:
    """A ready-to-train ``RoutedPairTrainer`` for prepared pairs and a resolved config (pairs routed
    by :func:`routed_pairs`). Returns the trainer and the pairs it trains on. ``show_bar``:
    whether this training shows a progress bar in quiet mode (:mod:`mixdpo_kit.core.progress`)."""
    routed = routed_pairs(cfg, policy, prep, cache)
    trainer = RoutedPairTrainer(args=training_arguments(cfg, out_dir, policy.dtype, **arg_overrides),
                                callbacks=[JsonlLogger(out_dir / "metrics.jsonl"), *callbacks],
                                **trainer_inputs(cfg, policy, routed))
    progress.configure(trainer, show_bar)
    return trainer, routed.prep


def sft_warmup(cfg: RunConfig, out_dir: Path, callbacks=()) -> Path:
    """Supervised warm-up of the (tiny) base model on demonstrations; saves and returns the SFT model dir.

    Full fine-tuning through the routed trainer with every pair routed to SFT, i.e. the same
    length-normalised NLL MixDPO applies to hard pairs. ``callbacks``: ``TrainerCallback``s for it
    (e.g. one that stops it on request).
    """
    w = cfg.sft_warmup
    sft_cfg = resolve(cfg.override(
        model={"mode": "full", "dtype": "float32"}, loss={"objective": "sft"},
        # The warm-up's own recipe, whatever the main run uses: the SFT model (the reference) must not
        # change with the main run's schedule, or runs that differ only there start from different models.
        train={"learning_rate": w.learning_rate, "max_steps": w.max_steps, "per_device_train_batch_size": w.batch_size,
               "gradient_accumulation_steps": 1, "warmup_ratio": 0.05, "lr_scheduler_type": "cosine",
               "weight_decay": 0.0, "num_train_epochs": 1, "save_steps": 10**9}))
    policy = build_policy(sft_cfg.model, with_reference=False, models_dir=sft_cfg.cache.path("models"))
    demos = load_demonstrations(cfg.data.source, w.split)
    ds, _ = tokenize_pairs(demos, policy.tokenizer, TokenizationSettings.from_config(cfg.data), with_rejected=False)
    margins = np.zeros(len(ds))
    prep = PreparedPairs(ds, DataReport("sft"), margins, split_by_margin(margins, tau=1.0, warn=False),
                         CurriculumPlan(margins, "random", seed=cfg.train.seed))
    trainer, _ = build_trainer(sft_cfg, policy, prep, out_dir / "sft_warmup", callbacks=callbacks,
                               show_bar=progress.stage_bars(), save_strategy="no")
    with progress.label("SFT warm-up"):
        trainer.train()
    return save_trained(trainer, out_dir / "sft_model")


def save_trained(trainer, path: Path) -> Path:
    """Save the trained weights (adapter, or the model) and the tokenizer to ``path``. The main
    process writes — under FSDP after gathering the sharded weights — and the others wait for it."""
    if trainer.is_fsdp_enabled:  # a sharded state dict would leave no loadable weights in ``path``
        trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
    trainer.save_model(str(path))
    trainer.accelerator.wait_for_everyone()
    return path


def checkpoint_step(out_dir: Path, checkpoint: str | bool) -> int:
    """The optimiser step a checkpoint was saved at (``True``: the latest in ``out_dir/checkpoints``)."""
    if checkpoint is True:
        found = sorted((out_dir / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
        if not found:
            return 0
        checkpoint = found[-1]
    state = Path(checkpoint) / "trainer_state.json"
    return int(json.loads(state.read_text())["global_step"]) if state.exists() else int(Path(checkpoint).name.split("-")[-1])


def keep_metrics_until(path: Path, step: int) -> None:
    """Drop logged rows after ``step``: a resumed run logs those steps again."""
    if path.exists():
        rows = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= step]
        path.write_text("".join(row + "\n" for row in rows))


def out_of_memory_advice(cfg: RunConfig) -> str:
    """What to lower when a step does not fit in GPU memory, with the current values."""
    t, d, m = cfg.train, cfg.data, cfg.model
    return ("GPU out of memory. Lower, in this order: train.per_device_train_batch_size "
            f"(now {t.per_device_train_batch_size}; raise train.gradient_accumulation_steps, now "
            f"{t.gradient_accumulation_steps}, to keep the effective batch), data.max_length (now {d.max_length}) "
            f"and data.max_prompt_length (now {d.max_prompt_length}), model.lora_r (now {m.lora_r}); turn on "
            f"model.gradient_checkpointing (now {m.gradient_checkpointing}) and use model.mode=qlora (now {m.mode}). "
            "notebooks/03_train_qlora shows a memory estimate for any setting.")


def train(cfg: RunConfig, out_dir: str | Path, resume_from_checkpoint: str | bool | None = None, callbacks=(),
          stop=None):
    """Train one run of a resolved config into ``out_dir``; returns (trainer, policy, prepared pairs).
    ``stop``: an event; when it is set before the first step (e.g. during the reference pass),
    :class:`RunStopped` is raised instead of training."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.train.seed)
    policy = build_policy(cfg.model, models_dir=cfg.cache.path("models"), seed=cfg.train.seed)
    prep = analyze_data(cfg, policy=policy)
    on_main(write_run_config, cfg, out_dir)
    ec = cfg.eval
    if ec.track_every > 0 and cfg.data.eval_source:
        tracked = tokenized_pairs(cfg.data.eval_source, cfg.data.eval_split, ec.track_pairs,
                                  TokenizationSettings.from_config(cfg.data), policy.tokenizer, cfg.data)
        callbacks = [*callbacks, HeldoutLogps(policy.model, tracked, policy.tokenizer.pad_token_id, ec.batch_size,
                                              ec.track_every, out_dir / "metrics.jsonl", cfg.model.share_prompt)]
    trainer, prep = build_trainer(cfg, policy, prep, out_dir, callbacks=callbacks)  # prep: after any filtering
    on_main((out_dir / "data_report.json").write_text, json.dumps(data_report(prep), indent=2))
    if stop is not None and stop.is_set():
        raise RunStopped("stopped before the first training step: nothing was trained")
    if resume_from_checkpoint:
        on_main(keep_metrics_until, out_dir / "metrics.jsonl", checkpoint_step(out_dir, resume_from_checkpoint))
    try:
        trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    except torch.OutOfMemoryError as err:
        raise RuntimeError(out_of_memory_advice(cfg)) from err
    save_trained(trainer, out_dir / ("model" if cfg.model.mode == "full" else "adapter"))
    return trainer, policy, prep
