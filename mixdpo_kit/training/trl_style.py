"""``MixDPOConfig`` and ``MixDPOTrainer``: MixDPO from a script written for TRL's ``DPOTrainer``.

A TRL script switches to MixDPO by changing its config class and trainer class, and choosing τ and
a margin source; the model (a name, or an object loaded in 4-bit or as a ``PeftModel``), the
tokenizer, the dataset and the ``peft.LoraConfig`` it already has go in unchanged::

    args = MixDPOConfig(output_dir="out", beta=0.1, tau=0.5, margin_source="ratings")
    trainer = MixDPOTrainer(model=model, args=args, train_dataset=pairs, processing_class=tokenizer,
                            peft_config=LoraConfig(r=16, lora_alpha=32, task_type="CAUSAL_LM"))
    trainer.train()

- ``MixDPOConfig`` is a ``transformers.TrainingArguments`` (as TRL's ``DPOConfig`` is). Its own
  fields are the kit's settings, made from :class:`~mixdpo_kit.core.config.RunConfig`'s fields with
  their defaults and help (``KIT_FIELDS``); the Trainer's fields a kit run sets differently from
  ``TrainingArguments`` take :class:`~mixdpo_kit.core.config.TrainConfig`'s defaults.
  ``to_run_config()`` is the config ``mixdpo-kit train`` would run with the same settings.
- ``MixDPOTrainer`` prepares the pairs as a kit run does (load in any format the kit reads, margins,
  split, curriculum, routing, reference log-probs: :mod:`mixdpo_kit.training.pipeline`) and is the
  kit's Trainer subclass, so ``train``, ``evaluate``, ``save_model``, ``push_to_hub``, callbacks,
  ``report_to`` and resuming from a checkpoint are ``transformers.Trainer``'s own.
"""
from __future__ import annotations

import dataclasses
import typing
from typing import Any

from transformers import TrainingArguments

from mixdpo_kit.core.config import RunConfig, TrainConfig
from mixdpo_kit.core.errors import UserError
from mixdpo_kit.margins.curriculum import lr_mass_by_route
from mixdpo_kit.modeling.model import policy_from_model
from mixdpo_kit.modeling.refcache import ReferenceCache
from mixdpo_kit.objectives.routing import resolve
from mixdpo_kit.reports.results import LearningRateMass, as_mass
from mixdpo_kit.training.pipeline import analyze_data, routed_pairs, trainer_inputs
from mixdpo_kit.training.trainer import RoutedPairTrainer, route_sft_share

# MixDPOConfig's own fields: name -> (RunConfig section, field). Default, type and help are RunConfig's.
KIT_FIELDS = {
    "objective": ("loss", "objective"), "preference_loss": ("loss", "preference"),
    "sft_weight": ("loss", "sft_weight"), "preference_weight": ("loss", "preference_weight"),
    "tau": ("split", "tau"), "quantile": ("split", "quantile"),
    "margin_source": ("margins", "source"), "reward_model": ("margins", "reward_model"),
    "margin_normalize": ("margins", "normalize"), "margin_batch_size": ("margins", "batch_size"),
    "order": ("curriculum", "order"), "n_stages": ("curriculum", "n_stages"), "curriculum_seed": ("curriculum", "seed"),
    "max_length": ("data", "max_length"), "max_prompt_length": ("data", "max_prompt_length"),
    "truncation": ("data", "truncation"), "score_order": ("data", "score_order"), "data_format": ("data", "format"),
    "pairing": ("data", "pairing"), "rating": ("data", "rating"),
    "share_prompt": ("model", "share_prompt"), "precompute_reference": ("train", "precompute_reference"),
    "reference_batch_size": ("eval", "batch_size"), "cache_dir": ("cache", "dir"),
}
# The preference loss's two most used parameters under TRL's names (None: the objective's own
# default, e.g. the paper's β = 0.01 and ε = 0.1 for mixdpo); any other goes in ``loss_params``.
LOSS_FIELDS = {
    "beta": "the preference loss's β (None: the objective's default; mixdpo: the paper's 0.01)",
    "label_smoothing": "cDPO's ε, the probability the chosen label is wrong (None: the objective's default; "
                       "mixdpo: the paper's 0.1)",
}
# TrainingArguments fields a kit run sets: name -> the TrainConfig field whose default it takes
# (warm-up: TrainingArguments reads a warmup_steps below 1 as a share of the steps).
TRAINER_FIELDS = {"learning_rate": "learning_rate", "num_train_epochs": "num_train_epochs",
                  "per_device_train_batch_size": "per_device_train_batch_size",
                  "lr_scheduler_type": "lr_scheduler_type", "warmup_steps": "warmup_ratio",
                  "logging_steps": "logging_steps", "save_total_limit": "save_total_limit", "report_to": "report_to"}


def _kit_field(section: str, name: str) -> tuple[Any, dataclasses.Field]:
    """The type and a field (default, help) for one RunConfig setting."""
    section_cls = typing.get_type_hints(RunConfig)[section]
    source = {f.name: f for f in dataclasses.fields(section_cls)}[name]
    meta = {"help": source.metadata.get("help", "")}
    made = dataclasses.field(default=source.default, metadata=meta) if source.default is not dataclasses.MISSING \
        else dataclasses.field(default_factory=source.default_factory, metadata=meta)
    return typing.get_type_hints(section_cls)[name], made


def _config_fields() -> list[tuple]:
    fields = [(name, *_kit_field(*where)) for name, where in KIT_FIELDS.items()]
    fields += [(name, float | None, dataclasses.field(default=None, metadata={"help": text}))
               for name, text in LOSS_FIELDS.items()]
    fields.append(("loss_params", dict, dataclasses.field(default_factory=dict, metadata={
        "help": "other parameters of the preference loss or the objective (e.g. {'gamma': 1.0} for simpo, "
                "{'nll_weight': 0.5} for dpo_nll); mixdpo-kit objectives lists them"})))
    train = {f.name: f for f in dataclasses.fields(TrainConfig)}
    ours = {f.name: f for f in dataclasses.fields(TrainingArguments)}
    for name, kit_name in TRAINER_FIELDS.items():
        fields.append((name, ours[name].type, dataclasses.field(
            default=train[kit_name].default, metadata={**ours[name].metadata, "help": train[kit_name].metadata["help"]})))
    # Pair columns are the kit's own (Trainer would drop them); every trainable weight takes part in every step.
    fields.append(("remove_unused_columns", bool, dataclasses.field(default=False, metadata=ours[
        "remove_unused_columns"].metadata)))
    fields.append(("ddp_find_unused_parameters", bool | None, dataclasses.field(default=False, metadata=ours[
        "ddp_find_unused_parameters"].metadata)))
    return fields


def _to_run_config(self) -> RunConfig:
    """The resolved :class:`RunConfig` of these settings: what ``mixdpo-kit train`` runs for them."""
    sections: dict[str, dict] = {}
    for name, (section, key) in KIT_FIELDS.items():
        sections.setdefault(section, {})[key] = getattr(self, name)
    sections["loss"].update(self.loss_params)
    sections["loss"].update({k: getattr(self, k) for k in LOSS_FIELDS if getattr(self, k) is not None})
    schedule = getattr(self.lr_scheduler_type, "value", self.lr_scheduler_type)
    report = self.report_to if isinstance(self.report_to, str) else ",".join(self.report_to) or "none"
    sections["train"].update(
        output_dir=self.output_dir, learning_rate=self.learning_rate, num_train_epochs=self.num_train_epochs,
        max_steps=self.max_steps, per_device_train_batch_size=self.per_device_train_batch_size,
        gradient_accumulation_steps=self.gradient_accumulation_steps, lr_scheduler_type=schedule,
        warmup_ratio=self.warmup_steps, weight_decay=self.weight_decay, logging_steps=self.logging_steps,
        save_steps=self.save_steps, save_total_limit=self.save_total_limit, seed=self.seed, report_to=report)
    return resolve(RunConfig().override(**sections))


MixDPOConfig = dataclasses.make_dataclass(
    "MixDPOConfig", _config_fields(), bases=(TrainingArguments,),
    namespace={"to_run_config": _to_run_config, "__module__": __name__, "__doc__":
               "Training arguments for :class:`MixDPOTrainer`: ``transformers.TrainingArguments`` plus the kit's "
               "settings (objective, β, ε, τ or quantile, margin source, order, lengths, reference "
               "precompute), each with ``RunConfig``'s default and help."})


class MixDPOTrainer(RoutedPairTrainer):
    """MixDPO (or any registered objective) in TRL's ``DPOTrainer`` shape; see the module docstring."""

    def __init__(self, model, ref_model=None, args=None, train_dataset=None, eval_dataset=None,
                 processing_class=None, peft_config=None, callbacks=None, optimizers=(None, None), **kwargs):
        """``model``: a causal LM object (4-bit, a ``PeftModel``, or plain) or its name; ``ref_model``:
        a separate reference (default: the adapter switched off, or a frozen copy when training
        every weight); ``args``: a :data:`MixDPOConfig`; ``train_dataset`` / ``eval_dataset``: pairs
        in any format the kit reads (TRL's standard and conversational formats, UltraFeedback's
        scores, HelpSteer, SHP, Nectar, ...); ``processing_class``: the tokenizer; ``peft_config``:
        a ``peft.LoraConfig`` for a fresh adapter."""
        if train_dataset is None:
            raise UserError("MixDPOTrainer needs a train_dataset of preference pairs")
        if args is None:
            name = model if isinstance(model, str) else "model"
            args = MixDPOConfig(output_dir=f"{str(name).rstrip('/').split('/')[-1]}-MixDPO")
        if not isinstance(args, MixDPOConfig):
            raise UserError(f"args is a {type(args).__name__}; MixDPOTrainer takes a MixDPOConfig (TrainingArguments "
                            "fields plus the kit's settings: objective, beta, label_smoothing, tau, margin_source, ...)")
        cfg = args.to_run_config()
        policy = policy_from_model(model, processing_class, cfg.model, lora=peft_config, ref_model=ref_model,
                                   seed=args.seed, models_dir=cfg.cache.path("models"))
        if args.gradient_checkpointing and policy.config.mode != "full":
            policy.model.enable_input_require_grads()  # frozen embeddings + checkpointing would zero the grads
        cache = ReferenceCache(cfg.cache.dir)
        self.policy, self.run_config = policy, cfg
        self.prepared = analyze_data(cfg, policy=policy, pairs=train_dataset)
        routed = routed_pairs(cfg, policy, self.prepared, cache)
        self.prepared = routed.prep  # the pairs it trains: after the objective's filtering
        held_out = None
        if eval_dataset is not None:  # routed at the training split's τ
            eval_cfg = cfg.override(split={"tau": self.prepared.split.tau, "quantile": None})
            held_out = routed_pairs(eval_cfg, policy, analyze_data(eval_cfg, policy=policy, pairs=eval_dataset),
                                    cache, loss=routed.loss)
        inputs = trainer_inputs(cfg, policy, routed)
        if held_out is not None and held_out.needs_reference:
            inputs["reference"] = policy.reference
        super().__init__(args=args, eval_dataset=None if held_out is None else held_out.dataset, callbacks=callbacks,
                         optimizers=optimizers, **inputs, **kwargs)

    def lr_mass(self) -> LearningRateMass:
        """The learning-rate mass by route of this training (of the steps trained so far, once it ran),
        as ``mixdpo-kit train`` reports it in ``summary.json``."""
        steps = self.state.global_step or None
        return as_mass(lr_mass_by_route(self.prepared.plan, route_sft_share(self.train_dataset), self.run_config.train,
                                        steps_done=steps, processes=self.args.world_size))
