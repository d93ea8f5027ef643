"""Command-line flags override the YAML config only when the user typed them; every default lives
in the config dataclasses (argparse holds none)."""
import argparse

import pytest
import yaml

from mixdpo_kit.cli import CONFIG_FLAGS, build_parser, command_config
from mixdpo_kit.config import RunConfig, preset

# Flags that do not set a config field: where to write the outputs, which file to read.
NOT_CONFIG = {("analyze", "out"), ("analyze", "config"), ("train", "config"), ("train", "resume"),
              ("evaluate", "run"), ("compare", "config"), ("compare", "out")}
# Per config field: a value for the YAML file and a different one for the flag (as typed, as parsed).
VALUES = {
    "data.source": ("file.jsonl", "flag.jsonl", "flag.jsonl"), "data.split": ("file_split", "flag_split", "flag_split"),
    "data.max_rows": (7, "9", 9), "margins.source": ("score_chosen", "score_rejected", "score_rejected"),
    "margins.reward_model": ("file-rm", "flag-rm", "flag-rm"), "margins.normalize": ("zscore", "rank", "rank"),
    "split.tau": (2.0, "1.5", 1.5), "split.quantile": (0.2, "0.3", 0.3),
    "train.output_dir": ("file_out", "flag_out", "flag_out"), "train.max_steps": (7, "9", 9),
    "compare.objectives": (["dpo"], "mixdpo,sft", ["mixdpo", "sft"]), "compare.seeds": (5, "2", 2),
    "judge.reward_model": ("file-rm", "flag-rm", "flag-rm"), "judge.prompts": ("arena_hard", "builtin", "builtin"),
    "judge.max_prompts": (50, "20", 20),
}


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def get(cfg: RunConfig, path: str):
    section, key = path.split(".")
    return getattr(getattr(cfg, section), key)


def flags(command: str) -> list[argparse.Action]:
    return [a for a in subcommands()[command]._actions if not isinstance(a, argparse._HelpAction)]


# Commands that read no run config: their flags are their only settings, defaults included.
NO_CONFIG_COMMANDS = {"generate", "judge"}


def test_no_flag_has_a_default_and_each_is_a_config_field_or_listed():
    for command in set(subcommands()) - NO_CONFIG_COMMANDS:
        for action in flags(command):
            if action.dest == "verbose":  # how much the command prints, not a setting of the run
                continue
            assert action.default is None, (command, action.dest, action.default)
            assert action.dest in CONFIG_FLAGS or (command, action.dest) in NOT_CONFIG, (command, action.dest)
    assert set(CONFIG_FLAGS.values()) == set(VALUES)


@pytest.mark.parametrize("command", ["analyze", "train", "compare"])
def test_each_flag_overrides_the_file_only_when_given(command, tmp_path):
    config_flags = [a for a in flags(command) if a.dest in CONFIG_FLAGS]
    assert config_flags
    fields = {CONFIG_FLAGS[a.dest] for a in config_flags}
    file_cfg = RunConfig().override(**_nested({f: VALUES[f][0] for f in fields}))
    path = tmp_path / "c.yaml"
    file_cfg.to_yaml(path)
    base = ["--config", str(path)] + (["--out", str(tmp_path / "o")] if command in ("analyze", "compare") else [])
    parser = build_parser()
    untouched = command_config(parser.parse_args([command, *base]))
    for field in fields:
        assert get(untouched, field) == VALUES[field][0], (command, field)
    for action in config_flags:
        field = CONFIG_FLAGS[action.dest]
        cfg = command_config(parser.parse_args([command, *base, action.option_strings[0], VALUES[field][1]]))
        assert get(cfg, field) == VALUES[field][2], (command, action.option_strings[0])
        for other in fields - {field} - ({"split.quantile"} if field == "split.tau" else set()):
            assert get(cfg, other) == VALUES[other][0], (command, action.option_strings[0], other)


def test_analyze_reads_tau_and_normalize_from_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"split": {"tau": 2.0}, "margins": {"normalize": "rank"}}))
    cfg = command_config(build_parser().parse_args(["analyze", "--config", str(path), "--out", str(tmp_path)]))
    assert (cfg.split.tau, cfg.margins.normalize) == (2.0, "rank")
    # An explicit --tau replaces a quantile split from the file; without it the file's quantile holds.
    path.write_text(yaml.safe_dump({"split": {"quantile": 0.2}}))
    args = ["analyze", "--config", str(path), "--out", str(tmp_path)]
    assert command_config(build_parser().parse_args(args)).split.quantile == 0.2
    cfg = command_config(build_parser().parse_args(args + ["--tau", "1.0"]))
    assert (cfg.split.tau, cfg.split.quantile) == (1.0, None)


def test_demo_out_flag(tmp_path):
    default = command_config(build_parser().parse_args(["demo"]))
    assert default.train.output_dir == preset("demo").train.output_dir
    cfg = command_config(build_parser().parse_args(["demo", "--out", str(tmp_path / "d")]))
    assert cfg.train.output_dir == str(tmp_path / "d") and cfg.train.cache_dir == str(tmp_path / "d" / "cache")
    assert cfg.override(train={"output_dir": default.train.output_dir, "cache_dir": default.train.cache_dir}) == default


def _nested(flat: dict) -> dict:
    out: dict = {}
    for path, value in flat.items():
        section, key = path.split(".")
        out.setdefault(section, {})[key] = value
    return out
