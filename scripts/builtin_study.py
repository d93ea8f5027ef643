"""The known-reward study on the built-in task: MixDPO vs its rivals, the paper's ablations, where
the learning rate goes, and the likelihood-displacement probe.

    .venv/bin/python scripts/builtin_study.py --seeds 5 --out runs/study --doc docs/results.md

Steps: (1) a small beta x lr grid for DPO and MixDPO, judged on the dev prompts (never on the
evaluation prompts); (2) every variant over the seeds with those settings — the other losses with
their own papers' parameters; (3) the page, with verdicts computed from the table. Resumable
(finished runs are read back). ``--quick`` runs one seed of three variants with few steps and no
grid, which CI uses to keep this script working.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

from mixdpo_kit.core.config import preset
from mixdpo_kit.reports.report import page_figure
from mixdpo_kit.reports.viz import heldout_logps
from mixdpo_kit.workflows.compare import T_975, heldout_curves, markdown_table, run_comparison, verdict
from mixdpo_kit.workflows.displacement import change_words, displaced
from mixdpo_kit.workflows.variants import hard_share, variants_for

# From the paper's beta 0.01 up past 1.0, learning rates either side of the earlier choice (1e-4), so
# that a best point on the grid's edge is visible as such (`grid_edges`).
GRID = {"beta": (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0), "learning_rate": (3e-5, 1e-4, 3e-4)}
OWN_PARAMS = ["simpo", "amapo", "confpo", "ipo", "beta_dpo", "madpo", "gdpo", "da_dpo"]  # their papers' settings
DPO_FAMILY = ["dpo", "cdpo", "filtered_dpo", "selective_dpo", "dpo_nll", "hard_only_dpo"]  # DPO's grid choice
MIXDPO_FAMILY = ["mixdpo", "curriculum_dpo", "mixdpo_soft"]  # MixDPO's grid choice
TRACKED = ["dpo", "mixdpo", "hard_only_dpo"]  # held-out log-probs logged during training


def study_config():
    """The demo setup (tiny Llama, shared SFT warm-up, 4-bit QLoRA, one epoch over 2,000 pairs)."""
    return preset("demo").override(train={"learning_rate": 3e-4}, loss={"beta": 1.0})


def choose_settings(cfg, out: Path, seeds: int) -> dict:
    """The grid point with the best mean ground-truth reward on the dev prompts, for DPO and MixDPO."""
    dev = {"eval": {"reward_split": "dev_prompts"}}
    variants = {f"{obj}_b{b}_lr{lr}": {"loss": {"objective": obj, "beta": b}, "train": {"learning_rate": lr}, **dev}
                for obj in ("dpo", "mixdpo") for b in GRID["beta"] for lr in GRID["learning_rate"]}
    rows = {r["variant"]: r for r in run_comparison(cfg, variants, seeds, out / "grid")}
    chosen = {}
    for obj in ("dpo", "mixdpo"):
        best = max((v for v in variants if v.startswith(obj + "_b")), key=lambda v: rows[v]["true_reward"])
        chosen[obj] = {"beta": variants[best]["loss"]["beta"], "learning_rate": variants[best]["train"]["learning_rate"],
                       "dev_reward": rows[best]["true_reward"]}
    chosen["grid"] = {v: rows[v]["true_reward"] for v in variants}
    return chosen


def grid_edges(setting: dict) -> list[str]:
    """Which edges of the grid a chosen setting lies on, in words (empty: interior)."""
    edges = []
    for key, label in (("beta", "β"), ("learning_rate", "lr")):
        values = GRID[key]
        if setting[key] == min(values):
            edges.append(f"the smallest {label} ({min(values):g})")
        elif setting[key] == max(values):
            edges.append(f"the largest {label} ({max(values):g})")
    return edges


ABLATIONS = ["mixdpo_constant_lr", "curriculum_dpo_constant_lr", "mixdpo_shuffled", "mixdpo_sorted_by_chosen_score",
             "mixdpo_sorted_by_rejected_score", "mixdpo_tau_1.5", "mixdpo_tau_3"]  # mixdpo_kit.workflows.variants, MixDPO's choice


def study_variants(chosen: dict, base) -> dict[str, dict]:
    """Every variant (from :mod:`mixdpo_kit.workflows.variants`, as ``compare`` and the notebooks name them)
    with the settings of the module docstring."""
    def settings(family: str, beta: bool = True) -> dict:
        s = chosen[family]
        return {"loss": {"beta": s["beta"]} if beta else {}, "train": {"learning_rate": s["learning_rate"]}}

    v = {**variants_for(MIXDPO_FAMILY, base, settings("mixdpo")), **variants_for(DPO_FAMILY, base, settings("dpo")),
         **variants_for(["sft", *OWN_PARAMS], base, settings("dpo", beta=False)),
         **variants_for(ABLATIONS, base, settings("mixdpo"))}
    for name in TRACKED:
        v[name]["eval"] = {"track_every": 5}
    return v


def hard_pairs_words(by: dict, changes: dict) -> list[str]:
    """What DPO does on all pairs and on the hard pairs alone, in numbers from the table and the curves."""
    if "hard_only_dpo" not in by or "dpo" not in by:
        return []
    h, d = by["hard_only_dpo"], by["dpo"]
    on_all = ""
    if "dpo" in changes:
        moved = {"falls": "lowers the held-out chosen log-prob (displacement)",
                 "rises": "raises the held-out chosen log-prob",
                 "no clear change": "leaves the held-out chosen log-prob where it was"}[displaced(changes["dpo"])]
        on_all = f"at the chosen setting, DPO on all pairs {moved}. "
    return [f"In plain words: {on_all}On the small-margin pairs alone, DPO's held-out preference accuracy is "
            f"{h['pref_accuracy']:.1%} (DPO on all pairs: {d['pref_accuracy']:.1%}; 50 % is chance) and its "
            f"ground-truth reward {h['true_reward']:.3f} (SFT model: {h['sft_true_reward']:.3f}): their rating "
            "order agrees with the true reward about half the time ([task.md](task.md)). "
            "[displacement.md](displacement.md) trains these pairs at six settings, including the paper's β = 0.01, "
            "next to what MixDPO does with them.", ""]


def power(runs: list[dict], pairs: list[tuple[str, str]], seeds: int) -> tuple[float, float, float]:
    """The median spread (SD) of paired differences, the 95 % half-width it gives at ``seeds``, and
    the smallest difference detected with 80 % power (two-sided 5 %, t approximation)."""
    sds = []
    for a, b in pairs:
        by_seed = {(r["variant"], r["seed"]): r["true_reward"] for r in runs}
        d = [by_seed[(a, s)] - by_seed[(b, s)] for s in range(seeds) if (a, s) in by_seed and (b, s) in by_seed]
        if len(d) > 1:
            sds.append(float(np.std(d, ddof=1)))
    sd = float(np.median(sds)) if sds else math.nan
    t = T_975[max(k for k in T_975 if k <= max(seeds - 1, 1))]
    t80 = {1: 1.376, 2: 1.061, 3: 0.978, 4: 0.941, 5: 0.920, 6: 0.906, 7: 0.896, 8: 0.889, 9: 0.883}.get(seeds - 1,
                                                                                                      0.85)
    return sd, t * sd / math.sqrt(seeds), (t + t80) * sd / math.sqrt(seeds)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--grid-seeds", type=int, default=2)
    ap.add_argument("--out", default="runs/study")
    ap.add_argument("--doc", default=None, help="write the results page here (e.g. docs/results.md)")
    ap.add_argument("--quick", action="store_true", help="one seed, three variants, 20 steps, no grid (CI)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    cfg = study_config()
    if args.quick:
        cfg = cfg.override(train={"max_steps": 20}, eval={"reward_prompts": 32, "max_pairs": 32})
        args.seeds = 1
        chosen = {k: {"beta": 1.0, "learning_rate": 3e-4, "dev_reward": math.nan} for k in ("dpo", "mixdpo")}
        variants = {k: v for k, v in study_variants(chosen, cfg).items() if k in ("mixdpo", "dpo", "filtered_dpo")}
    else:
        chosen = choose_settings(cfg, out, args.grid_seeds)
        variants = study_variants(chosen, cfg)
    rows = run_comparison(cfg, variants, args.seeds, out)
    runs = json.loads((out / "results.json").read_text())["runs"]
    curves, changes = heldout_curves(out, [v for v in TRACKED if v in variants])
    # Training and evaluation time of every run (grid included), read back from the runs themselves,
    # so a resumed study reports the same figure.
    grid_file = out / "grid" / "results.json"
    grid_runs = json.loads(grid_file.read_text())["runs"] if grid_file.exists() and not args.quick else []
    minutes = sum(r["wall_seconds"] for r in runs + grid_runs) / 60
    table = markdown_table(rows, args.seeds)
    print(table)
    if args.doc:
        doc = Path(args.doc)
        figure_note = write_figure(curves, doc)
        doc.write_text(render(args, chosen, rows, runs, table, changes, figure_note, minutes, hard_share(cfg)))
    return 0


def write_figure(curves: dict, doc: Path) -> str:
    """The mechanism figure as PNG beside the page (HTML when no image export is installed)."""
    if not curves:
        return "(no tracked runs)"
    return page_figure(heldout_logps(curves), doc, "displacement", "held-out log-probs during training", height=380)


def grid_table(chosen: dict) -> list[str]:
    """The grid's dev-prompt rewards, one row per beta, one column per learning rate and objective."""
    if "grid" not in chosen:
        return []
    head = [f"{obj} lr {lr:g}" for obj in ("dpo", "mixdpo") for lr in GRID["learning_rate"]]
    lines = ["Ground-truth reward on the dev prompts (mean over the grid seeds):", "",
             "| β | " + " | ".join(head) + " |", "|---|" + "---|" * len(head)]
    for b in GRID["beta"]:
        cells = [f"{chosen['grid'][f'{obj}_b{b}_lr{lr}']:.3f}" for obj in ("dpo", "mixdpo") for lr in GRID["learning_rate"]]
        lines.append(f"| {b} | " + " | ".join(cells) + " |")
    lines.append("")
    for obj in ("dpo", "mixdpo"):
        edges = grid_edges(chosen[obj])
        scores = sorted((r for v, r in chosen["grid"].items() if v.startswith(obj + "_b")), reverse=True)
        where = ("on the grid's edge at " + " and ".join(edges)) if edges else "inside the grid on both axes"
        lines.append(f"- {obj}'s choice (β = {chosen[obj]['beta']:g}, lr = {chosen[obj]['learning_rate']:g}) lies "
                     f"{where}; the best three points are within {scores[0] - scores[2]:.3f} of each other.")
    return lines + [""]


def render(args, chosen, rows, runs, table, changes, figure_note, minutes, share) -> str:
    by = {r["variant"]: r for r in rows}
    lines = [
        "# Results on the built-in task", "",
        "Every variant trains the same tiny Llama (SFT warm-up shared by all runs, 4-bit QLoRA, one epoch over "
        "2,000 pairs) and is scored on 256 held-out evaluation prompts by the task's exact reward — no LLM judge. "
        "The task and what it can show are on [task.md](task.md), measured before this study. Seeds change the "
        "LoRA initialisation and any random order; the SFT model, the reference cache and the reference's "
        "evaluation are shared.", "",
        "Reproduce (resumable):", "", "```bash",
        f".venv/bin/python scripts/builtin_study.py --seeds {args.seeds} --out runs/study --doc docs/results.md",
        "```", "", f"Training and evaluation of all {len(runs)} runs and the grid's {len(chosen.get('grid', {})) * args.grid_seeds} "
        f"took {minutes:.1f} min on 2 CPU cores (plus one shared SFT warm-up of a few seconds).", "",
        "## Settings: fair baselines", "",
        f"- DPO and MixDPO: β and learning rate from the grid β ∈ {list(GRID['beta'])} × lr ∈ "
        f"{list(GRID['learning_rate'])} ({args.grid_seeds} seeds per point), chosen by ground-truth reward on the "
        "**dev prompts**, a split never used for reporting. "
        f"DPO: β = {chosen['dpo']['beta']}, lr = {chosen['dpo']['learning_rate']:g}; MixDPO: β = "
        f"{chosen['mixdpo']['beta']}, lr = {chosen['mixdpo']['learning_rate']:g} (cDPO ε = 0.1 as in its paper).",
        f"- The DPO variants ({', '.join(DPO_FAMILY)}) and SFT use DPO's choice; curriculum-only DPO, soft MixDPO, "
        "the constant-schedule runs and the ablations use MixDPO's.",
        f"- {', '.join(OWN_PARAMS)} run with their own papers' parameters (`mixdpo-kit objectives` lists them) at "
        "DPO's learning rate.", "",
        "The grid contains the paper's β = 0.01 and runs past 1.0 on purpose: an earlier grid (β 0.1–1.0 × lr "
        "1e-4–3e-4, without the paper's β) put its choice, β = 1.0 and lr = 1e-4, in its corner, so nobody could "
        "tell whether a better setting lay outside it.", "",
        *grid_table(chosen),
        "## Table", "", table,
        "`LR mass on SFT route` is the share of the total learning-rate mass (Σ lr over the steps) that the "
        "SFT-routed pairs receive.", "",
        "## Where the learning rate goes", "",
    ]
    if "mixdpo" in by and "lr_mass_sft" in by["mixdpo"]:
        lines += [
            f"With the paper's easy→hard order and a cosine schedule, MixDPO's hard pairs ({share:.1%} of the "
            f"pairs) receive **{by['mixdpo']['lr_mass_sft']:.2%}** of the learning-rate mass: they arrive last, when "
            "the rate has decayed to almost zero (the paper's own run gives its 12 % hard pairs about 0.39 %). "
            "Routing them to SFT or to DPO can only matter as much as those steps do."
            + (f" With a constant rate after warm-up (`mixdpo_constant_lr`) they receive "
               f"{by['mixdpo_constant_lr']['lr_mass_sft']:.1%}, and shuffling (`mixdpo_shuffled`) spreads them "
               f"over the run ({by['mixdpo_shuffled']['lr_mass_sft']:.1%})." if "mixdpo_constant_lr" in by else ""),
            "",
        ]
    lines += ["## Verdicts (computed from the runs when this page was written)", ""]
    pairs = [("mixdpo", "dpo"), ("mixdpo", "cdpo"), ("mixdpo", "filtered_dpo"), ("mixdpo", "curriculum_dpo"),
             ("mixdpo", "sft"), ("mixdpo_constant_lr", "curriculum_dpo_constant_lr"), ("mixdpo_constant_lr", "dpo"),
             ("mixdpo", "mixdpo_sorted_by_chosen_score"), ("mixdpo", "mixdpo_sorted_by_rejected_score"),
             ("mixdpo_tau_1.5", "mixdpo"), ("mixdpo_tau_3", "mixdpo"), ("mixdpo", "mixdpo_shuffled"),
             ("dpo", "sft")]
    pairs = [(a, b) for a, b in pairs if a in by and b in by]
    lines += ["- " + verdict(runs, a, b, markdown=True) for a, b in pairs]
    sd, half, mdd = power(runs, pairs, args.seeds)
    lines += ["", "## Power", "",
              f"{args.seeds} seed(s) per variant. The median standard deviation of a paired difference across these "
              f"comparisons is {sd:.3f} ground-truth reward, so a 95 % interval is about ±{half:.3f} wide: smaller "
              f"differences cannot be told from zero here, and a true difference of {mdd:.3f} is detected with 80 % "
              "power. Differences between objectives on this task are mostly smaller than that. One seed's paired "
              f"difference, as a notebook measures it, varies by about ±{1.96 * sd:.3f} (95 %) around the true one.",
              "",
              "## The mechanism: held-out log-probs during training", "", figure_note, "",
              *["- " + change_words(name, c, markdown=True) for name, c in changes.items()], "",
              *hard_pairs_words(by, changes),
              "Measured on 64 held-out pairs every 5 optimiser steps (mean over seeds). `hard_only_dpo` trains DPO on "
              "the small-margin pairs alone, where the paper says DPO suffers most.", "",
              "## How to read this", "",
              "- A difference is called better or worse only when its paired 95 % interval excludes zero.",
              "- The constant-schedule pair (`mixdpo_constant_lr` vs `curriculum_dpo_constant_lr`) keeps the paper's "
              "order but gives the hard pairs their share of the learning rate, so it separates the routing effect "
              "from the schedule; `mixdpo_shuffled` separates it from the order.",
              "- Δ log p columns are held-out means after minus before (the SFT reference). A falling chosen "
              "log-prob is likelihood displacement.",
              "- On your own data, try a τ sweep, the constant-schedule variant and the shuffled control before "
              "concluding anything about routing.", ""]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
