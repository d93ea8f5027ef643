"""The pairwise reward model the built-in task's judge is trained as."""
import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoModelForSequenceClassification, AutoTokenizer, TrainingArguments

from mixdpo_kit.data.loading import load_preferences
from mixdpo_kit.margins.scoring import RewardModelScorer, reward_texts
from mixdpo_kit.modeling.reward_model import PairTextCollator, PairwiseRewardTrainer, train_reward_model
from mixdpo_kit.modeling.tiny import build_tiny_reward_model


def test_pairwise_loss_by_hand(tmp_path):
    path = build_tiny_reward_model(tmp_path / "rm")
    tok, model = AutoTokenizer.from_pretrained(str(path)), AutoModelForSequenceClassification.from_pretrained(str(path))
    rows = [{"chosen": "<|user|> sort 2 1 <|end|> <|assistant|> 1 2 <|end|>",
             "rejected": "<|user|> sort 2 1 <|end|> <|assistant|> 2 <|end|>"},
            {"chosen": "<|user|> reverse 3 4 <|end|> <|assistant|> 4 3 <|end|>",
             "rejected": "<|user|> reverse 3 4 <|end|> <|assistant|> 3 4 so ok <|end|>"}]
    batch = PairTextCollator(tok, 64)(rows)
    trainer = PairwiseRewardTrainer(model=model, args=TrainingArguments(str(tmp_path / "t"), report_to="none",
                                                                        use_cpu=True))
    loss = trainer.compute_loss(model, batch)
    with torch.no_grad():
        scores = {side: torch.stack([model(**tok(r[side], add_special_tokens=False, return_tensors="pt")).logits[0, 0]
                                     for r in rows]) for side in ("chosen", "rejected")}
    assert torch.allclose(loss, -F.logsigmoid(scores["chosen"] - scores["rejected"]).mean(), atol=1e-5)


def test_training_ranks_the_training_pairs_better(tmp_path):
    pairs, _ = load_preferences("builtin", "train_prefs", max_rows=400)
    base = build_tiny_reward_model(tmp_path / "init")
    trained = train_reward_model(base, pairs, tmp_path / "rm", epochs=3)

    def accuracy(path):
        scorer = RewardModelScorer(str(path), tmp_path / "cache", batch_size=16, max_length=256)
        chosen, rejected, templated = reward_texts(pairs, scorer.tokenizer)
        return float(np.mean(scorer.scores(chosen, templated) > scorer.scores(rejected, templated)))

    assert accuracy(trained) > max(0.6, accuracy(base) + 0.1)  # measured: 0.69 vs 0.475
