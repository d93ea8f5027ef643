"""The known-reward study on the built-in task: MixDPO vs its rivals and the paper's ablations.

    .venv/bin/python scripts/builtin_study.py --seeds 3 --out runs/study --doc docs/results.md

Resumable (finished runs are read back). ``--quick`` runs one seed of three variants with few
steps, which CI uses to keep this script working.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from mixdpo_kit.compare import interval, markdown_table, run_comparison, variants_for
from mixdpo_kit.config import preset

OBJECTIVES = ["mixdpo", "dpo", "cdpo", "filtered_dpo", "selective_dpo", "sft", "dpo_nll", "curriculum_dpo",
              "simpo", "beta_dpo", "amapo", "madpo", "gdpo", "da_dpo", "confpo", "mixdpo_soft"]


def study_config():
    """The demo setup with a learning rate at which the preference stage visibly moves the policy."""
    return preset("demo").override(train={"learning_rate": 5e-4}, loss={"beta": 0.1})


def ablations(hard_fraction: float) -> dict[str, dict]:
    """The paper's ablations: sort key, tau sweep, curriculum vs shuffled."""
    same_share = {"quantile": hard_fraction}  # as many hard pairs as tau = 0.5 on the rating margin
    return {
        "mixdpo_sorted_by_chosen_score": {"loss": {"objective": "mixdpo"}, "margins": {"source": "score_chosen"},
                                          "split": same_share},
        "mixdpo_sorted_by_rejected_score": {"loss": {"objective": "mixdpo"},
                                            "margins": {"source": "score_rejected"}, "split": same_share},
        "mixdpo_tau_1.5": {"loss": {"objective": "mixdpo"}, "split": {"tau": 1.5}},
        "mixdpo_tau_3": {"loss": {"objective": "mixdpo"}, "split": {"tau": 3.0}},
        "mixdpo_shuffled": {"loss": {"objective": "mixdpo"}, "curriculum": {"order": "random"}},
    }


def paired_difference(runs: list[dict], a: str, b: str, key: str = "true_reward") -> tuple[float, float]:
    """Mean and 95 % half-width of ``a - b`` over seeds (paired: same seed, same adapter init)."""
    by_seed = {(r["variant"], r["seed"]): r[key] for r in runs if key in r}
    diffs = [by_seed[(a, s)] - by_seed[(b, s)] for (v, s) in by_seed if v == a and (b, s) in by_seed]
    return interval(diffs)


def verdict(runs: list[dict], a: str, b: str) -> str:
    mean, half = paired_difference(runs, a, b)
    if math.isnan(half):
        return f"{a} − {b} = {mean:+.3f} ground-truth reward (one seed: no interval)"
    sign = "better than" if mean - half > 0 else "worse than" if mean + half < 0 else "not distinguishable from"
    return f"{a} is **{sign}** {b}: {mean:+.3f} ± {half:.3f} ground-truth reward (paired over seeds, 95 %)"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", default="runs/study")
    ap.add_argument("--doc", default=None, help="write the results page here (e.g. docs/results.md)")
    ap.add_argument("--quick", action="store_true", help="one seed, three variants, 20 steps (CI)")
    args = ap.parse_args(argv)
    cfg = study_config()
    if args.quick:
        cfg = cfg.override(train={"max_steps": 20}, eval={"reward_prompts": 32, "max_pairs": 32})
        variants = variants_for(["mixdpo", "dpo", "filtered_dpo"])
        args.seeds = 1
    else:
        variants = {**variants_for(OBJECTIVES), **ablations(hard_fraction=0.0785)}
    rows = run_comparison(cfg, variants, args.seeds, args.out)
    runs = json.loads((Path(args.out) / "results.json").read_text())["runs"]
    minutes = sum(r["wall_seconds"] for r in runs) / 60
    table = markdown_table(rows, args.seeds)
    print(table)
    if args.doc:
        lines = [
            "# Results on the built-in task", "",
            "Every variant trains the same tiny Llama (SFT warm-up shared by all runs, 4-bit QLoRA, one epoch over "
            "2,000 pairs, lr 5e-4, β = 0.1, cDPO ε = 0.1 where it applies) and is scored on 256 held-out prompts by "
            "the task's exact reward, so no LLM judge is involved. Seeds change the LoRA initialisation and any "
            "random order; the SFT model and the reference cache are shared.", "",
            "Reproduce (resumable):", "", "```bash",
            f".venv/bin/python scripts/builtin_study.py --seeds {args.seeds} --out runs/study --doc docs/results.md",
            "```", "", f"Training and evaluation time of all {len(runs)} runs: {minutes:.1f} min on 2 CPU cores "
            "(plus one shared SFT warm-up of a few seconds).", "", "## Table", "", table,
            "## Does MixDPO beat DPO and filtering here?", "",
            "- " + verdict(runs, "mixdpo", "dpo"), "- " + verdict(runs, "mixdpo", "cdpo"),
            "- " + verdict(runs, "mixdpo", "filtered_dpo"), "- " + verdict(runs, "mixdpo", "curriculum_dpo"),
            "- " + verdict(runs, "mixdpo", "sft"),
            "- ablation, sort key: " + verdict(runs, "mixdpo", "mixdpo_sorted_by_chosen_score"),
            "- ablation, sort key: " + verdict(runs, "mixdpo", "mixdpo_sorted_by_rejected_score"),
            "- ablation, τ sweep: " + verdict(runs, "mixdpo_tau_1.5", "mixdpo"),
            "- ablation, τ sweep: " + verdict(runs, "mixdpo_tau_3", "mixdpo"),
            "- ablation, curriculum: " + verdict(runs, "mixdpo", "mixdpo_shuffled"),
            "- " + verdict(runs, "mixdpo_shuffled", "dpo"), "",
            "## How to read this", "",
            "- The verdicts above are computed from the table when this page is written; a difference is called "
            "better or worse only when its paired 95 % interval excludes zero.",
            "- With the paper's easy→hard order and a cosine schedule, the hard pairs come last, when the learning "
            "rate is close to zero. Routing them to SFT (`mixdpo`) versus training them with DPO "
            "(`curriculum_dpo`) can therefore matter only as much as those last steps do. The τ sweep and "
            "`mixdpo_shuffled` separate the routing effect from the order effect.",
            "- The built-in task's chosen responses are mostly exact answers and the SFT model already solves "
            "about 57 % of held-out prompts exactly. A preference stage has little room to improve the "
            "ground-truth reward here, and most differences are within a few points.",
            "- Δ log p columns are held-out means after minus before (the SFT reference). Falling rejected "
            "log-probs with steady chosen ones is the healthy pattern; both falling is likelihood displacement.", "",
        ]
        Path(args.doc).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
