"""Curriculum orders, and where the learning rate goes by route."""
import dataclasses

import numpy as np
import pytest

from mixdpo_kit.margins.curriculum import CurriculumPlan


MARGINS = np.array([0.0, 3.0, 0.5, 9.0, 0.0, 1.5, 3.0, 6.0])


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
    assert stopped["sft_share_of_data"] == pytest.approx(0.2)
    line = lr_mass_line(stopped)
    assert line == ("stopped at step 6 of 10, before the hard pairs (SFT route, 20.0 % of the pairs) came: all of "
                    "the learning-rate mass applied went to the preference loss")
    # A step cap that ends before the hard pairs (mixdpo-kit demo --max-steps 5) says the same, not "no pair is routed".
    capped = lr_mass_by_route(plan, margins < 0.5, dataclasses.replace(const, max_steps=5))
    assert lr_mass_line(capped).startswith("the 5 steps trained end before the hard pairs")
    partly = lr_mass_by_route(plan, margins < 0.5, const, steps_done=9)
    assert lr_mass_line(partly).startswith("stopped at step 9 of 10") and "of the 9 pairs trained" in lr_mass_line(partly)
    no_hard = lr_mass_by_route(plan, np.zeros(10, bool), const)
    assert lr_mass_line(no_hard) == "no pair is routed to SFT: all of the learning-rate mass goes to the preference loss"
    assert lr_mass_line(lr_mass_by_route(plan, margins < 0.5, const)) == \
        "hard pairs (SFT route): 20.0 % of the pairs, 20.00 % of the learning-rate mass"


def test_step_means_equal_the_mean_over_each_steps_pairs():
    from mixdpo_kit.margins.curriculum import step_means

    values = np.array([1.0, 0.0, 1.0, 1.0, 0.0, 0.5])
    steps = [np.array([0, 1]), np.array([], int), np.array([2, 3, 5]), np.array([4])]
    assert step_means(values, steps).tolist() == [0.5, 0.0, 2.5 / 3, 0.0]
    assert step_means(values, []).tolist() == []


def test_the_schedule_is_computed_once_and_cannot_be_changed_by_a_caller():
    from mixdpo_kit.margins.curriculum import lr_schedule

    a = lr_schedule(100, "cosine", 0.1)
    assert lr_schedule(100, "cosine", 0.1) is a and not a.flags.writeable
    assert a[0] == 0.0 and a.max() == pytest.approx(1.0)
