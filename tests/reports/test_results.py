"""Typed run results: summary.json round-trips through RunSummary unchanged, a run folder written by
the released layout (no processes, steps_trained or pairs_trained in lr_mass) loads, and the
summary still reads like the JSON."""
import json

import pytest

from mixdpo_kit.reports.explain import difference_line, lr_mass_line, result_lines
from mixdpo_kit.reports.results import LearningRateMass, RunSummary, read_summary, write_summary
from mixdpo_kit.workflows.compare import run_metrics

# A summary.json as the released layout wrote it (trimmed: config and data are passed through as given).
RELEASED = {
    "config": {"loss": {"objective": "mixdpo"}}, "data": {"rows_read": 2000}, "split": {"n_hard": 120},
    "final_train_metrics": {"loss": 0.5, "step": 125},
    "evaluation": {
        "preference": {"pairs": 200, "reward_accuracy": 0.62, "logratio_margin": 0.3, "logps_chosen_before": -10.0,
                       "logps_rejected_before": -12.0, "logps_chosen_after": -9.5, "logps_rejected_after": -13.0,
                       "logps_gap_before": 2.0, "logps_gap_after": 3.5},
        "true_reward": {"before": {"mean_reward": 0.70, "exact_match": 0.4, "n": 4, "rewards": [1, 0, 1, 0.8]},
                        "after": {"mean_reward": 0.75, "exact_match": 0.5, "n": 4, "rewards": [1, 1, 1, 0]}},
        "generations": [{"prompt": "sort: 3 1", "before": "1 3", "after": "1 3"}]},
    "lr_mass": {"sft": 0.0048, "preference": 0.9952, "sft_share_of_pairs": 0.12, "steps": 125,
                "schedule": "cosine", "warmup_ratio": 0.1},
    "worked_pairs": [{"margin m": 0.5}], "wall_seconds": 300.0, "sft_warmup_seconds": 40.0,
}


def test_a_released_summary_loads_typed_and_writes_back_the_same_json(tmp_path):
    (tmp_path / "summary.json").write_text(json.dumps(RELEASED))
    summary = read_summary(tmp_path)
    assert summary.evaluation.preference.delta_chosen == pytest.approx(0.5)
    assert summary.evaluation.true_reward_after.mean_reward == 0.75 and summary.evaluation.judge is None
    assert summary.lr_mass == LearningRateMass(0.0048, 0.9952, 0.12, 125, "cosine", 0.1)
    assert not summary.lr_mass.stopped_early and summary.wall_seconds == 300.0
    write_summary(tmp_path, summary)
    assert json.loads((tmp_path / "summary.json").read_text()) == RELEASED
    # It still reads like the JSON document a notebook indexes.
    assert summary["evaluation"]["preference"]["pairs"] == 200 and "lr_mass" in summary and "judge" not in summary


def test_every_consumer_reads_the_typed_summary_and_the_plain_dict_alike():
    typed = RunSummary.from_dict(RELEASED)
    assert result_lines(typed) == result_lines(RELEASED)
    assert result_lines(typed)[0].startswith("ground-truth reward on 4 held-out prompts: 0.700 before")
    assert run_metrics(typed) == run_metrics(RELEASED)
    assert run_metrics(typed)["win_rate_vs_sft"] == pytest.approx(0.5) and run_metrics(typed)["lr_mass_sft"] == 0.0048
    assert difference_line(typed, RELEASED, "a", "b", 0.004, "a study").startswith("a − b = +0.000")
    assert lr_mass_line(typed.lr_mass) == lr_mass_line(RELEASED["lr_mass"]) == \
        "hard pairs (SFT route): 12.0 % of the pairs, 0.48 % of the learning-rate mass"


def test_a_newer_field_survives_and_an_unknown_key_is_kept():
    data = {**RELEASED, "lr_mass": {**RELEASED["lr_mass"], "steps_trained": 60, "pairs_trained": 960, "processes": 2},
            "something_new": {"x": 1}}
    typed = RunSummary.from_dict(data)
    assert typed.lr_mass.stopped_early and typed.lr_mass.processes == 2 and typed.extra == {"something_new": {"x": 1}}
    assert typed.to_dict() == data
    assert lr_mass_line(typed.lr_mass).startswith("stopped at step 60 of 125")
