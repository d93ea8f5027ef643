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
from mixdpo_kit.logprobs import pad_sequences, sequence_logps
from mixdpo_kit.losses import PREFERENCE_LOSSES, PairLogps, routed_loss

TRAIN_COLUMNS = ("prompt_ids", "chosen_ids", "rejected_ids", "hard", "ref_chosen_logps", "ref_rejected_logps")


class PairCollator:
    """Pads a batch of tokenised pairs into one policy batch: chosen of every pair, then rejected
    of the preference-routed ones."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        hard = torch.tensor([bool(f["hard"]) for f in features])
        prompts = [f["prompt_ids"] for f in features]
        responses = [f["chosen_ids"] for f in features]
        for f in features:
            if not f["hard"]:
                prompts.append(f["prompt_ids"])
                responses.append(f["rejected_ids"])
        input_ids, attention_mask, response_mask = pad_sequences(prompts, responses, self.pad_id)
        nan = float("nan")
        return {
            "input_ids": input_ids, "attention_mask": attention_mask, "response_mask": response_mask,
            "hard": hard,
            "row_index": torch.tensor([int(f.get("row_index", -1)) for f in features]),
            "ref_chosen_logps": torch.tensor([nan if f.get("ref_chosen_logps") is None else f["ref_chosen_logps"]
                                              for f in features], dtype=torch.float32),
            "ref_rejected_logps": torch.tensor([nan if f.get("ref_rejected_logps") is None else f["ref_rejected_logps"]
                                                for f in features], dtype=torch.float32),
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
        self.reference = reference
        self.model_accepts_loss_kwargs = False
        self._metric_sums: dict[str, float] = defaultdict(float)
        self._metric_counts: dict[str, int] = defaultdict(int)

    def _get_train_sampler(self, train_dataset=None):
        return CurriculumSampler(self.plan)

    def _reference_logps(self, inputs, hard: torch.Tensor):
        ref_c, ref_r = inputs["ref_chosen_logps"].clone(), inputs["ref_rejected_logps"].clone()
        easy = ~hard
        missing = easy & (ref_c.isnan() | ref_r.isnan())
        if missing.any():
            if self.reference is None:
                raise RuntimeError("reference log-probs are missing and the trainer has no reference model")
            n = len(hard)
            easy_pos = easy.nonzero().squeeze(-1)
            # Rows of the policy batch: chosen of pair i is row i, rejected of the k-th easy pair is row n+k.
            rows = torch.cat([easy_pos, n + torch.arange(len(easy_pos), device=easy_pos.device)])
            with self.reference() as ref, torch.no_grad():
                logps, _ = sequence_logps(ref, inputs["input_ids"][rows], inputs["attention_mask"][rows],
                                          inputs["response_mask"][rows])
            ref_c[easy_pos] = logps[: len(easy_pos)].to(ref_c.dtype)
            ref_r[easy_pos] = logps[len(easy_pos):].to(ref_r.dtype)
        return ref_c, ref_r

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        hard = inputs["hard"].bool()
        n = len(hard)
        logps, ntok = sequence_logps(model, inputs["input_ids"], inputs["attention_mask"], inputs["response_mask"])
        chosen, chosen_tokens = logps[:n], ntok[:n]
        rejected = torch.full_like(chosen, float("nan")).masked_scatter(~hard, logps[n:])
        rejected_tokens = torch.zeros_like(chosen_tokens).masked_scatter(~hard, ntok[n:])
        needs_ref = PREFERENCE_LOSSES[self.loss_params.get("preference", "dpo")].needs_reference
        ref_c, ref_r = self._reference_logps(inputs, hard) if needs_ref and (~hard).any() else (None, None)
        lp = PairLogps(chosen, rejected, chosen_tokens, rejected_tokens, ref_c, ref_r)
        out = routed_loss(lp, hard, **self.loss_params)
        loss = out.loss
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"non-finite loss {loss.item()} at step {self.state.global_step}; rows of the batch: "
                f"{inputs['row_index'].tolist()}")
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
