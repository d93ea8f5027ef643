"""``mixdpo-kit`` command line: demo, analyze, train, evaluate, objectives, compare, generate, judge."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

logging.getLogger("bitsandbytes").setLevel(logging.ERROR)  # before anything imports it: see progress.py


def _say(lines) -> None:
    print("\n".join(lines))


def _run_summary(summary: dict, out: str | Path) -> list[str]:
    """What a finished run prints: its headline numbers, its time and the files it wrote."""
    from mixdpo_kit.explain import result_lines
    from mixdpo_kit.judge import verdict_lines
    from mixdpo_kit.units import duration

    lines = result_lines(summary)
    if "judge" in summary["evaluation"]:
        lines += verdict_lines(summary["evaluation"]["judge"])
    out = Path(out)
    took = f" in {duration(summary['wall_seconds'])}" if "wall_seconds" in summary else ""
    return lines + [f"finished{took}; written: {out / 'report.html'}, {out / 'summary.json'}, {out / 'metrics.jsonl'}"]


# Flags that set a config field (argparse dest -> "section.field"). Their argparse default is
# None, so a flag overrides the YAML file only when the user typed it; every default lives in
# the config dataclasses.
CONFIG_FLAGS = {
    "data": "data.source", "split": "data.split", "max_rows": "data.max_rows",
    "margin_source": "margins.source", "reward_model": "margins.reward_model", "normalize": "margins.normalize",
    "tau": "split.tau", "quantile": "split.quantile",
    "output_dir": "train.output_dir", "max_steps": "train.max_steps",
    "objectives": "compare.objectives", "seeds": "compare.seeds",
    "judge_reward_model": "judge.reward_model", "judge_prompts": "judge.prompts",
    "judge_max_prompts": "judge.max_prompts",
}


def flag_overrides(args) -> dict:
    """The config overrides of the flags the user gave, as nested sections."""
    sections: dict = {}
    for dest, path in CONFIG_FLAGS.items():
        value = getattr(args, dest, None)
        if value is not None:
            section, key = path.split(".")
            sections.setdefault(section, {})[key] = value
    # An explicit tau replaces a quantile split set in the file (otherwise the quantile would win).
    if getattr(args, "tau", None) is not None and getattr(args, "quantile", None) is None:
        sections["split"]["quantile"] = None
    return sections


def command_config(args):
    """The resolved config of a command: its base (preset or ``--config`` file), then the flags given."""
    from mixdpo_kit.config import RunConfig
    from mixdpo_kit.objectives import resolve
    from mixdpo_kit.runs import demo_config

    if args.command == "demo":
        base = demo_config(args.output_dir)
    elif getattr(args, "config", None):
        base = RunConfig.from_yaml(args.config)
    else:
        base = RunConfig()
    return resolve(base.override(**flag_overrides(args)))


def _cmd_demo(args) -> int:
    from mixdpo_kit.runs import run

    cfg = command_config(args)
    summary = run(cfg, cfg.train.output_dir, on_stage=print)
    _say(_run_summary(summary, cfg.train.output_dir))
    return 0


def _cmd_analyze(args) -> int:
    from mixdpo_kit import viz
    from mixdpo_kit.explain import report_lines
    from mixdpo_kit.pipeline import analyze_data, data_report
    from mixdpo_kit.report import write_html
    from mixdpo_kit.split import paper_comparison

    cfg = command_config(args)
    policy = None
    if cfg.margins.source == "likelihood_gap":  # the reference model scores the pairs
        from mixdpo_kit.model import build_policy

        policy = build_policy(cfg.model)
    prep = analyze_data(cfg, policy=policy)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = data_report(prep)
    (out / "data_report.json").write_text(json.dumps(report, indent=2))
    figs = [viz.margin_histogram(prep.margins, prep.split, unit=prep.margin_unit),
            viz.curriculum_timeline(prep.plan, prep.split.hard, cfg.train, unit=prep.margin_unit)]
    write_html(out / "margins.html", f"Margins of {cfg.data.source}", figs)
    paper = [paper_comparison(prep.split)] if cfg.margins.source == "ratings" and prep.split.tau == 0.5 else []
    _say(report_lines(report) + paper + [f"written: {out / 'data_report.json'}, {out / 'margins.html'}"])
    return 0


def _cmd_train(args) -> int:
    from mixdpo_kit.runs import run

    cfg = command_config(args)
    summary = run(cfg, cfg.train.output_dir, resume_from_checkpoint=args.resume or None, on_stage=print)
    _say(_run_summary(summary, cfg.train.output_dir))
    return 0


def _cmd_evaluate(args) -> int:
    from mixdpo_kit.runs import evaluate_saved_run

    summary = evaluate_saved_run(args.run)
    _say(_run_summary({k: v for k, v in summary.items() if k != "wall_seconds"}, args.run))
    return 0


def _cmd_objectives(args) -> int:
    from mixdpo_kit.losses import PREFERENCE_LOSSES
    from mixdpo_kit.objectives import OBJECTIVES

    width = max(map(len, OBJECTIVES))
    for name, obj in OBJECTIVES.items():
        own = {**obj.defaults, **obj.fixed}
        print(f"{name:<{width}}  {obj.summary}" + (f" [{_params(own)}]" if own else ""))
    print("\npreference losses (loss.preference) and their parameters (set them in the loss: section):")
    width = max(map(len, PREFERENCE_LOSSES))
    for name, spec in PREFERENCE_LOSSES.items():
        print(f"{name:<{width}}  {_params(spec.defaults())}  ({spec.paper})")
    from mixdpo_kit.variants import VARIANTS

    print("\nvariants for compare --objectives (besides every objective, and <objective>_tau_<T> for a τ sweep):")
    width = max(map(len, VARIANTS))
    for name, variant in VARIANTS.items():
        print(f"{name:<{width}}  {variant.summary}")
    return 0


def _params(values: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items())


def _cmd_compare(args) -> int:
    from mixdpo_kit.compare import markdown_table, run_comparison
    from mixdpo_kit.variants import variants_for

    cfg = command_config(args)
    rows = run_comparison(cfg, variants_for(cfg.compare.objectives, base=cfg), cfg.compare.seeds, args.out)
    out = Path(args.out)
    print(markdown_table(rows, cfg.compare.seeds))
    _say([f"written: {out / 'results.md'}, {out / 'results.json'}, {out / 'compare.html'}"])
    return 0


def _cmd_generate(args) -> int:
    from mixdpo_kit.generation import Decoding, arena_hard_path, generate_answers, generator_model
    from mixdpo_kit.prompt_sets import load_prompts

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
    from mixdpo_kit.judge import judge_files, verdict_lines

    verdict = judge_files(args.a, args.b, args.reward_model, args.out, args.cache_dir, args.batch_size,
                          args.max_length, args.bootstrap)
    _say(verdict_lines(verdict) + [f"written: {Path(args.out) / 'judgement.json'}, {Path(args.out) / 'judgement.html'}"])
    return 0


def _names(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and docs). Flags that set a config field default to
    None: see ``CONFIG_FLAGS``."""
    p = argparse.ArgumentParser(prog="mixdpo-kit", description="Difficulty-aware preference optimisation (MixDPO).")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--verbose", action="store_true",
                        help="the libraries' own logs and transformers' per-step log lines (default: one bar per "
                             "long stage and a short summary)")
    sub = p.add_subparsers(dest="command", required=True)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, parents=[common])

    d = command("demo", "the whole pipeline on the built-in task (CPU, minutes)")
    d.add_argument("--out", dest="output_dir", help="run folder (default: the demo preset's, runs/demo)")
    d.set_defaults(func=_cmd_demo)
    a = command("analyze", "load, validate, compute margins and split; write a data report")
    a.add_argument("--data", help="'builtin', 'ultrafeedback-sample' (real rated pairs, shipped), a .jsonl[.gz]/.json/"
                   ".parquet/.csv file, or a hub dataset (default: the config's)")
    a.add_argument("--split")
    a.add_argument("--out", required=True, help="folder for data_report.json and margins.html")
    a.add_argument("--config", help="optional YAML config; the flags given override it")
    a.add_argument("--margin-source",
                   help="ratings | score_chosen | score_rejected | reward_model | likelihood_gap | column:NAME")
    a.add_argument("--reward-model", help="for --margin-source reward_model")
    a.add_argument("--normalize", choices=["raw", "zscore", "rank"])
    a.add_argument("--tau", type=float, help="hard = margin < tau (replaces a quantile split from the config)")
    a.add_argument("--quantile", type=float, help="tau = this quantile of the margins")
    a.add_argument("--max-rows", type=int)
    a.set_defaults(func=_cmd_analyze)
    t = command("train", "train, evaluate and report from a YAML config")
    t.add_argument("--config", required=True)
    t.add_argument("--out", dest="output_dir", help="run folder (default: the config's train.output_dir)")
    t.add_argument("--resume", help="a checkpoint folder to resume from")
    t.set_defaults(func=_cmd_train)
    e = command("evaluate", "re-evaluate a finished run folder")
    e.add_argument("--run", required=True)
    e.set_defaults(func=_cmd_evaluate)
    o = command("objectives", "list the registered objectives and preference losses")
    o.set_defaults(func=_cmd_objectives)
    c = command("compare", "objectives x seeds on the same data; table + figure (resumable)")
    c.add_argument("--config", required=True)
    c.add_argument("--objectives", type=_names,
                   help="comma-separated objectives or variants, e.g. mixdpo,dpo,mixdpo_constant_lr,mixdpo_tau_3 "
                        "(mixdpo-kit objectives lists them; default: the config's compare.objectives)")
    c.add_argument("--seeds", type=int, help="seeds per objective (default: the config's compare.seeds)")
    c.add_argument("--out", required=True)
    c.add_argument("--max-steps", type=int, help="cap training steps (quick checks)")
    c.add_argument("--judge-reward-model",
                   help="also judge each run's answers against the SFT model's with this reward model")
    c.add_argument("--judge-prompts", help="the prompt set the judge uses (default: alpaca_eval)")
    c.add_argument("--judge-max-prompts", type=int, help="the first N prompts of it (default: 100)")
    c.set_defaults(func=_cmd_compare)
    g = command("generate", "answer a prompt set (AlpacaEval, Arena-Hard, a file); resumable")
    who = g.add_mutually_exclusive_group(required=True)
    who.add_argument("--run", help="a finished run folder: its trained policy (or, with --reference, its SFT model)")
    who.add_argument("--model", help="any causal LM: a local path or a hub name")
    g.add_argument("--reference", action="store_true", help="with --run: the reference, i.e. the adapter off")
    g.add_argument("--prompts", required=True,
                   help="alpaca_eval | arena_hard | arena_hard_v2 | builtin, or a .jsonl/.json file of prompts")
    g.add_argument("--out", required=True, help="the AlpacaEval model_outputs file to write (e.g. answers/mixdpo.json)")
    g.add_argument("--max-prompts", type=int, help="only the first N prompts (a quick look)")
    g.add_argument("--max-new-tokens", type=int, default=1024)
    g.add_argument("--temperature", type=float, default=0.0, help="0: greedy (default); > 0: sampling")
    g.add_argument("--top-p", type=float, default=1.0)
    g.add_argument("--seed", type=int, default=0, help="sampling seed")
    g.add_argument("--batch-size", type=int, default=8)
    g.add_argument("--generator", help="the name written in the files (default: the run folder or model name)")
    g.add_argument("--no-chat-template", action="store_true", help="feed instructions as plain text")
    g.set_defaults(func=_cmd_generate)
    j = command("judge", "win rate of answers A over B under a local reward model")
    j.add_argument("--a", required=True, help="answers file A (AlpacaEval JSON from generate, or JSONL)")
    j.add_argument("--b", required=True, help="answers file B, on the same prompts (e.g. the SFT model's)")
    j.add_argument("--reward-model", required=True, help="a sequence-classification reward model: path or hub name")
    j.add_argument("--out", required=True, help="folder for judgement.json and judgement.html")
    j.add_argument("--cache-dir", default=".mixdpo_cache/judge", help="reward scores are cached here")
    j.add_argument("--batch-size", type=int, default=16)
    j.add_argument("--max-length", type=int, default=2048, help="tokens the reward model reads per answer")
    j.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the intervals")
    j.set_defaults(func=_cmd_judge)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mixdpo-kit`` console script; errors on bad input exit non-zero with a message."""
    from mixdpo_kit.data import DataError

    args = build_parser().parse_args(argv)
    from mixdpo_kit import progress

    if args.verbose:
        progress.set_quiet(False)
    else:
        progress.quiet_libraries()
        progress.set_quiet(True, stage_bars=True)
    try:
        return args.func(args)
    except (DataError, ValueError, FileNotFoundError) as err:
        print(f"mixdpo-kit {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
