"""The per-pair export leaves the kit whole: one row per kept pair in TRL's preference format with
its source row, margin, hard flag, route and curriculum position; ``datasets.load_dataset`` reads
it back and TRL's DPOTrainer prepares and trains on it unchanged."""
import json

import datasets
import numpy as np
import pytest

from mixdpo_kit.core.config import preset
from mixdpo_kit.interface.cli import main
from mixdpo_kit.objectives.routing import resolve
from mixdpo_kit.training.pipeline import analyze_data
from mixdpo_kit.workflows.analysis import pair_table


@pytest.mark.parametrize("suffix", ["parquet", "jsonl"])
def test_analyze_exports_one_row_per_kept_pair_that_datasets_reads_back(tmp_path, suffix):
    path = tmp_path / f"pairs.{suffix}"
    assert main(["analyze", "--data", "ultrafeedback-sample", "--out", str(tmp_path / "a"), "--export", str(path)]) == 0
    report = json.loads((tmp_path / "a" / "data_report.json").read_text())
    table = datasets.load_dataset("parquet" if suffix == "parquet" else "json", data_files=str(path), split="train")
    assert len(table) == report["rows_kept"] == 994
    assert table.column_names[:3] == ["prompt", "chosen", "rejected"]
    first = table[0]
    assert first["prompt"][0]["role"] == "user" and first["chosen"] == [{"role": "assistant", "content": first["chosen"][0]["content"]}]
    hard = np.asarray(table["hard"])
    assert hard.sum() == report["split"]["n_hard"] == 110
    assert set(np.asarray(table["route"])[hard]) == {"sft"} and set(np.asarray(table["route"])[~hard]) == {"preference"}
    positions = np.asarray(table["curriculum_position"])
    assert sorted(positions) == list(range(len(table)))  # every pair trained once, in the plan's order
    by_position = np.asarray(table["margin"])[np.argsort(positions)]
    assert (np.diff(by_position) <= 0).all()  # easy (large margin) first
    np.testing.assert_allclose(table["margin"], np.asarray(table["score_chosen"]) - np.asarray(table["score_rejected"]))
    assert len(set(table["row_id"])) == len(table) and max(table["row_id"]) < report["rows_read"]


def test_a_filtering_objective_exports_its_dropped_pairs_without_a_position():
    cfg = resolve(preset("mixdpo_paper").override(data={"source": "ultrafeedback-sample", "max_rows": 200},
                                                  loss={"objective": "filtered_dpo"}))
    prep = analyze_data(cfg)
    rows = pair_table(cfg, prep)
    filtered = [r for r in rows if r["route"] == "filtered out"]
    assert filtered and all(r["hard"] and r["curriculum_position"] is None for r in filtered)
    kept = [r["curriculum_position"] for r in rows if r["route"] != "filtered out"]
    assert sorted(kept) == list(range(len(rows) - len(filtered)))


def test_trl_prepares_and_trains_on_the_export_unchanged(tmp_path, tiny_llama):
    import trl
    from transformers import AutoModelForCausalLM

    from mixdpo_kit.core.config import ModelConfig
    from mixdpo_kit.modeling.model import load_tokenizer

    path = tmp_path / "pairs.parquet"
    assert main(["analyze", "--data", "ultrafeedback-sample", "--max-rows", "12", "--out", str(tmp_path / "a"),
                 "--export", str(path)]) == 0
    exported = datasets.load_dataset("parquet", data_files=str(path), split="train")
    args = trl.DPOConfig(output_dir=str(tmp_path / "trl"), per_device_train_batch_size=2, max_steps=2, report_to="none",
                         use_cpu=True, bf16=False, max_length=None, logging_steps=1, save_strategy="no")
    trainer = trl.DPOTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_llama), args=args, train_dataset=exported,
                             processing_class=load_tokenizer(ModelConfig(name_or_path=tiny_llama)))
    assert len(trainer.train_dataset) == len(exported) == 12
    assert {"prompt_ids", "chosen_ids", "rejected_ids"} <= set(trainer.train_dataset.column_names)
    trainer.train()
    assert all(np.isfinite(h["loss"]) for h in trainer.state.log_history if "loss" in h)
