"""The built-in task: committed, deterministic data; its exact reward by hand; small rating margins disagree with it more often."""
import json
import numpy as np
import pytest

from mixdpo_kit.core.config import preset
from mixdpo_kit.data import synthetic


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


def test_label_lines_say_whether_a_worked_pairs_label_is_right():
    from mixdpo_kit.data.synthetic import label_lines

    hard = {"prompt": "reverse 2 5 9 9 5 8", "chosen": "8 5 9 9 5 2 .", "rejected": "8 5 9 9 5 2",
            "margin m": 0.0, "hard (m < tau)": True}
    easy = {"prompt": "sort 3 1 2", "chosen": "1 2 3", "rejected": "1 2", "margin m": 0.5, "hard (m < tau)": False}
    wrong, right = label_lines([hard, easy])
    # A stray "." costs one length penalty (0.03); "1 2" hits 2 of 3 positions.
    assert wrong == ("hard pair (m = 0): chosen '8 5 9 9 5 2 .' true reward 0.970, rejected '8 5 9 9 5 2' 1.000: "
                     "the label is wrong: the rejected answer is the better one")
    assert right.endswith("1.000, rejected '1 2' 0.667: the label is right: the chosen answer is the better one")
