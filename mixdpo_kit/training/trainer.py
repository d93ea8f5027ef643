"""``RoutedPairTrainer``: a transformers.Trainer that trains routed preference pairs in curriculum order
(the public, TRL-shaped ``MixDPOTrainer`` of :mod:`mixdpo_kit.training.trl_style` builds its input and is one).

What it changes in Trainer, and why:
- the train sampler yields the curriculum plan's order (Trainer would shuffle), and the run's steps
  are checked against the kit's step planner (:class:`~mixdpo_kit.core.steps.StepPlan`) when training
  begins, so the timeline, learning-rate mass and cost the kit reports are the ones that run;
- ``compute_loss`` runs one policy forward over the chosen responses of all pairs plus the
  rejected responses of preference-routed pairs only: an SFT-routed pair costs one sequence,
  no rejected pass and no reference pass; a preference pair's prompt runs once for both of its
  responses where the model allows (:mod:`mixdpo_kit.modeling.pairbatch`);
- reference log-probs come precomputed from the dataset (see :mod:`mixdpo_kit.modeling.refcache`) or,
  when missing (NaN), from the policy with its adapter off, for preference-routed pairs only;
- the loss is a per-batch mean computed here, so ``model_accepts_loss_kwargs = False`` keeps
  Trainer from rescaling it by token counts under gradient accumulation;
- per-route metrics are averaged over the pairs of that route since the last log, on every process;
- evaluation (``Trainer.evaluate``) reports the routed loss of the held-out pairs as ``eval_loss``;
- each training step holds the model's lock (:func:`~mixdpo_kit.modeling.logprobs.model_lock`), so a
  panel's evaluation or generation on the same model waits for it instead of interleaving.

The trainer's input is :func:`training_dataset`: the columns of ``TRAIN_COLUMNS``, nothing else.
"""
from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

import datasets
import numpy as np
import torch
from accelerate.utils import gather_object
from transformers import Trainer, TrainerCallback

from mixdpo_kit.core.distributed import process_state
from mixdpo_kit.core.steps import StepPlan
from mixdpo_kit.data.tokenization import TOKEN_COLUMNS
from mixdpo_kit.margins.curriculum import CurriculumPlan, CurriculumSampler
from mixdpo_kit.modeling.logprobs import eval_mode, model_lock, policy_pair_logps, score_pair_batch
from mixdpo_kit.modeling.pairbatch import PromptSharing, ResponseBatch, pair_rows
from mixdpo_kit.objectives.losses import routed_loss

TRAIN_COLUMNS = TOKEN_COLUMNS + ("sft_weight", "preference_weight", "margin", "row_index", "ref_chosen_logps",
                                 "ref_rejected_logps")


def training_dataset(pairs: datasets.Dataset, sft_weight, preference_weight, margin, ref_chosen=None,
                     ref_rejected=None) -> datasets.Dataset:
    """The trainer's input: tokenised pairs (with ``row_id``) plus per-pair route weights, margin
    and reference log-prob sums (NaN, or None for all, where the trainer must compute them)."""
    n = len(pairs)
    nan = [math.nan] * n
    columns = {c: pairs[c] for c in TOKEN_COLUMNS}
    columns.update(sft_weight=np.asarray(sft_weight, float).tolist(),
                   preference_weight=np.asarray(preference_weight, float).tolist(),
                   margin=np.asarray(margin, float).tolist(), row_index=list(pairs["row_id"]),
                   ref_chosen_logps=nan if ref_chosen is None else [float(x) for x in ref_chosen],
                   ref_rejected_logps=nan if ref_rejected is None else [float(x) for x in ref_rejected])
    return datasets.Dataset.from_dict(columns)


def route_sft_share(train_ds: datasets.Dataset) -> np.ndarray:
    """Each pair's SFT share of its loss weight, a / (a + b): 1 for a hard MixDPO pair, 0 for DPO."""
    a, b = np.asarray(train_ds["sft_weight"], float), np.asarray(train_ds["preference_weight"], float)
    return np.divide(a, a + b, out=np.zeros_like(a), where=a + b > 0)


class PairCollator:
    """Lays a batch of tokenised pairs out as one policy batch (:func:`~mixdpo_kit.modeling.pairbatch.pair_rows`):
    the chosen response of every pair and the rejected response of the pairs with a preference
    weight (SFT-only pairs send none), sharing each pair's prompt where ``sharing`` allows.
    The token lists travel along for the reference fallback."""

    def __init__(self, pad_id: int, sharing: PromptSharing = PromptSharing(False)):
        self.pad_id = pad_id
        self.sharing = sharing

    def __call__(self, features: list[dict]) -> dict:
        rejected = [f["rejected_ids"] if f["preference_weight"] > 0 else None for f in features]
        batch = pair_rows([f["prompt_ids"] for f in features], [f["chosen_ids"] for f in features], rejected,
                          self.pad_id, self.sharing)
        column = lambda key, dtype=torch.float32: torch.tensor([f[key] for f in features], dtype=dtype)  # noqa: E731
        return {
            **batch.as_inputs(),
            "sft_weight": column("sft_weight"), "preference_weight": column("preference_weight"),
            "margin": column("margin"), "row_index": column("row_index", torch.long),
            "ref_chosen_logps": column("ref_chosen_logps"), "ref_rejected_logps": column("ref_rejected_logps"),
            "pairs": {c: [f[c] for f in features] for c in TOKEN_COLUMNS},
        }


class RoutedPairTrainer(Trainer):
    """Trainer for routed preference optimisation; see the module docstring."""

    def __init__(self, *args, plan: CurriculumPlan, loss, reference=None, share_prompt: bool = True, **kwargs):
        """``plan``: the curriculum; ``loss``: a bound preference loss (``objectives.bound_loss``),
        which keeps any state of its own across steps; ``reference``: a context manager factory
        yielding the reference module, used only when a reference log-prob is missing (its pairs
        share their prompt when ``share_prompt`` and the model allows)."""
        super().__init__(*args, **kwargs)
        self.plan = plan
        self.add_callback(StepPlanCheck(self))
        self.share_prompt = share_prompt
        self.loss = loss
        self.reference = reference
        self.model_accepts_loss_kwargs = False
        self._metric_sums: dict[str, float] = defaultdict(float)
        self._metric_counts: dict[str, int] = defaultdict(int)

    def _get_train_sampler(self, train_dataset=None):
        return CurriculumSampler(self.plan)

    def training_step(self, model, inputs, num_items_in_batch=None):
        with model_lock(model):
            return super().training_step(model, inputs, num_items_in_batch)

    def _reference_logps(self, inputs, with_pref: torch.Tensor):
        ref_c, ref_r = inputs["ref_chosen_logps"].clone(), inputs["ref_rejected_logps"].clone()
        missing = with_pref & (ref_c.isnan() | ref_r.isnan())
        if missing.any():
            if self.reference is None:
                raise RuntimeError("reference log-probs are missing and the trainer has no reference model")
            rows = missing.nonzero().squeeze(-1).tolist()
            pairs = inputs["pairs"]
            with self.reference() as ref, eval_mode(ref):
                c, r = score_pair_batch(ref, *([pairs[k][i] for i in rows] for k in TOKEN_COLUMNS),
                                        self.processing_class.pad_token_id, ref_c.device, self.share_prompt)
            ref_c[missing], ref_r[missing] = c.to(ref_c.dtype), r.to(ref_r.dtype)
        return ref_c, ref_r

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        sft_w, pref_w = inputs["sft_weight"], inputs["preference_weight"]
        with_pref = pref_w > 0
        spec = self.loss.spec
        lp = policy_pair_logps(model, ResponseBatch.from_inputs(inputs), with_pref, inputs["margin"], spec.token_inputs)
        if spec.needs_reference and with_pref.any():
            lp.ref_chosen, lp.ref_rejected = self._reference_logps(inputs, with_pref)
        out = routed_loss(lp, self.loss, sft_w, pref_w)
        loss = out.loss
        if not torch.isfinite(loss):
            # The weights are still finite (no backward yet): keep them for inspection, then stop.
            kept = Path(self.args.output_dir) / f"checkpoint-nonfinite-step{self.state.global_step}"
            self.save_model(str(kept))
            raise FloatingPointError(
                f"non-finite loss {loss.item()} at step {self.state.global_step}; source rows of the batch: "
                f"{inputs['row_index'].tolist()}; the weights before this step are saved in {kept}")
        if model.training:
            for key, (total, count) in out.metrics.items():
                self._metric_sums[key] += total
                self._metric_counts[key] += count
        return (loss, {"per_pair": out.per_pair}) if return_outputs else loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """The routed loss of an evaluation batch (Trainer computes a loss only for batches with labels)."""
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:  # a training log: attach the route metrics gathered since the last one
            sums, counts = self._route_totals()
            for key, total in sums.items():
                if counts.get(key):
                    logs[key] = total / counts[key]
            self._metric_sums.clear()
            self._metric_counts.clear()
        super().log(logs, start_time)

    def _route_totals(self) -> tuple[dict[str, float], dict[str, int]]:
        """The route metrics' sums and pair counts since the last log, over every process (Trainer
        calls ``log`` on each of them): a route's mean is over all its pairs, not the main process's."""
        mine = (dict(self._metric_sums), dict(self._metric_counts))
        if process_state().num_processes == 1:
            return mine
        sums: dict[str, float] = defaultdict(float)
        counts: dict[str, int] = defaultdict(int)
        for their_sums, their_counts in gather_object([mine]):
            for key, total in their_sums.items():
                sums[key] += total
                counts[key] += their_counts[key]
        return sums, counts


class StepPlanCheck(TrainerCallback):
    """Stops a run whose optimiser steps differ from the kit's plan of them (a bug, not a setting):
    what the kit reports of a run is computed from that plan."""

    def __init__(self, trainer: RoutedPairTrainer):
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        planned = StepPlan.of_arguments(args).total_steps(len(self.trainer.train_dataset))
        if state.max_steps != planned:
            raise RuntimeError(f"the Trainer runs {state.max_steps} optimiser steps where the kit's step plan has "
                               f"{planned} ({StepPlan.of_arguments(args)})")


class JsonlLogger(TrainerCallback):
    """Appends every log (with its step) to a JSON-lines file."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            row = {"step": state.global_step, "epoch": state.epoch,
                   **{k: v for k, v in logs.items() if isinstance(v, (int, float)) and math.isfinite(v)}}
            with self.path.open("a") as f:
                f.write(json.dumps(row) + "\n")
