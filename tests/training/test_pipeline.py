"""The pipeline's guards: a split that leaves one route still trains; a non-finite loss stops with the step, the rows and the weights kept; out-of-memory names the settings to lower."""
import math
import pytest
import torch

from mixdpo_kit.modeling.model import build_policy
from mixdpo_kit.training.pipeline import analyze_data, build_trainer, train


def test_tau_leaving_one_route_still_trains(small_cfg, tmp_path):
    for tau, route in ((100.0, "loss/sft"), (-100.0, "loss/preference")):
        cfg = small_cfg.override(split={"tau": tau}, train={"max_steps": 2})
        policy = build_policy(cfg.model)
        with pytest.warns(UserWarning, match="no (easy|hard) pairs"):
            prep = analyze_data(cfg, policy=policy)
        trainer, _ = build_trainer(cfg, policy, prep, tmp_path / str(tau))
        trainer.train()
        assert all(route in h for h in trainer.state.log_history if "loss" in h)


def test_nonfinite_loss_stops_with_step_rows_and_kept_weights(small_cfg, tmp_path):
    cfg = small_cfg.override(train={"max_steps": 4})
    policy = build_policy(cfg.model)
    prep = analyze_data(cfg, policy=policy)
    trainer, _ = build_trainer(cfg, policy, prep, tmp_path)
    poisoned = trainer.train_dataset.map(lambda r: {"ref_chosen_logps": math.inf if r["ref_chosen_logps"] == r[
        "ref_chosen_logps"] else math.nan})
    trainer.train_dataset = poisoned
    with pytest.raises(FloatingPointError, match=r"non-finite loss .* at step 0; source rows of the batch: \[\d"):
        trainer.train()
    kept = tmp_path / "checkpoints" / "checkpoint-nonfinite-step0"
    assert (kept / "adapter_model.safetensors").exists()


def test_out_of_memory_names_the_settings_to_lower(small_cfg, tmp_path, monkeypatch):
    from mixdpo_kit.training.trainer import RoutedPairTrainer

    def oom(self, *a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(RoutedPairTrainer, "train", oom)
    with pytest.raises(RuntimeError, match=r"per_device_train_batch_size \(now 4.*max_length \(now 64\).*lora_r"):
        train(small_cfg, tmp_path / "oom")
