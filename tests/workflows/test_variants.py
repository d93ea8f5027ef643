"""Named variants: every objective, the study's controls, a τ sweep; one registry for compare, the
notebooks and the study script."""
import pytest

from mixdpo_kit.core.config import preset
from mixdpo_kit.objectives.routing import OBJECTIVES
from mixdpo_kit.workflows.compare import variant_config, verdict
from mixdpo_kit.workflows.variants import VARIANTS, describe, get_variant, variants_for


def test_every_objective_and_every_study_control_is_a_variant():
    base = preset("demo")
    names = ["mixdpo_constant_lr", "curriculum_dpo_constant_lr", "mixdpo_shuffled", "mixdpo_sorted_by_chosen_score",
             "mixdpo_sorted_by_rejected_score", "mixdpo_tau_1.5", "mixdpo_tau_3", *OBJECTIVES]
    got = variants_for(names, base=base)
    cfg = {name: variant_config(base, got[name]) for name in names}
    assert cfg["mixdpo_constant_lr"].train.lr_scheduler_type == "constant_with_warmup"
    assert cfg["curriculum_dpo_constant_lr"].loss.objective == "curriculum_dpo"
    assert cfg["mixdpo_shuffled"].curriculum.order == "random"
    assert cfg["mixdpo_tau_3"].split.tau == 3.0 and cfg["mixdpo_tau_1.5"].split.tau == 1.5
    # Sorted by the chosen score with as many hard pairs as tau = 0.5 on the rating margin (259 of 2,000).
    assert cfg["mixdpo_sorted_by_chosen_score"].margins.source == "score_chosen"
    assert cfg["mixdpo_sorted_by_chosen_score"].split.quantile == pytest.approx(0.1295)
    assert all(cfg[o].loss.objective == o for o in OBJECTIVES)
    assert {r["variant"] for r in describe(names)} == set(names) and all(r["what it does"] for r in describe(names))


def test_extra_settings_reach_every_variant_and_unknown_names_say_what_exists():
    got = variants_for(["mixdpo_constant_lr", "dpo"], extra={"loss": {"beta": 1.0}, "train": {"learning_rate": 1e-4}})
    assert got["mixdpo_constant_lr"]["train"] == {"lr_scheduler_type": "constant_with_warmup", "learning_rate": 1e-4}
    assert got["dpo"]["loss"] == {"objective": "dpo", "beta": 1.0}
    with pytest.raises(ValueError, match="unknown objective or variant 'mixdpo_constant'.*mixdpo_constant_lr"):
        get_variant("mixdpo_constant")
    with pytest.raises(ValueError, match="pass base=cfg"):
        variants_for(["mixdpo_sorted_by_chosen_score"])
    assert set(VARIANTS) >= {"mixdpo_constant_lr", "curriculum_dpo_constant_lr", "mixdpo_shuffled"}


def test_the_study_script_takes_its_variants_from_the_registry():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
    import builtin_study

    base = builtin_study.study_config()
    chosen = {"dpo": {"beta": 1.0, "learning_rate": 1e-4}, "mixdpo": {"beta": 0.3, "learning_rate": 3e-4}}
    study = builtin_study.study_variants(chosen, base)
    for name in builtin_study.ABLATIONS:
        expected = variants_for([name], base, {"loss": {"beta": 0.3}, "train": {"learning_rate": 3e-4}})[name]
        assert study[name] == expected
    assert variant_config(base, study["sft"]).train.learning_rate == 1e-4


def test_verdicts_print_plain_and_bold_only_for_markdown():
    runs = [{"variant": v, "seed": s, "true_reward": r} for v, s, r in
            [("a", 0, 0.75), ("a", 1, 0.76), ("a", 2, 0.77), ("b", 0, 0.75), ("b", 1, 0.75), ("b", 2, 0.78)]]
    plain = verdict(runs, "a", "b")
    assert "**" not in plain and plain.startswith("a is not distinguishable from b: +0.000")
    assert "**not distinguishable from**" in verdict(runs, "a", "b", markdown=True)
