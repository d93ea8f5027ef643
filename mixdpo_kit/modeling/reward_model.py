"""Train a pairwise (Bradley–Terry) reward model: the built-in task's local judge.

On real data the judge is a published reward model. On the built-in task the kit trains one the
same way those are trained: a sequence-classification model learns ``P(chosen ≻ rejected) =
σ(r(chosen) − r(rejected))`` from preference pairs. Trained on the built-in task's pairs, whose
labels come from the task's *noisy* judge, it is an imperfect judge of the kind a real evaluation
uses — and because the built-in task's true reward is known, how often it is right can be
measured (``mixdpo_kit.evaluation.judge`` reports that agreement).

``tiny-reward-builtin`` (as a reward-model name anywhere in the kit) trains it once on the
built-in ``train_prefs`` pairs and keeps it in the cache's ``models`` folder.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoModelForSequenceClassification, Trainer, TrainingArguments

from mixdpo_kit.core import progress
from mixdpo_kit.data.chat import conversation_text
from mixdpo_kit.data.loading import load_preferences


class PairwiseRewardTrainer(Trainer):
    """``-log σ(r(chosen) − r(rejected))`` on batches of ``chosen_*`` and ``rejected_*`` tensors."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        chosen = model(input_ids=inputs["chosen_input_ids"], attention_mask=inputs["chosen_attention_mask"]).logits[:, 0]
        rejected = model(input_ids=inputs["rejected_input_ids"],
                         attention_mask=inputs["rejected_attention_mask"]).logits[:, 0]
        loss = -F.logsigmoid(chosen - rejected).mean()
        return (loss, {"margin": chosen - rejected}) if return_outputs else loss


class PairTextCollator:
    """Pads the rendered chosen and rejected texts of a batch of pairs."""

    def __init__(self, tokenizer, max_length: int):
        self.tokenizer, self.max_length = tokenizer, max_length

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        batch = {}
        for side in ("chosen", "rejected"):
            # Rendered chat templates carry their own special tokens.
            enc = self.tokenizer([r[side] for r in rows], padding=True, truncation=True, max_length=self.max_length,
                                 add_special_tokens=False, return_tensors="pt")
            batch[f"{side}_input_ids"], batch[f"{side}_attention_mask"] = enc["input_ids"], enc["attention_mask"]
        return batch


def train_reward_model(base: str | Path, pairs, out_dir: str | Path, epochs: int = 6, learning_rate: float = 1e-3,
                       batch_size: int = 32, max_length: int = 256, seed: int = 0) -> Path:
    """Fine-tune the sequence-classification model at ``base`` on canonical preference ``pairs``
    (see :func:`mixdpo_kit.data.loading.load_preferences`) and save it, with its tokenizer, to ``out_dir``."""
    from mixdpo_kit.modeling.tokenizer import auto_tokenizer

    tokenizer = auto_tokenizer(str(base))
    model = AutoModelForSequenceClassification.from_pretrained(str(base))
    model.config.pad_token_id = tokenizer.pad_token_id
    texts = pairs.map(lambda r: {side: conversation_text(tokenizer, r["prompt"], r[side], templated=True)
                                 for side in ("chosen", "rejected")}, remove_columns=pairs.column_names)
    args = TrainingArguments(output_dir=str(Path(out_dir) / "trainer"), num_train_epochs=epochs,
                             per_device_train_batch_size=batch_size, learning_rate=learning_rate,
                             lr_scheduler_type="cosine", warmup_steps=0.05, seed=seed, report_to="none",
                             save_strategy="no", logging_steps=20, remove_unused_columns=False,
                             use_cpu=not torch.cuda.is_available(), disable_tqdm=True)
    trainer = PairwiseRewardTrainer(model=model, args=args, train_dataset=texts,
                                    data_collator=PairTextCollator(tokenizer, max_length))
    progress.configure(trainer, show_bar=False)  # in a notebook: no logged dicts
    trainer.train()
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return Path(out_dir)


def build_builtin_reward_model(directory: str | Path, seed: int = 0) -> Path:
    """A tiny reward model trained on the built-in task's ``train_prefs`` pairs (noisy-judge labels)."""
    from mixdpo_kit.modeling.tiny import build_tiny_reward_model

    directory = Path(directory)
    base = build_tiny_reward_model(directory / "init", seed=seed)
    pairs, _ = load_preferences("builtin", "train_prefs")
    return train_reward_model(base, pairs, directory, seed=seed)
