"""Command-line flags override the YAML config only when the user typed them; every default lives
in the config dataclasses (argparse holds none), and every config field is a flag, made from the
dataclasses (a new field gets its flag without a hand-kept map)."""
import argparse
from dataclasses import dataclass, field

import pytest
import yaml

from mixdpo_kit.core.config import RunConfig, SplitConfig, preset, setting
from mixdpo_kit.interface.cli import add_config_flags, build_parser, command_config, config_fields, loss_parameters

# Flags that do not set a config field: where to write the outputs, which file to read.
NOT_CONFIG = {("analyze", "out"), ("analyze", "config"), ("analyze", "export"), ("train", "config"), ("train", "resume"),
              ("evaluate", "run"), ("compare", "config"), ("compare", "out")}
RUN_COMMANDS = ("demo", "analyze", "train", "compare")
# Per config field: a value for the YAML file and a different one for the flag (as typed, as parsed).
# Every field with a short flag is here, and one of each kind of the others (bool, optional, list).
VALUES = {
    "data.source": ("file.jsonl", "flag.jsonl", "flag.jsonl"), "data.split": ("file_split", "flag_split", "flag_split"),
    "data.max_rows": (7, "9", 9), "margins.source": ("score_chosen", "score_rejected", "score_rejected"),
    "margins.reward_model": ("file-rm", "flag-rm", "flag-rm"), "margins.normalize": ("zscore", "rank", "rank"),
    "split.tau": (2.0, "1.5", 1.5), "split.quantile": (0.2, "0.3", 0.3),
    "train.output_dir": ("file_out", "flag_out", "flag_out"), "train.max_steps": (7, "9", 9),
    "compare.objectives": (["dpo"], "mixdpo,sft", ["mixdpo", "sft"]), "compare.seeds": (5, "2", 2),
    "judge.reward_model": ("file-rm", "flag-rm", "flag-rm"), "judge.prompts": ("arena_hard", "builtin", "builtin"),
    "judge.max_prompts": (50, "20", 20),
    "train.learning_rate": (1e-5, "3e-4", 3e-4), "model.share_prompt": (True, "false", False),
    "data.eval_source": ("file-eval.jsonl", "none", None), "model.target_modules": ("all-linear", "q_proj,v_proj",
                                                                                  ["q_proj", "v_proj"]),
    "model.gradient_checkpointing": ("auto", "true", True),
}


def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def get(cfg: RunConfig, path: str):
    section, key = path.split(".")
    return getattr(getattr(cfg, section), key)


def flags(command: str) -> list[argparse.Action]:
    return [a for a in subcommands()[command]._actions if not isinstance(a, argparse._HelpAction)]


def fields_of(config_cls=RunConfig) -> set[str]:
    return {f"{section}.{f.name}" for section, f, _ in config_fields(config_cls)}


def test_no_flag_has_a_default_and_each_is_a_config_field_or_listed():
    for command in RUN_COMMANDS + ("evaluate", "objectives"):
        for action in flags(command):
            if action.dest == "verbose":  # how much the command prints, not a setting of the run
                continue
            assert action.default is None, (command, action.dest, action.default)
            assert action.dest in fields_of() | loss_flags() or (command, action.dest) in NOT_CONFIG, \
                (command, action.dest)


def loss_flags() -> set[str]:
    return {f"loss.{name}" for name in loss_parameters()}


@pytest.mark.parametrize("command", RUN_COMMANDS)
def test_every_config_field_is_a_flag_with_its_help(command):
    by_dest = {a.dest: a for a in flags(command)}
    assert fields_of() <= set(by_dest)
    assert all(by_dest[d].help.split(" (default")[0] for d in fields_of()), "a field without help text"
    for section, f, _ in config_fields():  # the short names the fields declare, unless the command took it
        if f.metadata.get("flag") and (command, f.metadata["flag"][2:]) not in NOT_CONFIG:
            assert f.metadata["flag"] in by_dest[f"{section}.{f.name}"].option_strings, (command, f.name)
    assert "loss.params" not in fields_of()  # the loss's own parameters are set in its YAML section


def test_loss_and_objective_parameters_are_flags_checked_against_the_run(tmp_path):
    """The preference losses' and objectives' own parameter dataclasses make ``--loss.NAME`` flags;
    a value lands where the same YAML key would, and a parameter the run's loss and objective lack
    is refused, naming both."""
    assert {"loss.beta", "loss.label_smoothing", "loss.nll_weight", "loss.soft_temperature"} <= loss_flags()
    by_dest = {a.dest: a for a in flags("train")}
    assert "dpo_nll 1.0" in by_dest["loss.nll_weight"].help and "simpo 2.0" in by_dest["loss.beta"].help
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"loss": {"objective": "dpo_nll", "beta": 0.2}}))
    args = ["train", "--config", str(path)]
    cfg = command_config(build_parser().parse_args(args))
    assert (cfg.loss.params["beta"], cfg.loss.params["nll_weight"]) == (0.2, 1.0)  # the file, then the default
    cfg = command_config(build_parser().parse_args(args + ["--loss.nll_weight", "0.3", "--loss.beta", "0.05"]))
    assert (cfg.loss.params["beta"], cfg.loss.params["nll_weight"]) == (0.05, 0.3)
    with pytest.raises(ValueError, match="soft_temperature.*'dpo' loss.*nll_weight"):
        command_config(build_parser().parse_args(args + ["--loss.soft_temperature", "0.3"]))


def test_a_new_config_field_gets_its_flag():
    @dataclass
    class SplitWithFloor(SplitConfig):
        floor: float | None = setting(None, "margins below this are dropped", flag="--floor")

    @dataclass
    class Extended(RunConfig):
        split: SplitWithFloor = field(default_factory=SplitWithFloor)

    parser = argparse.ArgumentParser()
    add_config_flags(parser, Extended)
    assert vars(parser.parse_args(["--floor", "0.5"]))["split.floor"] == 0.5
    assert vars(parser.parse_args(["--split.floor", "0.25"]))["split.floor"] == 0.25
    assert vars(parser.parse_args([]))["split.floor"] is None
    with pytest.raises(SystemExit):
        parser.parse_args(["--split.floor", "high"])


@pytest.mark.parametrize("command", ["analyze", "train", "compare"])
def test_each_flag_overrides_the_file_only_when_given(command, tmp_path):
    fields = set(VALUES)
    file_cfg = RunConfig().override(**_nested({f: VALUES[f][0] for f in fields}))
    path = tmp_path / "c.yaml"
    file_cfg.to_yaml(path)
    base = ["--config", str(path)] + (["--out", str(tmp_path / "o")] if command in ("analyze", "compare") else [])
    parser = build_parser()
    untouched = command_config(parser.parse_args([command, *base]))
    for f in fields:
        assert get(untouched, f) == VALUES[f][0], (command, f)
    for action in [a for a in flags(command) if a.dest in fields]:
        f = action.dest
        for option in action.option_strings:  # the short name and --section.field alike
            cfg = command_config(parser.parse_args([command, *base, option, VALUES[f][1]]))
            assert get(cfg, f) == VALUES[f][2], (command, option)
            for other in fields - {f} - ({"split.quantile"} if f == "split.tau" else set()):
                assert get(cfg, other) == VALUES[other][0], (command, option, other)


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
    assert cfg.train.output_dir == str(tmp_path / "d") and cfg.cache.dir == str(tmp_path / "d" / "cache")
    assert cfg.override(train={"output_dir": default.train.output_dir}, cache={"dir": default.cache.dir}) == default


def _nested(flat: dict) -> dict:
    out: dict = {}
    for path, value in flat.items():
        section, key = path.split(".")
        out.setdefault(section, {})[key] = value
    return out
