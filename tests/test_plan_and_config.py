"""Split, curriculum orders, config YAML round-trip and presets, the built-in data."""
import json

import numpy as np
import pytest

from mixdpo_kit.core.config import RunConfig, preset
from mixdpo_kit.data import synthetic
from mixdpo_kit.margins.curriculum import CurriculumPlan
from mixdpo_kit.margins.split import split_by_margin

MARGINS = np.array([0.0, 3.0, 0.5, 9.0, 0.0, 1.5, 3.0, 6.0])


def test_split_tau_is_strict_and_quantile_works():
    s = split_by_margin(MARGINS, tau=0.5)
    assert s.hard.tolist() == [True, False, False, False, True, False, False, False] and s.n_hard == 2
    q = split_by_margin(MARGINS, quantile=0.5)
    assert q.tau == pytest.approx(2.25) and q.n_hard == 4
    with pytest.warns(UserWarning, match="no hard pairs"):
        split_by_margin(MARGINS, tau=-1)
    with pytest.warns(UserWarning, match="no easy pairs"):
        split_by_margin(MARGINS, tau=100)


def test_curriculum_orders():
    e2h = CurriculumPlan(MARGINS, "easy_to_hard").indices()
    assert e2h.tolist() == [3, 7, 1, 6, 5, 2, 0, 4]  # largest margin first, ties in data order
    assert CurriculumPlan(MARGINS, "hard_to_easy").indices().tolist() == [0, 4, 2, 5, 1, 6, 7, 3]
    staged = CurriculumPlan(MARGINS, "staged", n_stages=2, seed=1)
    a, b = staged.indices(0), staged.indices(1)
    assert set(a[:4]) == set(e2h[:4]) and set(a[4:]) == set(e2h[4:])  # easy bucket first
    assert np.array_equal(a, CurriculumPlan(MARGINS, "staged", n_stages=2, seed=1).indices(0))  # deterministic
    rnd = CurriculumPlan(MARGINS, "random", seed=3)
    assert sorted(rnd.indices(0)) == list(range(8)) and not np.array_equal(rnd.indices(0), rnd.indices(1))
    assert not np.array_equal(a, b) or not np.array_equal(rnd.indices(0), rnd.indices(2))
    with pytest.raises(ValueError, match="curriculum order"):
        CurriculumPlan(MARGINS, "sideways")


def test_config_yaml_round_trip_and_unknown_keys(tmp_path):
    cfg = preset("demo").override(loss={"beta": 0.3}, curriculum={"order": "staged"})
    path = tmp_path / "c.yaml"
    cfg.to_yaml(path)
    assert RunConfig.from_yaml(path) == cfg
    path.write_text("preset: mixdpo_paper\nloss:\n  beta: 0.05\n")
    loaded = RunConfig.from_yaml(path)
    assert loaded.loss.params == {"beta": 0.05, "label_smoothing": 0.1} and loaded.split.tau == 0.5
    path.write_text("loss:\n  betta: 0.05\n")
    with pytest.raises(ValueError, match="betta"):
        RunConfig.from_yaml(path)


def test_mixdpo_paper_preset_matches_the_paper():
    p = preset("mixdpo_paper")
    assert (p.split.tau, p.loss.params["beta"], p.loss.params["label_smoothing"], p.curriculum.order, p.margins.source,
            p.loss.objective, p.train.learning_rate) == (0.5, 0.01, 0.1, "easy_to_hard", "ratings", "mixdpo", 1e-6)


def test_configs_folder_loads():
    from pathlib import Path

    for path in sorted(Path(__file__).parent.parent.joinpath("configs").glob("*.yaml")):
        RunConfig.from_yaml(path)


def test_builtin_data_is_committed_and_deterministic(tmp_path):
    paths = synthetic.write(tmp_path)
    for split, path in paths.items():
        assert path.read_text() == synthetic.builtin_path(split).read_text(), split
    prompts = {split: {json.loads(line)["prompt"] for line in path.read_text().splitlines()}
               for split, path in paths.items()}
    assert not prompts["dev_prompts"] & prompts["eval_prompts"]  # settings are chosen on prompts never reported
    assert not (prompts["sft"] | prompts["train_prefs"]) & (prompts["eval_prompts"] | prompts["dev_prompts"])


def test_true_reward_hand_values_and_noisier_small_margins():
    assert synthetic.true_reward("sort 3 1 2", "1 2 3") == 1.0
    assert synthetic.true_reward("sort 3 1 2", "1 2") == pytest.approx(2 / 3)
    assert synthetic.true_reward("reverse 1 2", "the answer is 2 1") == pytest.approx(1 - 3 * synthetic.LENGTH_PENALTY)
    assert synthetic.true_reward("count 3 : 3 1 3", "2") == 1.0
    rows = [json.loads(line) for line in synthetic.builtin_path("train_prefs").read_text().splitlines()]
    def agree(lo, hi):
        sel = [r for r in rows if lo <= r["score_chosen"] - r["score_rejected"] < hi]
        good = [synthetic.true_reward(r["prompt"], r["chosen"][-1]["content"]) >
                synthetic.true_reward(r["prompt"], r["rejected"][-1]["content"]) for r in sel]
        return np.mean(good), len(sel)
    small, n_small = agree(0, 0.5)
    large, _ = agree(4, 11)
    assert n_small > 50 and small < large - 0.3  # ratings at small margins are unreliable comparisons


def test_true_margins_and_agreement_table():
    from mixdpo_kit.training.pipeline import analyze_data

    prep = analyze_data(preset("demo"))
    true = synthetic.true_reward_margins(prep.dataset)
    assert len(true) == len(prep.margins)
    first = prep.dataset[0]
    assert true[0] == synthetic.true_reward(first["prompt"][-1]["content"], first["chosen"]) - \
        synthetic.true_reward(first["prompt"][-1]["content"], first["rejected"])
    table = synthetic.agreement_by_margin(prep.margins, true)
    assert sum(r["pairs"] for r in table) == len(true)
    assert table[0]["chosen_truly_better"] < table[-1]["chosen_truly_better"]


def test_lr_mass_by_route_hand_values_and_the_papers_run():
    import math

    from mixdpo_kit.core.config import TrainConfig
    from mixdpo_kit.margins.curriculum import lr_mass_by_route

    margins = np.array([5.0] * 8 + [0.0] * 2)
    plan = CurriculumPlan(margins, "easy_to_hard")
    hard = margins < 0.5
    const = TrainConfig(per_device_train_batch_size=1, lr_scheduler_type="constant", warmup_ratio=0.0)
    assert lr_mass_by_route(plan, hard, const)["sft"] == pytest.approx(0.2)
    cosine = TrainConfig(per_device_train_batch_size=1, lr_scheduler_type="cosine", warmup_ratio=0.0)
    lrs = [0.5 * (1 + math.cos(math.pi * k / 10)) for k in range(10)]
    assert lr_mass_by_route(plan, hard, cosine)["sft"] == pytest.approx((lrs[8] + lrs[9]) / sum(lrs))
    shuffled = lr_mass_by_route(CurriculumPlan(margins, "random", seed=0), hard, cosine)["sft"]
    assert shuffled > lr_mass_by_route(plan, hard, cosine)["sft"]
    # The paper's run: 53,748 DPO pairs then 7,387 SFT pairs, batch 160, cosine to 0, warm-up 0.1.
    paper = np.array([1.0] * 53748 + [0.0] * 7387)
    mass = lr_mass_by_route(CurriculumPlan(paper, "easy_to_hard"), paper < 0.5,
                            TrainConfig(per_device_train_batch_size=160, warmup_ratio=0.1))
    assert mass["sft_share_of_pairs"] == pytest.approx(0.1208, abs=1e-4)
    assert mass["sft"] == pytest.approx(0.0039, abs=5e-5)  # about 0.39 % of the learning-rate mass


def test_lr_mass_of_a_stopped_run_counts_only_the_steps_it_trained():
    """A run stopped before the hard pairs reached them trained none of them: its SFT mass is 0,
    not the planned share."""
    from mixdpo_kit.core.config import TrainConfig
    from mixdpo_kit.margins.curriculum import lr_mass_by_route
    from mixdpo_kit.reports.explain import lr_mass_line

    margins = np.array([5.0] * 8 + [0.0] * 2)
    plan = CurriculumPlan(margins, "easy_to_hard")
    const = TrainConfig(per_device_train_batch_size=1, lr_scheduler_type="constant", warmup_ratio=0.0)
    stopped = lr_mass_by_route(plan, margins < 0.5, const, steps_done=6)
    assert (stopped["sft"], stopped["sft_share_of_pairs"], stopped["steps_trained"], stopped["pairs_trained"]) == \
        (0.0, 0.0, 6, 6)
    assert lr_mass_by_route(plan, margins < 0.5, const, steps_done=9)["sft"] == pytest.approx(1 / 9)
    line = lr_mass_line(stopped)
    assert line.startswith("stopped at step 6 of 10") and "0.0 % of the 6 pairs trained" in line
    assert lr_mass_line(lr_mass_by_route(plan, margins < 0.5, const)) == \
        "hard pairs (SFT route): 20.0 % of the pairs, 20.00 % of the learning-rate mass"


def test_units_read_as_people_read_them():
    from mixdpo_kit.core import units

    assert units.percent(259 / 2000) == "13.0 %" and units.percent(0.004825, 2) == "0.48 %"
    assert units.size(8.1) == "8.1 GiB" and units.size(0.74) == "758 MiB" and units.size(0.0003) == "0.31 MiB"
    assert units.duration(0.42) == "0.42 s" and units.duration(75) == "75 s" and units.duration(600) == "10.0 min"
    assert units.threshold(2.73525) == "2.74" and units.threshold(0.183333) == "0.183"
