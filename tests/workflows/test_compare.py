"""The comparison runner and the study script (reduced: one seed, few steps)."""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from mixdpo_kit.interface.cli import main
from mixdpo_kit.workflows import compare
from mixdpo_kit.workflows.variants import variants_for

ROOT = Path(__file__).resolve().parents[2]


def test_interval_hand_values():
    mean, half = compare.interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and half == pytest.approx(4.303 * 1.0 / math.sqrt(3))
    assert math.isnan(compare.interval([1.0])[1])


def test_objectives_command_lists_the_registry(capsys):
    assert main(["objectives"]) == 0
    out = capsys.readouterr().out
    for name in ("mixdpo", "filtered_dpo", "beta_dpo", "amapo", "madpo", "gdpo", "da_dpo", "confpo"):
        assert f"\n{name} " in "\n" + out
    assert main(["compare", "--config", "x.yaml", "--objectives", "nope", "--out", "y"]) == 2


def test_quick_study_writes_table_and_verdicts_and_resumes(tmp_path, monkeypatch):
    out, doc = tmp_path / "study", tmp_path / "results.md"
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "builtin_study.py"), "--quick", "--out", str(out),
                          "--doc", str(doc)], capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert [r["variant"] for r in results["table"]] == ["mixdpo", "dpo", "filtered_dpo"]
    for run in results["runs"]:
        assert 0 <= run["true_reward"] <= 1 and 0 <= run["win_rate_vs_sft"] <= 1
    text = doc.read_text()
    assert "| mixdpo |" in text and "mixdpo − dpo" in text and "scripts/builtin_study.py" in text
    assert "Where the learning rate goes" in text and "of the learning-rate mass" in text
    assert "held-out log-probs" in text and any((tmp_path / "figures").glob("displacement.*"))
    assert "`dpo`:" in text and "`mixdpo`:" in text  # the displacement verdict per tracked variant
    assert (out / "compare.html").exists()
    # Resumable: a second comparison over the same folder trains nothing.
    import mixdpo_kit.workflows.runs

    def no_training(*a, **kw):
        raise AssertionError("a finished run was retrained")

    monkeypatch.setattr(mixdpo_kit.workflows.runs, "run", no_training)
    sys.path.insert(0, str(ROOT / "scripts"))
    import builtin_study

    cfg = builtin_study.study_config().override(train={"max_steps": 20})
    rows = compare.run_comparison(cfg, variants_for(["mixdpo", "dpo", "filtered_dpo"]), 1, out)
    assert [r["variant"] for r in rows] == ["mixdpo", "dpo", "filtered_dpo"]


def test_runs_with_the_same_reference_share_its_evaluation(small_cfg, monkeypatch):
    from mixdpo_kit.modeling.model import build_policy
    from mixdpo_kit.workflows.runs import evaluate_policy

    policy = build_policy(small_cfg.model)
    reference, entered = policy.reference, []
    monkeypatch.setattr(policy, "reference", lambda: entered.append(1) or reference())
    memo = {}
    first = evaluate_policy(small_cfg, policy, memo)
    assert len(entered) == 2  # held-out log-probs and greedy generations
    # Loss and training settings do not change the reference: nothing is recomputed.
    second = evaluate_policy(small_cfg.override(loss={"objective": "dpo", "beta": 0.5}), policy, memo)
    assert len(entered) == 2
    assert second["true_reward"]["before"] == first["true_reward"]["before"]
    assert second["preference"]["logps_chosen_before"] == first["preference"]["logps_chosen_before"]
    # Different evaluation settings do.
    evaluate_policy(small_cfg.override(eval={"max_new_tokens": 4}), policy, memo)
    assert len(entered) == 4
    evaluate_policy(small_cfg, policy)  # without a memo, every call computes its own
    assert len(entered) == 6


def test_compare_judges_runs_on_other_data_against_the_sft_model(small_cfg, chat_pairs, tmp_path):
    """Not the built-in task, so no true reward: the table shows each objective's win rate vs the
    SFT model's answers under a local reward model, with an interval; the SFT answers are made once."""
    import json

    from mixdpo_kit.modeling.tiny import build_tiny_reward_model

    data = tmp_path / "pairs.jsonl"
    chat_pairs.to_json(str(data))
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"please sort {a} {b}"}) + "\n" for a, b in ["12", "34", "56", "78"]))
    cfg = small_cfg.override(data={"source": str(data), "max_rows": None}, eval={"reward_prompts": 0},
                             train={"max_steps": 2},
                             judge={"reward_model": str(build_tiny_reward_model(tmp_path / "rm")),
                                    "prompts": str(prompts), "max_new_tokens": 4, "bootstrap": 100})
    rows = compare.run_comparison(cfg, variants_for(["mixdpo", "dpo"]), 1, tmp_path / "cmp")
    table = (tmp_path / "cmp" / "results.md").read_text()
    assert "judged win rate vs SFT" in table and "ground-truth reward" not in table
    assert "half the 95 % bootstrap interval" in table
    assert all(0 <= r["judge_win_rate"] <= 1 and r["judge_win_rate_ci"] >= 0 for r in rows)
    assert any(r["judge_win_rate_ci"] > 0 for r in rows)  # an interval, not a bare number
    assert len(list((tmp_path / "cmp" / "cache" / "sft_answers").iterdir())) == 1
    summary = json.loads((tmp_path / "cmp" / "mixdpo" / "seed0" / "summary.json").read_text())
    assert summary["evaluation"]["judge"]["b"]["generator"] == "sft" and "builtin" not in summary["evaluation"]["judge"]
    assert "Judged against the SFT model" in (tmp_path / "cmp" / "mixdpo" / "seed0" / "report.html").read_text()
