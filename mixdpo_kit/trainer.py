"""``MixDPOTrainer``: a transformers.Trainer that trains routed preference pairs in curriculum order.

What it changes in Trainer, and why:
- the train sampler yields the curriculum plan's order (Trainer would shuffle);
- ``compute_loss`` runs one policy forward over the chosen responses of all pairs plus the
  rejected responses of preference-routed pairs only: an SFT-routed pair costs one sequence,
  no rejected pass and no reference pass;
- reference log-probs come precomputed from the dataset (see :mod:`mixdpo_kit.refcache`) or,
  when missing, from the policy with its adapter off, for preference-routed pairs only;
- the loss is a per-batch mean computed here, so ``model_accepts_loss_kwargs = False`` keeps
  Trainer from rescaling it by token counts under gradient accumulation;
- per-route metrics are averaged over the pairs of that route since the last log.
"""
from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback

from mixdpo_kit.curriculum import CurriculumPlan, CurriculumSampler
from mixdpo_kit.logprobs import low_confidence_stats, pad_sequences, sequence_logps, token_logps
from mixdpo_kit.losses import PREFERENCE_LOSSES, PairLogps, routed_loss

TRAIN_COLUMNS = ("prompt_ids", "chosen_ids", "rejected_ids", "sft_weight", "preference_weight", "margin",
                 "row_index", "ref_chosen_logps", "ref_rejected_logps")


def _float_or_nan(value) -> float:
    return float("nan") if value is None else float(value)


class PairCollator:
    """Pads a batch of tokenised pairs into one policy batch: the chosen response of every pair,
    then the rejected response of the pairs with a preference weight (SFT-only pairs send none)."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        prompts = [f["prompt_ids"] for f in features]
        responses = [f["chosen_ids"] for f in features]
        for f in features:
            if f["preference_weight"] > 0:
                prompts.append(f["prompt_ids"])
                responses.append(f["rejected_ids"])
        input_ids, attention_mask, response_mask = pad_sequences(prompts, responses, self.pad_id)
        column = lambda key, dtype=torch.float32: torch.tensor(  # noqa: E731
            [_float_or_nan(f.get(key)) for f in features], dtype=dtype)
        return {
            "input_ids": input_ids, "attention_mask": attention_mask, "response_mask": response_mask,
            "sft_weight": column("sft_weight"), "preference_weight": column("preference_weight"),
            "margin": column("margin"), "row_index": column("row_index", torch.long),
            "ref_chosen_logps": column("ref_chosen_logps"), "ref_rejected_logps": column("ref_rejected_logps"),
        }


class MixDPOTrainer(Trainer):
    """Trainer for routed preference optimisation; see the module docstring."""

    def __init__(self, *args, plan: CurriculumPlan, loss_params: dict, reference=None, **kwargs):
        """``plan``: the curriculum; ``loss_params``: ``routed_loss`` keyword arguments
        (preference, beta, ...); ``reference``: a context manager factory yielding the reference
        module, used only when a reference log-prob is missing from the batch."""
        super().__init__(*args, **kwargs)
        self.plan = plan
        self.loss_params = dict(loss_params)
        self.pref_spec = PREFERENCE_LOSSES[self.loss_params.get("preference", "dpo")]
        if self.pref_spec.stateful:
            self.loss_params["state"] = {}  # e.g. beta-DPO's running statistics, kept across steps
        self.reference = reference
        self.model_accepts_loss_kwargs = False
        self._metric_sums: dict[str, float] = defaultdict(float)
        self._metric_counts: dict[str, int] = defaultdict(int)

    def _get_train_sampler(self, train_dataset=None):
        return CurriculumSampler(self.plan)

    def _reference_logps(self, inputs, with_pref: torch.Tensor):
        ref_c, ref_r = inputs["ref_chosen_logps"].clone(), inputs["ref_rejected_logps"].clone()
        missing = with_pref & (ref_c.isnan() | ref_r.isnan())
        if missing.any():
            if self.reference is None:
                raise RuntimeError("reference log-probs are missing and the trainer has no reference model")
            n = len(with_pref)
            pref_pos = with_pref.nonzero().squeeze(-1)
            # Rows of the policy batch: chosen of pair i is row i, rejected of the k-th preference pair is row n+k.
            rows = torch.cat([pref_pos, n + torch.arange(len(pref_pos), device=pref_pos.device)])
            with self.reference() as ref, torch.no_grad():
                logps, _ = sequence_logps(ref, inputs["input_ids"][rows], inputs["attention_mask"][rows],
                                          inputs["response_mask"][rows])
            ref_c[pref_pos] = logps[: len(pref_pos)].to(ref_c.dtype)
            ref_r[pref_pos] = logps[len(pref_pos):].to(ref_r.dtype)
        return ref_c, ref_r

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        sft_w, pref_w = inputs["sft_weight"], inputs["preference_weight"]
        with_pref = pref_w > 0
        n = len(sft_w)
        token_lp, mask = token_logps(model, inputs["input_ids"], inputs["attention_mask"], inputs["response_mask"])
        logps, ntok = token_lp.sum(-1), mask.sum(-1)

        def per_pair(values, fill):  # chosen rows are 0..n-1; rejected rows follow, for preference pairs only
            return values[:n], torch.full_like(values[:n], fill).masked_scatter(with_pref, values[n:])

        chosen, rejected = per_pair(logps, float("nan"))
        chosen_tokens, rejected_tokens = per_pair(ntok, 0.0)
        lp = PairLogps(chosen, rejected, chosen_tokens, rejected_tokens, margin=inputs["margin"].to(chosen.dtype))
        if self.pref_spec.needs_reference and with_pref.any():
            lp.ref_chosen, lp.ref_rejected = self._reference_logps(inputs, with_pref)
        if self.pref_spec.needs_token_confidence:
            crit, crit_n = low_confidence_stats(token_lp, mask)
            lp.chosen_critical, lp.rejected_critical = per_pair(crit, 0.0)
            lp.chosen_critical_tokens, lp.rejected_critical_tokens = per_pair(crit_n, 0.0)
        out = routed_loss(lp, sft_weights=sft_w, preference_weights=pref_w, **self.loss_params)
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

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:  # a training log: attach the route metrics gathered since the last one
            for key, total in self._metric_sums.items():
                if self._metric_counts[key]:
                    logs[key] = total / self._metric_counts[key]
            self._metric_sums.clear()
            self._metric_counts.clear()
        super().log(logs, start_time)


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
