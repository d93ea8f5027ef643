"""The worked pair: the library's routed loss for one pair equals the notebooks' hand formulas; a run's
settings in sentences."""
import math

import pytest
import torch

from mixdpo_kit.modeling.model import build_policy
from mixdpo_kit.objectives.routing import OBJECTIVES
from mixdpo_kit.reports.explain import example_indices, worked_pair
from mixdpo_kit.training.pipeline import analyze_data


def test_worked_pair_library_matches_hand_formulas_on_both_routes(small_cfg):
    cfg = small_cfg.override(loss={"beta": 0.5, "label_smoothing": 0.1})
    policy = build_policy(cfg.model)
    torch.manual_seed(0)
    with torch.no_grad():  # move the adapter off zero, so the policy differs from its reference
        for name, p in policy.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    prep = analyze_data(cfg, policy=policy)
    hard, easy = example_indices(prep)
    assert prep.split.hard[hard] and not prep.split.hard[easy]
    h, e = worked_pair(cfg, policy, prep, hard), worked_pair(cfg, policy, prep, easy)
    assert (h["SFT weight a"], h["preference weight b"], e["SFT weight a"], e["preference weight b"]) == (1, 0, 0, 1)
    assert h["loss (library)"] == pytest.approx(h["SFT loss (by hand)"], rel=1e-4)
    assert e["loss (library)"] == pytest.approx(e["cDPO loss (by hand)"], rel=1e-4)
    assert abs(e["z"]) > 1e-3  # a real log-ratio, not the trivial z = 0 of an untrained adapter
    for pair in (h, e):
        assert pair["loss (library)"] == pytest.approx(pair["loss (by hand)"], rel=1e-4)
        assert pair["margin m"] == pytest.approx(float(prep.margins[hard if pair is h else easy]))


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_every_objective_works_its_pairs(name, small_cfg):
    """A run's last step: selective_dpo routes by the reference's gap, ConfPO needs token statistics."""
    from mixdpo_kit.objectives.routing import resolve
    from mixdpo_kit.reports.explain import worked_pairs
    from mixdpo_kit.workflows.compare import variant_config

    cfg = resolve(variant_config(small_cfg, {"loss": {"objective": name}, "split": {"quantile": 0.3}}))
    policy = build_policy(cfg.model)
    pairs = worked_pairs(cfg, policy, analyze_data(cfg, policy=policy))
    assert len(pairs) == 2 and all(p["objective"] == name and math.isfinite(p["loss (library)"]) for p in pairs)


def test_the_study_noise_quoted_to_learners_is_the_studys_own():
    """difference_line reads a one-seed difference against a seed noise it is given: the notebook
    quotes the study's, which must be what docs/results.md reports, and the sentence says whose it is."""
    import json
    import re
    from pathlib import Path

    from mixdpo_kit.reports.explain import difference_line

    root = Path(__file__).resolve().parents[2]
    cells = json.loads((root / "notebooks" / "00_quickstart.ipynb").read_text())["cells"]
    quoted = re.search(r"^STUDY_SEED_NOISE = ([0-9.]+)", "\n".join("".join(c["source"]) for c in cells), re.M)
    assert quoted, "notebook 00 quotes the study's seed noise as STUDY_SEED_NOISE"
    noise = float(quoted[1])
    doc = (root / "docs" / "results.md").read_text()
    assert f"One seed's paired difference, as a notebook measures it, varies by about ±{noise:g}" in doc
    reward = lambda r: {"mean_reward": r, "exact_match": 0.0, "n": 1}  # noqa: E731
    run = lambda r: {"evaluation": {"true_reward": {"before": reward(0.7), "after": reward(r)}}}  # noqa: E731
    study = dict(noise=noise, noise_source="the five-seed study")
    assert "a is not distinguishable from b against the seed noise the five-seed study measured" in \
        difference_line(run(0.751), run(0.750), "a", "b", **study)
    assert difference_line(run(0.760), run(0.750), "a", "b", **study).startswith("a − b = +0.010")
    assert "a is worse than b" in difference_line(run(0.740), run(0.750), "a", "b", **study)


def test_one_function_decides_every_verdict():
    """The paired verdict of a comparison and a one-seed difference read against seed noise use the
    same rule: the interval excludes zero or the two are not distinguishable (hand-valued)."""
    from mixdpo_kit.core.units import comparison
    from mixdpo_kit.workflows.compare import verdict

    assert [comparison(d, 0.002) for d in (0.003, -0.003, 0.002, -0.001)] == \
        ["better than", "worse than", "not distinguishable from", "not distinguishable from"]
    runs = [{"variant": v, "seed": s, "true_reward": r} for v, s, r in
            [("a", 0, 0.763), ("a", 1, 0.764), ("a", 2, 0.762), ("b", 0, 0.760), ("b", 1, 0.761), ("b", 2, 0.759)]]
    assert verdict(runs, "a", "b").startswith("a is better than b: +0.003 ± 0.000")


def test_a_level_is_read_against_the_studys_in_words_that_match_the_numbers():
    from mixdpo_kit.reports.explain import level_line

    assert "the same as the study's 0.747" in level_line(0.7471, 0.747, "your SFT model", "the study")
    assert "(-0.013)" in level_line(0.734, 0.747, "your SFT model", "the study")
    why = "the SFT warm-up is not bit-for-bit reproducible across CPUs"
    assert f"(+0.013): {why}, so compare" in level_line(0.760, 0.747, "your SFT model", "the study", why)


def test_settings_lines_name_an_objectives_own_settings_apart_from_its_loss():
    from mixdpo_kit.core.config import RunConfig
    from mixdpo_kit.objectives.routing import resolve
    from mixdpo_kit.reports.explain import settings_lines

    cfg = resolve(RunConfig().override(loss={"objective": "dpo_nll", "nll_weight": 0.5}))
    assert settings_lines(cfg.to_dict())[0] == "objective dpo_nll (nll_weight = 0.5; dpo loss: beta = 0.1, " \
                                               "label_smoothing = 0)"
    assert settings_lines(resolve(RunConfig()).to_dict())[0] == \
        "objective mixdpo (dpo loss: beta = 0.01, label_smoothing = 0.1)"
