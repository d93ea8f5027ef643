"""The steps of a run, wired together: data → margins → split → curriculum → model → train → evaluate.

Each function does one step and returns plain objects, so notebooks, the CLI and the tests call
the same code. A run folder holds ``config.yaml``, ``data_report.json``, ``metrics.jsonl``,
``checkpoints/``, ``adapter/`` (or ``model/``), ``summary.json`` and ``report.html``.
"""
from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import TrainingArguments

from mixdpo_kit.config import RunConfig
from mixdpo_kit.curriculum import CurriculumPlan
from mixdpo_kit.data import DataReport, is_conversational, load_demonstrations, load_preferences
from mixdpo_kit.losses import PREFERENCE_LOSSES
from mixdpo_kit.margins import compute_margins, margin_stats, normalize_margins
from mixdpo_kit.model import Policy, build_policy, resolve_model_path
from mixdpo_kit.objectives import get_objective, resolve as resolve_objective
from mixdpo_kit.refcache import ReferenceCache, cache_key
from mixdpo_kit.scoring import reward_model_margins
from mixdpo_kit.split import Split, split_by_margin
from mixdpo_kit.tokenization import TokenizationSettings, tokenize_pairs
from mixdpo_kit.trainer import TRAIN_COLUMNS, JsonlLogger, MixDPOTrainer, PairCollator


@dataclass
class PreparedPairs:
    """Pairs ready for training: tokenised rows aligned with their margins, split and plan."""

    dataset: object  # datasets.Dataset with canonical + token columns
    report: DataReport
    margins: np.ndarray
    split: Split
    plan: CurriculumPlan


def analyze_data(cfg: RunConfig, tokenizer=None, policy: Policy | None = None, margin_fn=None):
    """Load, validate, compute margins and split; tokenise (and count over-long pairs) when a
    tokenizer is given. ``policy`` is needed for the ``likelihood_gap`` margin source (its
    reference scores the pairs); ``margin_fn(dataset) -> margins`` overrides the configured source."""
    mc = cfg.margins
    keep = (mc.source[len("column:"):],) if mc.source.startswith("column:") else ()
    ds, report = load_preferences(cfg.data.source, cfg.data.split, max_rows=cfg.data.max_rows,
                                  score_order=cfg.data.score_order, keep_columns=keep)
    if policy is not None and tokenizer is None:
        tokenizer = policy.tokenizer
    if tokenizer is not None:
        settings = TokenizationSettings(cfg.data.max_length, cfg.data.max_prompt_length, cfg.data.truncation)
        ds, _ = tokenize_pairs(ds, tokenizer, settings, report)
    if margin_fn is not None:
        margins = compute_margins(ds, margin_fn)
    elif mc.source == "reward_model":
        if not mc.reward_model:
            raise ValueError("margin source 'reward_model' needs margins.reward_model (a model name or path)")
        margins = reward_model_margins(ds, mc.reward_model, cfg.train.cache_dir, mc.batch_size,
                                       cfg.data.max_length, cfg.model.trust_remote_code)
    elif mc.source == "likelihood_gap":
        if policy is None:
            raise ValueError("margin source 'likelihood_gap' needs the model: pass the policy (its reference scores pairs)")
        margins = reference_gap(policy, cfg, ds, ReferenceCache(cfg.train.cache_dir))
    else:
        margins = compute_margins(ds, mc.source)
    margins = normalize_margins(margins, mc.normalize)
    split = split_by_margin(margins, cfg.split.tau, cfg.split.quantile)
    plan = CurriculumPlan(margins, cfg.curriculum.order, cfg.curriculum.n_stages, cfg.curriculum.seed)
    return PreparedPairs(ds, report, margins, split, plan)


def tokenized_pairs(cfg: RunConfig, tokenizer):
    """Load, validate and tokenise the configured pairs without margins (e.g. held-out evaluation data)."""
    ds, report = load_preferences(cfg.data.source, cfg.data.split, max_rows=cfg.data.max_rows)
    settings = TokenizationSettings(cfg.data.max_length, cfg.data.max_prompt_length, cfg.data.truncation)
    return tokenize_pairs(ds, tokenizer, settings, report)[0]


def data_report(prep: PreparedPairs) -> dict:
    """The JSON data report: rows read/kept/dropped by reason, margin stats, split counts."""
    return {**prep.report.to_dict(), "margins": margin_stats(prep.margins), "split": prep.split.summary(),
            "conversational": is_conversational(prep.dataset)}


def training_arguments(cfg: RunConfig, out_dir: Path, dtype: torch.dtype, **overrides) -> TrainingArguments:
    """TrainingArguments from the config; mixed precision follows the policy's compute dtype."""
    t = cfg.train
    kwargs = dict(
        output_dir=str(out_dir / "checkpoints"), learning_rate=t.learning_rate, num_train_epochs=t.num_train_epochs,
        max_steps=t.max_steps, per_device_train_batch_size=t.per_device_train_batch_size,
        gradient_accumulation_steps=t.gradient_accumulation_steps, lr_scheduler_type=t.lr_scheduler_type,
        warmup_steps=t.warmup_ratio, weight_decay=t.weight_decay, logging_steps=t.logging_steps,
        save_steps=t.save_steps, save_total_limit=t.save_total_limit, seed=t.seed, data_seed=t.seed,
        report_to=t.report_to, remove_unused_columns=False, dataloader_num_workers=0,
        bf16=dtype == torch.bfloat16, fp16=dtype == torch.float16, use_cpu=not torch.cuda.is_available(),
        disable_tqdm=False, save_only_model=False,
    )
    kwargs.update(overrides)
    return TrainingArguments(**kwargs)


def attach_reference(policy: Policy, cfg: RunConfig, ds, needed: list[int], cache: ReferenceCache):
    """Add ``ref_chosen_logps`` / ``ref_rejected_logps`` columns (NaN where not ``needed``), from the cache."""
    settings = {"max_length": cfg.data.max_length, "max_prompt_length": cfg.data.max_prompt_length,
                "truncation": cfg.data.truncation}
    key = cache_key(policy.identity(), settings, *(list(ds[c]) for c in ("prompt_ids", "chosen_ids", "rejected_ids")))
    device = next(policy.model.parameters()).device
    chosen, rejected = cache.get_or_compute(policy.reference, ds, needed, key, policy.tokenizer.pad_token_id,
                                            batch_size=cfg.eval.batch_size, device=device)
    return ds.add_column("ref_chosen_logps", chosen).add_column("ref_rejected_logps", rejected)


def loss_params(cfg: RunConfig) -> dict:
    """``routed_loss`` keyword arguments from the loss config (weights travel per pair instead)."""
    params = dataclasses.asdict(cfg.loss)
    for key in ("objective", "sft_weight", "preference_weight", "nll_weight", "soft_temperature"):
        params.pop(key)
    return params


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
    return PreparedPairs(prep.dataset.select(idx), report, margins, split, plan)


def reference_gap(policy: Policy, cfg: RunConfig, ds, cache: ReferenceCache) -> np.ndarray:
    """Per-token log-likelihood gap (chosen − rejected) of every pair under the reference."""
    with_ref = attach_reference(policy, cfg, ds, list(range(len(ds))), cache)
    n_c = np.array([len(x) for x in ds["chosen_ids"]], float)
    n_r = np.array([len(x) for x in ds["rejected_ids"]], float)
    return np.asarray(with_ref["ref_chosen_logps"], float) / n_c - np.asarray(with_ref["ref_rejected_logps"], float) / n_r


def build_trainer(cfg: RunConfig, policy: Policy, prep: PreparedPairs, out_dir: Path, cache: ReferenceCache | None = None,
                  callbacks=(), **arg_overrides) -> MixDPOTrainer:
    """A ready-to-train ``MixDPOTrainer`` for prepared pairs: routes them per the objective,
    drops the pairs it filters (counted in ``trainer.prep.report``) and attaches reference log-probs."""
    objective = get_objective(cfg.loss.objective)
    pref_spec = PREFERENCE_LOSSES[cfg.loss.preference]
    cache = cache or ReferenceCache(cfg.train.cache_dir)
    gap = reference_gap(policy, cfg, prep.dataset, cache) if objective.needs_reference_gap else None
    routing = objective.routing(prep.margins, prep.split, cfg.loss, gap)
    prep = select_pairs(prep, routing.keep, f"filtered out by objective {objective.name}")
    sft_w, pref_w = routing.sft[routing.keep], routing.preference[routing.keep]
    ds = prep.dataset
    for name, values in (("sft_weight", sft_w.tolist()), ("preference_weight", pref_w.tolist()),
                         ("margin", prep.margins.tolist()), ("row_index", list(ds["row_id"]))):
        ds = ds.add_column(name, values)
    needs_ref = pref_spec.needs_reference and bool((pref_w > 0).any())
    if needs_ref and cfg.train.precompute_reference:
        ds = attach_reference(policy, cfg, ds, np.flatnonzero(pref_w > 0).tolist(), cache)
    else:
        ds = ds.add_column("ref_chosen_logps", [None] * len(ds)).add_column("ref_rejected_logps", [None] * len(ds))
    ds = ds.select_columns(list(TRAIN_COLUMNS))
    args = training_arguments(cfg, out_dir, policy.dtype, **arg_overrides)
    trainer = MixDPOTrainer(
        model=policy.model, args=args, train_dataset=ds, data_collator=PairCollator(policy.tokenizer.pad_token_id),
        processing_class=policy.tokenizer, plan=prep.plan, loss_params=loss_params(cfg),
        reference=policy.reference if needs_ref else None,
        callbacks=[JsonlLogger(out_dir / "metrics.jsonl"), *callbacks],
    )
    trainer.prep = prep
    return trainer


def sft_warmup(cfg: RunConfig, out_dir: Path) -> Path:
    """Supervised warm-up of the (tiny) base model on demonstrations; saves and returns the SFT model dir.

    It reuses the routed trainer with every pair routed to SFT, i.e. the same length-normalised
    NLL MixDPO applies to hard pairs.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    w = cfg.sft_warmup
    path = resolve_model_path(cfg.model.name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    demos = load_demonstrations(cfg.data.source, w.split)
    settings = TokenizationSettings(cfg.data.max_length, cfg.data.max_prompt_length, cfg.data.truncation)
    ds, _ = tokenize_pairs(demos, tokenizer, settings, with_rejected=False)
    margins = np.zeros(len(ds))
    prep = PreparedPairs(ds, DataReport("sft"), margins, split_by_margin(margins, tau=1.0, warn=False),
                         CurriculumPlan(margins, "random", seed=cfg.train.seed))
    sft_cfg = cfg.override(loss={"objective": "sft", "sft_weight": 1.0}, train={"learning_rate": w.learning_rate, "max_steps": w.max_steps,
                                                              "per_device_train_batch_size": w.batch_size,
                                                              "warmup_ratio": 0.05, "save_steps": 10**9})
    policy = Policy(model=model, tokenizer=tokenizer, config=sft_cfg.model, dtype=torch.float32)
    trainer = build_trainer(sft_cfg, policy, prep, out_dir / "sft_warmup", save_strategy="no")
    trainer.train()
    target = out_dir / "sft_model"
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


def out_of_memory_advice(cfg: RunConfig) -> str:
    """What to lower when a step does not fit in GPU memory, with the current values."""
    t, d, m = cfg.train, cfg.data, cfg.model
    return ("GPU out of memory. Lower, in this order: train.per_device_train_batch_size "
            f"(now {t.per_device_train_batch_size}; raise train.gradient_accumulation_steps, now "
            f"{t.gradient_accumulation_steps}, to keep the effective batch), data.max_length (now {d.max_length}) "
            f"and data.max_prompt_length (now {d.max_prompt_length}), model.lora_r (now {m.lora_r}); turn on "
            f"model.gradient_checkpointing (now {m.gradient_checkpointing}) and use model.mode=qlora (now {m.mode}). "
            "notebooks/03_train_qlora shows a memory estimate for any setting.")


def train(cfg: RunConfig, out_dir: str | Path, resume_from_checkpoint: str | bool | None = None, callbacks=()):
    """Train one run into ``out_dir``; returns (trainer, policy, prepared pairs)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = resolve_objective(cfg)
    torch.manual_seed(cfg.train.seed)
    policy = build_policy(cfg.model)
    prep = analyze_data(cfg, policy=policy)
    cfg.to_yaml(out_dir / "config.yaml")
    trainer = build_trainer(cfg, policy, prep, out_dir, callbacks=callbacks)
    prep = trainer.prep  # after the objective's filtering, if any
    (out_dir / "data_report.json").write_text(json.dumps(data_report(prep), indent=2))
    try:
        trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    except torch.OutOfMemoryError as err:
        raise RuntimeError(out_of_memory_advice(cfg)) from err
    trainer.save_model(str(out_dir / ("model" if cfg.model.mode == "full" else "adapter")))
    return trainer, policy, prep
