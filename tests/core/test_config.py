"""The config: YAML round trip, unknown keys named, the paper's preset, the shipped config files."""
import pytest

from mixdpo_kit.core.config import RunConfig, preset


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

    for path in sorted(Path(__file__).resolve().parents[2].joinpath("configs").glob("*.yaml")):
        RunConfig.from_yaml(path)
