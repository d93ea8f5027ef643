"""How far a local reward-model judge can be trusted, measured where the truth is known.

For finished built-in-task runs (e.g. those of ``scripts/builtin_study.py``), each run and its SFT
model answer the built-in held-out prompts, the judge compares the two, and the exact reward
compares them too. Prints a Markdown table: judged win rate, length-controlled win rate,
true-reward win rate, and how often the judge picked the truly better answer.

    python scripts/judge_agreement.py --study runs/study --objectives sft,dpo,filtered_dpo,mixdpo --seeds 0,1,2
"""
from __future__ import annotations

import argparse
from pathlib import Path

from mixdpo_kit.core.progress import set_quiet
from mixdpo_kit.evaluation.generation import Decoding, answer_with_run_and_reference
from mixdpo_kit.evaluation.judge import judge_files


def pct(value: float, ci=None) -> str:
    """A rate in percent, with its interval when given."""
    return f"{100 * value:.1f}" + (f" ({100 * ci[0]:.1f}–{100 * ci[1]:.1f})" if ci else "")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--study", default="runs/study")
    ap.add_argument("--objectives", default="sft,dpo,filtered_dpo,mixdpo")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--reward-model", default="tiny-reward-builtin")
    args = ap.parse_args(argv)
    set_quiet()
    print("| run | judged win rate vs SFT (95 %) | judged LC win rate | true-reward win rate | judge agrees with truth |")
    print("|---|---|---|---|---|")
    for objective in args.objectives.split(","):
        for seed in args.seeds.split(","):
            run = Path(args.study) / objective / f"seed{seed}"
            mine, sft = answer_with_run_and_reference(run, "builtin", run / "answers", decoding=Decoding(max_new_tokens=64))
            v = judge_files(mine, sft, args.reward_model, run / "judge")
            t = v["builtin"]
            print(f"| {objective} seed {seed} | {pct(v['win_rate'], v['win_rate_ci'])} | {pct(v['lc_win_rate'])} | "
                  f"{pct(t['true_win_rate'], t['true_win_rate_ci'])} | {pct(t['agreement'])} of {t['prompts_decided']} |",
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
