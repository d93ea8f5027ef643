"""Run cost before a run: the estimate's arithmetic, and the refusal of uncapped real-data runs."""
import json

import pytest

from mixdpo_kit.core.config import preset
from mixdpo_kit.interface.training_launcher import TrainingLauncher
from mixdpo_kit.modeling.cost import RunTooLarge, check_run_size, count_pairs, estimate_run, model_parameters


def test_estimate_counts_pairs_steps_and_flops_by_hand():
    cfg = preset("demo").override(data={"max_length": 100, "max_rows": None},
                                  train={"per_device_train_batch_size": 4, "gradient_accumulation_steps": 2,
                                         "num_train_epochs": 1, "max_steps": -1})
    est = estimate_run(cfg, n_pairs=20, n_params=1000, flops_per_second=1e6)
    # 20 pairs / 8 per step -> 3 steps; T = 200 tokens; 8*N*T*20 + 2*N*T*20 FLOPs at 1 MFLOP/s.
    assert (est["pairs"], est["optimizer_steps"], est["pairs_trained"]) == (20, 3, 20)
    assert est["hours"] == pytest.approx((8 + 2) * 1000 * 200 * 20 / 1e6 / 3600)
    capped = estimate_run(cfg.override(train={"max_steps": 2}), n_pairs=20, n_params=1000, flops_per_second=1e6)
    assert (capped["optimizer_steps"], capped["pairs_trained"]) == (2, 16)
    rows = estimate_run(cfg.override(data={"max_rows": 8}), n_pairs=20, n_params=1000)
    assert (rows["pairs"], rows["optimizer_steps"]) == (8, 1)


def test_model_parameters_from_config_only(tiny_llama):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    matrices = sum(p.numel() for p in model.parameters() if p.dim() == 2)  # norms are not counted
    assert model_parameters(tiny_llama) == matrices


def test_uncapped_real_data_run_is_refused_with_its_cost(tmp_path, tiny_llama):
    path = tmp_path / "pairs.jsonl"
    rows = [{"prompt": f"q{i}", "chosen": "a", "rejected": "b", "score_chosen": 5, "score_rejected": 1}
            for i in range(30)]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    assert count_pairs(str(path)) == 30
    cfg = preset("demo").override(data={"source": str(path), "max_rows": None}, model={"name_or_path": tiny_llama},
                                  train={"max_steps": -1})
    with pytest.raises(RunTooLarge, match=r"30 pairs in 2 optimiser steps, about .* h on a T4"):
        check_run_size(cfg)
    check_run_size(cfg.override(data={"max_rows": 10}))
    check_run_size(cfg.override(train={"max_steps": 5}))
    check_run_size(preset("demo").override(data={"max_rows": None}, train={"max_steps": -1}))  # built-in task

    launcher = TrainingLauncher(cfg, out_dir=str(tmp_path / "run"))
    launcher.run()
    assert "not started" in launcher.status.value and "30 pairs" in launcher.status.value
    assert launcher.thread is None and not launcher.run_button.disabled
    launcher.max_rows.value = 10
    assert launcher.config().data.max_rows == 10


def test_stage_hours_by_hand_and_the_scale_tables_in_the_distributed_doc():
    from pathlib import Path

    from mixdpo_kit.modeling.cost import RunScale, scale_table, stage_hours

    s = RunScale(pairs=10, preference_pairs=6, params=1.0, max_length=1, reward_params=3.0, eval_pairs=5)
    # (2 fwd + 4 bwd + 2 recompute) × (2 responses × 6 preference pairs + 1 × 4 SFT pairs)
    assert s.training_flops() == 8 * 16
    assert RunScale(pairs=10, preference_pairs=6, params=1.0, max_length=1, full_finetune=False,
                    gradient_checkpointing=False).training_flops() == 4 * 16
    assert s.stage_flops() == {"reference log-probs": 2 * 2 * 6, "reward-model margins": 2 * 3 * 2 * 10,
                               "held-out evaluation": 2 * 2 * 2 * 5}
    before, after = stage_hours(s, 2, False, 1.0), stage_hours(s, 2, True, 1.0)
    assert before["training (one epoch)"] == after["training (one epoch)"] == 128 / 2 / 3600
    assert before["reference log-probs"] == 24 / 3600 and after["reference log-probs"] == 24 / 2 / 3600
    # The paper-scale tables in docs/distributed.md are this model's output.
    doc = (Path(__file__).parents[2] / "docs" / "distributed.md").read_text()
    assert scale_table() in doc and scale_table(RunScale(gradient_checkpointing=False)) in doc
