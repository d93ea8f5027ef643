"""``mixdpo-kit`` command line: demo, analyze, train, evaluate, objectives, compare."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _brief(evaluation: dict) -> dict:
    """The evaluation without generations and per-prompt rewards, for printing."""
    out = {k: v for k, v in evaluation.items() if k != "generations"}
    if "true_reward" in out:
        out["true_reward"] = {model: {k: v for k, v in values.items() if k != "rewards"}
                              for model, values in out["true_reward"].items()}
    return out


def _cmd_demo(args) -> int:
    from mixdpo_kit.runs import run_demo

    summary = run_demo(args.out)
    tr = _brief(summary["evaluation"]).get("true_reward", {})
    print(json.dumps({"out": args.out, "split": summary["split"], "true_reward": tr,
                      "wall_seconds": summary.get("wall_seconds")}, indent=2))
    return 0


def _cmd_analyze(args) -> int:
    from mixdpo_kit import viz
    from mixdpo_kit.config import RunConfig
    from mixdpo_kit.pipeline import analyze_data, data_report
    from mixdpo_kit.report import write_html

    cfg = RunConfig.from_yaml(args.config) if args.config else RunConfig()
    margins = {"source": args.margin_source, "normalize": args.normalize}
    if args.reward_model:
        margins["reward_model"] = args.reward_model
    cfg = cfg.override(data={"source": args.data, "split": args.split or cfg.data.split, "max_rows": args.max_rows},
                       margins=margins, split={"tau": args.tau, "quantile": args.quantile})
    policy = None
    if cfg.margins.source == "likelihood_gap":  # the reference model scores the pairs
        from mixdpo_kit.model import build_policy

        policy = build_policy(cfg.model)
    prep = analyze_data(cfg, policy=policy)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = data_report(prep)
    (out / "data_report.json").write_text(json.dumps(report, indent=2))
    figs = [viz.margin_histogram(prep.margins, prep.split),
            viz.curriculum_timeline(prep.plan, prep.split.hard)]
    write_html(out / "margins.html", f"Margins of {args.data}", figs)
    print(json.dumps({k: report[k] for k in ("rows_read", "rows_kept", "rows_dropped", "dropped", "split")}, indent=2))
    return 0


def _cmd_train(args) -> int:
    from mixdpo_kit.config import RunConfig
    from mixdpo_kit.runs import run

    cfg = RunConfig.from_yaml(args.config)
    out = args.out or cfg.train.output_dir
    summary = run(cfg, out, resume_from_checkpoint=args.resume or None)
    print(json.dumps({"out": out, "evaluation": _brief(summary["evaluation"])}, indent=2))
    return 0


def _cmd_evaluate(args) -> int:
    from mixdpo_kit.runs import evaluate_saved_run

    summary = evaluate_saved_run(args.run)
    print(json.dumps(_brief(summary["evaluation"]), indent=2))
    return 0


def _cmd_objectives(args) -> int:
    from mixdpo_kit.losses import PREFERENCE_LOSSES
    from mixdpo_kit.objectives import OBJECTIVES

    width = max(map(len, OBJECTIVES))
    for name, obj in OBJECTIVES.items():
        print(f"{name:<{width}}  {obj.summary}")
    print(f"\npreference losses (loss.preference): {', '.join(PREFERENCE_LOSSES)}")
    return 0


DEFAULT_COMPARISON = "mixdpo,dpo,cdpo,filtered_dpo,sft,dpo_nll,curriculum_dpo,simpo,beta_dpo,amapo,madpo"


def _cmd_compare(args) -> int:
    from mixdpo_kit.compare import markdown_table, run_comparison, variants_for
    from mixdpo_kit.config import RunConfig

    cfg = RunConfig.from_yaml(args.config)
    if args.max_steps is not None:
        cfg = cfg.override(train={"max_steps": args.max_steps})
    names = [n.strip() for n in args.objectives.split(",") if n.strip()]
    rows = run_comparison(cfg, variants_for(names), args.seeds, args.out)
    print(markdown_table(rows, args.seeds))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and docs)."""
    p = argparse.ArgumentParser(prog="mixdpo-kit", description="Difficulty-aware preference optimisation (MixDPO).")
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="the whole pipeline on the built-in task (CPU, minutes)")
    d.add_argument("--out", default="runs/demo")
    d.set_defaults(func=_cmd_demo)
    a = sub.add_parser("analyze", help="load, validate, compute margins and split; write a data report")
    a.add_argument("--data", required=True, help="'builtin', a .jsonl/.json/.parquet/.csv file, or a hub dataset")
    a.add_argument("--split", default=None)
    a.add_argument("--out", required=True)
    a.add_argument("--config", default=None, help="optional YAML config for the other settings")
    a.add_argument("--margin-source", default="ratings",
                   help="ratings | score_chosen | score_rejected | reward_model | likelihood_gap | column:NAME")
    a.add_argument("--reward-model", default=None, help="for --margin-source reward_model")
    a.add_argument("--normalize", default="raw", choices=["raw", "zscore", "rank"])
    a.add_argument("--tau", type=float, default=0.5)
    a.add_argument("--quantile", type=float, default=None)
    a.add_argument("--max-rows", type=int, default=None)
    a.set_defaults(func=_cmd_analyze)
    t = sub.add_parser("train", help="train, evaluate and report from a YAML config")
    t.add_argument("--config", required=True)
    t.add_argument("--out", default=None)
    t.add_argument("--resume", default=None, help="a checkpoint folder to resume from")
    t.set_defaults(func=_cmd_train)
    e = sub.add_parser("evaluate", help="re-evaluate a finished run folder")
    e.add_argument("--run", required=True)
    e.set_defaults(func=_cmd_evaluate)
    o = sub.add_parser("objectives", help="list the registered objectives and preference losses")
    o.set_defaults(func=_cmd_objectives)
    c = sub.add_parser("compare", help="objectives x seeds on the same data; table + figure (resumable)")
    c.add_argument("--config", required=True)
    c.add_argument("--objectives", default=DEFAULT_COMPARISON, help="comma-separated registered objective names")
    c.add_argument("--seeds", type=int, default=3)
    c.add_argument("--out", required=True)
    c.add_argument("--max-steps", type=int, default=None, help="cap training steps (quick checks)")
    c.set_defaults(func=_cmd_compare)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``mixdpo-kit`` console script; errors on bad input exit non-zero with a message."""
    from mixdpo_kit.data import DataError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (DataError, ValueError, FileNotFoundError) as err:
        print(f"mixdpo-kit {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
