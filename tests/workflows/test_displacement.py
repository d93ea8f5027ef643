"""The displacement experiment: its arms, its words, CHES quarters by hand, and a small run end to end."""
import math

import numpy as np
import pytest

from mixdpo_kit.workflows.displacement import (ARMS, DisplacementSetting, change_words, ches_line, ches_quartiles,
                                               ches_vs_ratings, displaced, displacement_variants, pair_displacement,
                                               run_displacement, run_name)


def test_arms_share_settings_and_the_near_tie_arms_take_the_all_pair_steps():
    settings = [DisplacementSetting(0.01, 1e-4), DisplacementSetting(1.0, 3e-4)]
    v = displacement_variants(settings, steps=125, track_every=5)
    assert len(v) == 8 and set(v) == {run_name(a, s) for a in ARMS for s in settings}
    near, full = v["dpo_near_ties_b0.01_lr0.0001"], v["dpo_all_b1_lr0.0003"]
    assert near["loss"] == {"objective": "hard_only_dpo", "beta": 0.01} and near["train"]["max_steps"] == 125
    assert "max_steps" not in full["train"] and full["train"]["learning_rate"] == 3e-4
    assert v["sft_near_ties_b1_lr0.0003"]["loss"]["objective"] == "hard_only_sft"
    assert all(x["eval"]["track_every"] == 5 for x in v.values())


def change(chosen, ci, rejected=0.1):
    return {"chosen": chosen, "chosen_ci": ci, "rejected": rejected, "rejected_ci": 0.0, "gap_before": 3.0,
            "gap_after": 3.0 + chosen - rejected}


def test_a_fall_is_called_only_when_its_interval_excludes_zero():
    assert displaced(change(-0.3, 0.1)) == "falls" and displaced(change(0.3, 0.1)) == "rises"
    assert displaced(change(-0.3, 0.5)) == "no clear change"
    assert displaced(change(-0.01, math.nan)) == "falls"  # one seed: the sign
    words = change_words("dpo_near_ties", change(-0.3, 0.1, rejected=-0.5), markdown=True)
    assert "**falls**" in words and "3.00 → 3.20 (widens by 0.20)" in words and "`dpo_near_ties`" in words
    assert "**" not in change_words("x", change(-0.3, 0.1))


def test_ches_quarters_by_hand():
    # Eight pairs: CHES 0..7; the chosen log-prob falls by CHES / 2 on the top half only.
    ches = np.arange(8.0)
    pairs = {"ches": ches, "delta_chosen": np.where(ches >= 4, -ches / 2, 0.1), "delta_rejected": -ches,
             "margin": np.zeros(8)}
    rows = ches_quartiles(pairs)
    assert [r["pairs"] for r in rows] == [2, 2, 2, 2]
    assert [r["CHES"] for r in rows] == [0.5, 2.5, 4.5, 6.5]
    assert [r["Δ log p(chosen)"] for r in rows] == pytest.approx([0.1, 0.1, -2.25, -3.25])
    assert [r["share displaced"] for r in rows] == [0, 0, 1, 1] and rows[0]["ρ(CHES, Δ chosen)"] < -0.8
    assert "the more its chosen response lost" in ches_line(rows)


def test_a_small_experiment_end_to_end(small_cfg, tmp_path):
    cfg = small_cfg.override(data={"max_rows": 64}, train={"max_steps": 4},
                             eval={"track_pairs": 8, "reward_prompts": 4, "max_pairs": 8})
    setting = DisplacementSetting(0.01, 1e-3)
    curves, changes = run_displacement(cfg, [setting], seeds=1, out_dir=tmp_path, track_every=2)
    assert set(curves) == {run_name(a, setting) for a in ARMS}
    assert all(c["steps"] == [0, 2, 4] for c in curves.values())  # every arm: the same number of updates
    near = pair_displacement(tmp_path / run_name("dpo_near_ties", setting) / "seed0", near_ties_only=True)
    hard = (np.asarray(ches_vs_ratings(cfg, tmp_path)["ratings"]) < 0.5).sum()
    assert len(near["ches"]) == hard > 0 and np.isfinite(near["delta_chosen"]).all()
    assert np.abs(near["delta_chosen"]).max() > 0  # the adapter moved the trained pairs
    assert (near["margin"] < 0.5).all()


def test_quick_displacement_study_writes_its_page(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    out, doc = tmp_path / "displacement", tmp_path / "displacement.md"
    res = subprocess.run([sys.executable, str(root / "scripts" / "displacement_study.py"), "--quick", "--out", str(out),
                          "--doc", str(doc)], capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    result = json.loads((out / "displacement.json").read_text())
    assert set(result["changes"]) == {run_name(a, DisplacementSetting(0.01, 1e-4)) for a in ARMS}
    text = doc.read_text()
    assert "## β = 0.01, lr = 0.0001" in text and "`dpo_near_ties`:" in text and "| Q4 (highest) |" in text
    assert "Spearman ρ" in text and any((tmp_path / "figures").glob("displacement_b0.01_lr0.0001.*"))
    assert "nan" not in text
