"""The step planner against hand-counted steps (its match with a real two-process run is in
tests/training/test_distributed.py)."""
from mixdpo_kit.core.steps import StepPlan


def test_one_process_runs_the_order_as_it_is_with_a_short_last_step():
    plan = StepPlan(per_device_batch=4, accumulation=2)  # 8 pairs a step
    assert plan.pairs_per_step == 8 and plan.epoch_length(20) == 20
    assert plan.steps_per_epoch(20) == 3 and plan.total_steps(20) == 3  # 5 batches -> ceil(5 / 2)
    assert plan.step_positions(20) == [(0, 0, 8), (0, 8, 16), (0, 16, 20)]
    assert StepPlan(4, 2, epochs=1.5).total_steps(20) == 5  # ceil(1.5 * 3), as Trainer counts
    assert StepPlan(4, 2, max_steps=7).step_positions(20)[3:5] == [(1, 0, 8), (1, 8, 16)]


def test_two_processes_even_out_the_last_round_with_the_epochs_first_pairs():
    plan = StepPlan(per_device_batch=3, accumulation=1, processes=2)  # 6 pairs a step
    assert plan.epoch_length(20) == 24 and plan.epoch_positions(20)[20:] == [0, 1, 2, 3]
    assert plan.steps_per_epoch(20) == 4  # 7 batches of 3 -> 4 per process
    assert plan.step_positions(20)[-1] == (0, 18, 24)
    assert StepPlan(3, 1, 1).steps_per_epoch(20) == 7  # one process: almost twice the steps
    assert StepPlan(3, 2, 2).steps_per_epoch(45) == 4 and StepPlan(3, 2, 2).epoch_length(45) == 48
