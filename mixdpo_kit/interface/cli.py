"""``mixdpo-kit`` command line: demo, analyze, formats, train, evaluate, objectives, compare, generate, judge."""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import types
import typing
import warnings
from pathlib import Path

from mixdpo_kit.core.config import CacheConfig, JudgeConfig, LossConfig, RunConfig
from mixdpo_kit.core.errors import UserError


def _say(lines) -> None:
    print("\n".join(lines))


def _run_summary(summary, out: str | Path) -> list[str]:
    """What a finished run (a :class:`~mixdpo_kit.reports.results.RunSummary`) prints: its headline
    numbers, its time and the files it wrote."""
    from mixdpo_kit.reports.explain import result_lines
    from mixdpo_kit.evaluation.judge import verdict_lines
    from mixdpo_kit.core.units import duration

    lines = result_lines(summary)
    if summary.evaluation.judge is not None:
        lines += verdict_lines(summary.evaluation.judge)
    out = Path(out)
    took = f" in {duration(summary.wall_seconds)}" if summary.wall_seconds is not None else ""
    return lines + [f"finished{took}; written: {out / 'report.html'}, {out / 'summary.json'}, {out / 'metrics.jsonl'}"]


# Every config field is a flag, ``--section.field`` (the most used also have a short name, from
# the field's metadata: ``--tau``), made from the config dataclasses as HfArgumentParser makes
# flags from TrainingArguments. Their argparse default is None, so a flag overrides the YAML file
# only when the user typed it; every default lives in the dataclasses.
NONE = object()  # "none" typed for a field that may be None


def config_fields(config_cls=RunConfig):
    """``(section, field, type hint)`` of every settable field of the config tree (the loss's own
    parameters are set in the config file's ``loss:`` section)."""
    for section in dataclasses.fields(config_cls):
        cls = section.default_factory
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if not (cls is LossConfig and f.name == "params"):
                yield section.name, f, hints[f.name]


def _parser_for(hint):
    """The argparse ``type`` of a field: its value from the typed text ("none" for None)."""
    members = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    optional = type(None) in members
    kinds = {typing.get_origin(a) or a for a in members if a is not type(None)}

    def parse(text: str):
        if optional and text.lower() in ("none", "null"):
            return NONE
        if bool in kinds and text.lower() in ("true", "false", "yes", "no", "1", "0"):
            return text.lower() in ("true", "yes", "1")
        if dict in kinds:  # key=value,key=value (a column map)
            pairs = [item.partition("=") for item in _names(text)]
            if any(not key or not sep or not value for key, sep, value in pairs):
                raise argparse.ArgumentTypeError(f"expected key=value pairs separated by commas, got {text!r}")
            return {key.strip(): value.strip() for key, _, value in pairs}
        if list in kinds and ("," in text or kinds == {list}):
            return _names(text)
        for kind in (int, float):
            if kind in kinds:
                return kind(text)
        if str in kinds:
            return text
        raise argparse.ArgumentTypeError(f"expected one of {sorted(k.__name__ for k in kinds)}, got {text!r}")

    parse.__name__ = "/".join(sorted(k.__name__ for k in kinds))  # what argparse names in an error
    return parse


def add_config_flags(parser: argparse.ArgumentParser, config_cls=RunConfig) -> None:
    """A ``--section.field`` flag for every field of the config tree, grouped by section, with its
    short name where the field declares one and the command has not taken it."""
    groups = {}
    for section, f, hint in config_fields(config_cls):
        if section not in groups:
            groups[section] = parser.add_argument_group(f"{section} (config section)")
        names = [f"--{section}.{f.name}"]
        if f.metadata.get("flag") and f.metadata["flag"] not in parser._option_string_actions:
            names.insert(0, f.metadata["flag"])
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        help_text = f"{f.metadata.get('help', '')} (default: {default!r})".replace("%", "%%")  # argparse formats it
        groups[section].add_argument(*names, dest=f"{section}.{f.name}", type=_parser_for(hint), default=None,
                                     metavar=f.name.upper(), help=help_text)


def loss_parameters() -> dict[str, dict]:
    """Every parameter of a registered preference loss or of an objective's own settings, by name:
    its type hint and the default each owner gives it (a new loss's parameters get their flags)."""
    from mixdpo_kit.objectives.losses import PREFERENCE_LOSSES
    from mixdpo_kit.objectives.routing import OBJECTIVES

    owners = [(name, spec.params) for name, spec in PREFERENCE_LOSSES.items()]
    owners += [(name, obj.params) for name, obj in OBJECTIVES.items() if obj.params is not None]
    taken = {f.name for f in dataclasses.fields(LossConfig)}
    out: dict[str, dict] = {}
    for owner, params in owners:
        hints = typing.get_type_hints(params)
        for f in dataclasses.fields(params):
            if f.name not in taken:
                entry = out.setdefault(f.name, {"hint": hints[f.name], "defaults": {}})
                entry["defaults"][owner] = f.default
    return out


def add_loss_parameter_flags(parser: argparse.ArgumentParser) -> None:
    """A ``--loss.NAME`` flag for every loss and objective parameter; the value is checked against
    the run's objective and loss when the config loads (as the same key in the YAML file is)."""
    group = parser.add_argument_group("loss parameters (of the run's preference loss or objective)")
    for name, entry in sorted(loss_parameters().items()):
        defaults = ", ".join(f"{owner} {value!r}" for owner, value in entry["defaults"].items())
        group.add_argument(f"--loss.{name}", dest=f"loss.{name}", type=_parser_for(entry["hint"]), default=None,
                           metavar=name.upper(),
                           help=f"defaults: {defaults} (an objective may set its own: mixdpo-kit objectives)")


def flag_overrides(args) -> dict:
    """The config overrides of the flags the user gave, as nested sections."""
    sections: dict = {}
    for dest, value in vars(args).items():
        if "." in dest and value is not None:
            section, key = dest.split(".")
            sections.setdefault(section, {})[key] = None if value is NONE else value
    # An explicit tau replaces a quantile split set in the file (otherwise the quantile would win).
    if "tau" in sections.get("split", {}) and "quantile" not in sections["split"]:
        sections["split"]["quantile"] = None
    return sections


def command_config(args):
    """The resolved config of a command: its base (preset or ``--config`` file), then the flags given."""
    from mixdpo_kit.objectives.routing import resolve
    from mixdpo_kit.workflows.runs import demo_config

    if args.command == "demo":
        base = demo_config(getattr(args, "train.output_dir"))
    elif getattr(args, "config", None):
        base = RunConfig.from_yaml(args.config)
    else:
        base = RunConfig()
    return resolve(base.override(**flag_overrides(args)))


def _cmd_demo(args) -> int:
    from mixdpo_kit.workflows.runs import run

    cfg = command_config(args)
    summary = run(cfg, cfg.train.output_dir, on_stage=print)
    _say(_run_summary(summary, cfg.train.output_dir))
    return 0


def _cmd_analyze(args) -> int:
    from mixdpo_kit.core.distributed import on_main
    from mixdpo_kit.data.loading import load_configured
    from mixdpo_kit.margins.sources import NoMarginSignal, applicable_sources
    from mixdpo_kit.margins.split import paper_comparison
    from mixdpo_kit.reports import viz
    from mixdpo_kit.reports.explain import report_lines
    from mixdpo_kit.reports.report import write_html
    from mixdpo_kit.training.pipeline import analyze_data, data_report
    from mixdpo_kit.workflows.analysis import export_pairs, margin_origin, pairing_choices, pairing_lines

    cfg = command_config(args)
    out = Path(args.out)
    named = cfg.data.format != "auto"
    try:
        with warnings.catch_warnings():  # a split with an empty side is a line of the report below
            warnings.simplefilter("ignore", UserWarning)
            prep = analyze_data(cfg)  # a model-based margin source builds the policy it needs
    except NoMarginSignal as none:  # e.g. PKU-SafeRLHF, HH-RLHF: the pairs are still read and reported
        if args.export:
            raise UserError(f"--export needs margins: {none}") from None
        ds, report = load_configured(cfg.data)
        document = {**report.to_dict(), "margins": None, "margin_sources": applicable_sources(ds)}
        on_main(_write_json, out / "data_report.json", document)
        how = "named with data.format" if named else "recognised by its columns"
        _say([f"read as {report.format_title}, {how}"] + report_lines(document) +
             [f"no margins: {none}", f"written: {out / 'data_report.json'}"])
        return 0
    report = data_report(prep)
    report["margin_origin"] = margin_origin(prep.report, cfg.margins.source, prep.dataset, named)
    choices = pairing_choices(cfg, prep.report)
    report["pairing_choices"] = [{k: v for k, v in c.items() if k != "margins"} for c in choices]
    exported = export_pairs(cfg, prep, args.export) if args.export else None

    def write():  # by the main process alone under accelerate launch / torchrun
        _write_json(out / "data_report.json", report)
        figs = [viz.margin_histogram(prep.margins, prep.split, unit=prep.margin_unit)]
        if choices:
            figs.append(viz.pairing_choices(choices, unit=prep.margin_unit))
        figs.append(viz.curriculum_timeline(prep.plan, prep.split.hard, cfg.train, unit=prep.margin_unit))
        write_html(out / "margins.html", f"Margins of {cfg.data.source}", figs)

    on_main(write)
    rated = cfg.margins.source in ("ratings", "data") and prep.margin_unit == "rating points"
    paper = [paper_comparison(prep.split)] if rated and prep.split.tau == 0.5 and not choices else []
    written = [out / "data_report.json", out / "margins.html", *([exported] if exported else [])]
    _say([report["margin_origin"]] + report_lines(report) + pairing_lines(choices, prep.margin_unit) + paper
         + [f"written: {', '.join(map(str, written))}"])
    return 0


def _write_json(path: Path, document: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2))


def _cmd_formats(args) -> int:
    from mixdpo_kit.data.formats import FORMATS, SIGNALS

    for fmt in FORMATS.values():
        columns = ", ".join(fmt.columns) or "data.columns maps yours"
        signals = "; ".join(f"{s} ({SIGNALS[s].unit})" for s in fmt.signals) or "none (use a model-based source)"
        print(f"{fmt.name}: {fmt.title}\n    columns: {columns}\n    margin: {signals}"
              + (f"\n    published as: {', '.join(fmt.published)}" if fmt.published else "")
              + ("\n    K-wise: data.pairing chooses the pairs" if fmt.kwise else ""))
    return 0


def _cmd_train(args) -> int:
    from mixdpo_kit.workflows.runs import run

    cfg = command_config(args)
    summary = run(cfg, cfg.train.output_dir, resume_from_checkpoint=args.resume or None, on_stage=print)
    _say(_run_summary(summary, cfg.train.output_dir))
    return 0


def _cmd_evaluate(args) -> int:
    from mixdpo_kit.workflows.runs import evaluate_saved_run

    summary = evaluate_saved_run(args.run)
    _say(_run_summary(dataclasses.replace(summary, wall_seconds=None), args.run))  # not this command's time
    return 0


def _cmd_objectives(args) -> int:
    from mixdpo_kit.objectives.losses import PREFERENCE_LOSSES
    from mixdpo_kit.objectives.routing import OBJECTIVES

    width = max(map(len, OBJECTIVES))
    for name, obj in OBJECTIVES.items():
        own = {**obj.own_defaults(), **obj.defaults, **obj.fixed}
        print(f"{name:<{width}}  {obj.summary}" + (f" [{_params(own)}]" if own else ""))
    print("\npreference losses (loss.preference) and their parameters (set them in the loss: section):")
    width = max(map(len, PREFERENCE_LOSSES))
    for name, spec in PREFERENCE_LOSSES.items():
        print(f"{name:<{width}}  {_params(spec.defaults())}  ({spec.paper})")
    from mixdpo_kit.workflows.variants import VARIANTS

    print("\nvariants for compare --objectives (besides every objective, and <objective>_tau_<T> for a τ sweep):")
    width = max(map(len, VARIANTS))
    for name, variant in VARIANTS.items():
        print(f"{name:<{width}}  {variant.summary}")
    return 0


def _params(values: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items())


def _cmd_compare(args) -> int:
    from mixdpo_kit.workflows.compare import markdown_table, run_comparison
    from mixdpo_kit.workflows.variants import variants_for

    cfg = command_config(args)
    rows = run_comparison(cfg, variants_for(cfg.compare.objectives, base=cfg), cfg.compare.seeds, args.out)
    out = Path(args.out)
    print(markdown_table(rows, cfg.compare.seeds))
    _say([f"written: {out / 'results.md'}, {out / 'results.json'}, {out / 'compare.html'}"])
    return 0


def _cmd_generate(args) -> int:
    from mixdpo_kit.evaluation.generation import Decoding, arena_hard_path, generate_answers, generator_model
    from mixdpo_kit.data.prompt_sets import load_prompts

    prompts = load_prompts(args.prompts, args.max_prompts)
    decoding = Decoding(max_new_tokens=args.max_new_tokens, do_sample=args.temperature > 0,
                        temperature=args.temperature or 1.0, top_p=args.top_p, seed=args.seed,
                        chat_template=not args.no_chat_template)
    with generator_model(args.run, args.model, args.reference) as (model, tokenizer, name, info):
        generator = args.generator or name
        generate_answers(model, tokenizer, prompts, args.out, generator, decoding, args.batch_size, info)
    _say([f"{len(prompts)} answers by {generator}", f"written: {args.out} (AlpacaEval model_outputs), "
           f"{arena_hard_path(args.out, generator)} (Arena-Hard answers)"])
    return 0


def _cmd_judge(args) -> int:
    from mixdpo_kit.evaluation.judge import judge_files, verdict_lines

    settings = JudgeConfig(score_batch_size=args.batch_size, max_length=args.max_length, bootstrap=args.bootstrap)
    verdict = judge_files(args.a, args.b, args.reward_model, args.out, args.cache_dir, settings)
    _say(verdict_lines(verdict) + [f"written: {Path(args.out) / 'judgement.json'}, {Path(args.out) / 'judgement.html'}"])
    return 0


def _names(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and docs). Flags that set a config field default to
    None: see :func:`add_config_flags`."""
    from mixdpo_kit.evaluation.generation import Decoding

    p = argparse.ArgumentParser(prog="mixdpo-kit", description="Difficulty-aware preference optimisation (MixDPO).")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--verbose", action="store_true",
                        help="the libraries' own logs and transformers' per-step log lines (default: one bar per "
                             "long stage and a short summary)")
    sub = p.add_subparsers(dest="command", required=True)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, parents=[common])

    d = command("demo", "the whole pipeline on the built-in task (CPU, minutes)")
    d.set_defaults(func=_cmd_demo)
    a = command("analyze", "load, validate, compute margins and split; write a data report")
    a.add_argument("--out", required=True, help="folder for data_report.json and margins.html")
    a.add_argument("--config", help="optional YAML config; the flags given override it")
    a.add_argument("--export", help="also write one row per kept pair (TRL's preference format plus source row, "
                                    "margin, hard, route, curriculum position) to this .parquet or .jsonl file")
    a.set_defaults(func=_cmd_analyze)
    f = command("formats", "list the preference-data formats the kit reads, their columns and margins")
    f.set_defaults(func=_cmd_formats)
    t = command("train", "train, evaluate and report from a YAML config")
    t.add_argument("--config", required=True)
    t.add_argument("--resume", help="a checkpoint folder to resume from")
    t.set_defaults(func=_cmd_train)
    e = command("evaluate", "re-evaluate a finished run folder")
    e.add_argument("--run", required=True)
    e.set_defaults(func=_cmd_evaluate)
    o = command("objectives", "list the registered objectives and preference losses")
    o.set_defaults(func=_cmd_objectives)
    c = command("compare", "objectives x seeds on the same data; table + figure (resumable)")
    c.add_argument("--config", required=True)
    c.add_argument("--out", required=True)
    c.set_defaults(func=_cmd_compare)
    for run_command in (d, a, t, c):  # the commands that build a run config: every field is a flag
        add_config_flags(run_command)
        add_loss_parameter_flags(run_command)
    g = command("generate", "answer a prompt set (AlpacaEval, Arena-Hard, a file); resumable")
    who = g.add_mutually_exclusive_group(required=True)
    who.add_argument("--run", help="a finished run folder: its trained policy (or, with --reference, its SFT model)")
    who.add_argument("--model", help="any causal LM: a local path or a hub name")
    g.add_argument("--reference", action="store_true", help="with --run: the reference, i.e. the adapter off")
    g.add_argument("--prompts", required=True,
                   help="alpaca_eval | arena_hard | arena_hard_v2 | builtin, or a .jsonl/.json file of prompts")
    g.add_argument("--out", required=True, help="the AlpacaEval model_outputs file to write (e.g. answers/mixdpo.json)")
    g.add_argument("--max-prompts", type=int, help="only the first N prompts (a quick look)")
    g.add_argument("--max-new-tokens", type=int, default=Decoding.max_new_tokens)
    g.add_argument("--temperature", type=float, default=0.0, help="0: greedy (default); > 0: sampling")
    g.add_argument("--top-p", type=float, default=Decoding.top_p)
    g.add_argument("--seed", type=int, default=Decoding.seed, help="sampling seed")
    g.add_argument("--batch-size", type=int, default=JudgeConfig.batch_size, help="prompts per generation batch")
    g.add_argument("--generator", help="the name written in the files (default: the run folder or model name)")
    g.add_argument("--no-chat-template", action="store_true", help="feed instructions as plain text")
    g.set_defaults(func=_cmd_generate)
    j = command("judge", "win rate of answers A over B under a local reward model")
    j.add_argument("--a", required=True, help="answers file A (AlpacaEval JSON from generate, or JSONL)")
    j.add_argument("--b", required=True, help="answers file B, on the same prompts (e.g. the SFT model's)")
    j.add_argument("--reward-model", required=True, help="a sequence-classification reward model: path or hub name")
    j.add_argument("--out", required=True, help="folder for judgement.json and judgement.html")
    j.add_argument("--cache-dir", default=str(CacheConfig().path("judge")),
                   help="reward scores are cached here")
    j.add_argument("--batch-size", type=int, default=JudgeConfig.score_batch_size, help="answers per reward-model batch")
    j.add_argument("--max-length", type=int, default=JudgeConfig.max_length,
                   help="tokens the reward model reads per answer")
    j.add_argument("--bootstrap", type=int, default=JudgeConfig.bootstrap, help="bootstrap resamples for the intervals")
    j.set_defaults(func=_cmd_judge)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mixdpo-kit`` console script. The kit's user errors (:class:`UserError`:
    a setting, a name, a file, the data) exit 2 with one line; anything else keeps its traceback."""
    args = build_parser().parse_args(argv)
    from mixdpo_kit.core import progress

    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1  # torchrun / accelerate launch
    if launched:
        from mixdpo_kit.core.distributed import is_main_process

        if not is_main_process():
            sys.stdout = open(os.devnull, "w")  # launched processes: the main one speaks for all (errors still show)

    if args.verbose:
        progress.set_quiet(False)
    else:
        progress.quiet_libraries()
        progress.set_quiet(True, stage_bars=True)
    try:
        code = args.func(args)
        if launched:  # only after success: after a failure the other processes may never arrive
            from mixdpo_kit.core.distributed import end_processes

            end_processes()
        return code
    except UserError as err:
        print(f"mixdpo-kit {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
