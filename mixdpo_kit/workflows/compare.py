"""Compare objectives (and other variants) × seeds on the same data, SFT model and reference cache.

Each variant/seed trains into ``OUT/<variant>/seed<k>``; a finished run (its ``summary.json``
exists) is read back instead of rerun, so an interrupted comparison resumes where it stopped.
The table reports, as mean ± 95 % interval over seeds (Student's t): the ground-truth reward of
greedy generations, the win rate against the SFT model judged by that reward, held-out
implicit-reward accuracy, and the change of chosen and rejected log-probs. With ``judge.reward_model``
set (any data, not only the built-in task) it adds the win rate and length-controlled win rate
against the SFT model's answers judged by that reward model (:func:`mixdpo_kit.evaluation.judge.judge_policy`).
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np

from mixdpo_kit.core import progress
from mixdpo_kit.core.config import LossConfig, RunConfig
from mixdpo_kit.core.units import comparison
from mixdpo_kit.evaluation.evaluate import win_rate
from mixdpo_kit.objectives.routing import resolve
from mixdpo_kit.reports import viz
from mixdpo_kit.reports.report import read_metrics, write_html
from mixdpo_kit.reports.results import SUMMARY_FILE, RunSummary, as_summary, read_summary
from mixdpo_kit.training.pipeline import sft_warmup

T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
         15: 2.131, 20: 2.086, 30: 2.042}

METRICS = {
    "true_reward": "ground-truth reward",
    "win_rate_vs_sft": "win rate vs SFT",
    "judge_win_rate": "judged win rate vs SFT",
    "judge_lc_win_rate": "judged LC win rate vs SFT",
    "exact_match": "exact match",
    "pref_accuracy": "held-out pref. accuracy",
    "delta_logp_chosen": "Δ log p(chosen)",
    "delta_logp_rejected": "Δ log p(rejected)",
    "lr_mass_sft": "LR mass on SFT route",
}


def interval(values) -> tuple[float, float]:
    """Mean and the half-width of its two-sided 95 % t-interval (NaN for a single value)."""
    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return float(v.mean()), math.nan
    df = len(v) - 1
    t = T_975[max(k for k in T_975 if k <= df)]  # the next lower tabulated df: a slightly wider interval
    return float(v.mean()), float(t * v.std(ddof=1) / math.sqrt(len(v)))


def run_metrics(summary: RunSummary) -> dict[str, float]:
    """The compared numbers of one finished run."""
    summary = as_summary(summary)
    ev = summary.evaluation
    out = {"wall_seconds": summary.wall_seconds if summary.wall_seconds is not None else math.nan}
    if summary.lr_mass is not None:
        out["lr_mass_sft"] = summary.lr_mass.sft
    if ev.true_reward_after is not None:
        before, after = ev.true_reward_before, ev.true_reward_after
        out["true_reward"] = after.mean_reward
        out["exact_match"] = after.exact_match
        out["win_rate_vs_sft"] = win_rate(after.rewards, before.rewards)
        out["sft_true_reward"] = before.mean_reward
    if ev.judge is not None:  # a local reward model's verdict against the SFT model's answers
        for key, field in (("judge_win_rate", "win_rate"), ("judge_lc_win_rate", "lc_win_rate")):
            out[key], out[f"{key}_bootstrap"] = ev.judge[field], ev.judge[f"{field}_ci"]
    if ev.preference is not None:
        out["pref_accuracy"] = ev.preference.reward_accuracy
        out["delta_logp_chosen"] = ev.preference.delta_chosen
        out["delta_logp_rejected"] = ev.preference.delta_rejected
    return out


def paired_difference(runs: list[dict], a: str, b: str, key: str = "true_reward") -> tuple[float, float]:
    """Mean and 95 % half-width of ``a - b`` over seeds (paired: same seed, same adapter init)."""
    by_seed = {(r["variant"], r["seed"]): r[key] for r in runs if key in r}
    diffs = [by_seed[(a, s)] - by_seed[(b, s)] for (v, s) in by_seed if v == a and (b, s) in by_seed]
    return interval(diffs)


def verdict(runs: list[dict], a: str, b: str, markdown: bool = False) -> str:
    """One sentence: is ``a`` better than, worse than or not distinguishable from ``b`` (its paired
    95 % interval of the ground-truth reward difference excludes zero, or not). ``markdown``: the
    verdict in bold, for a Markdown page (plain text otherwise, for printing)."""
    mean, half = paired_difference(runs, a, b)
    if math.isnan(half):
        return f"{a} − {b} = {mean:+.3f} ground-truth reward (one seed: no interval)"
    sign = comparison(mean, half)
    if markdown:
        sign = f"**{sign}**"
    return f"{a} is {sign} {b}: {mean:+.3f} ± {half:.3f} ground-truth reward (paired over seeds, 95 %)"


def table_lines(rows: list[dict]) -> list[str]:
    """A comparison's ground-truth rewards in words, from its own table: each variant with its
    interval, its distance from the SFT model, and which came out highest."""
    rows = [r for r in rows if "true_reward" in r]
    if not rows:
        return []
    sft = rows[0]["sft_true_reward"]
    lines = [f"SFT model (the reference of every run): {sft:.3f} ground-truth reward"]
    for r in sorted(rows, key=lambda r: -r["true_reward"]):
        ci = "" if math.isnan(r["true_reward_ci"]) else f" ± {r['true_reward_ci']:.3f}"
        lines.append(f"{r['variant']}: {r['true_reward']:.3f}{ci} ({r['true_reward'] - sft:+.3f} vs the SFT model, "
                     f"{r['seeds']} seed(s))")
    return lines


def variant_config(base: RunConfig, overrides: dict) -> RunConfig:
    """The resolved config of one variant. A variant that switches the objective starts from that
    objective's own loss parameters (its paper's), not the base objective's, unless it sets them."""
    loss = overrides.get("loss", {})
    if loss.get("objective", base.loss.objective) != base.loss.objective:
        base = dataclasses.replace(base, loss=dataclasses.replace(base.loss, preference=LossConfig.preference,
                                                                  params={}))
    return resolve(base.override(**overrides))


def run_comparison(cfg: RunConfig, variants: dict[str, dict], seeds: int, out_dir: str | Path,
                   on_run=None) -> list[dict]:
    """Train and evaluate every variant × seed (resumable) and write the table and figure.
    ``on_run(text)`` hears each run as it starts ("run 2 of 4: sft_near_ties, seed 0").

    ``variants`` maps a name to config overrides (see :func:`mixdpo_kit.workflows.variants.variants_for`). With the config's
    SFT warm-up enabled, one SFT model is trained once and shared by every run, as are the
    reference-log-prob cache and the reference's evaluation (log-probs and generations).
    """
    from mixdpo_kit.workflows.runs import run

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    base = cfg.override(cache={"dir": str(out / "cache")})
    if base.sft_warmup.enabled:
        sft_path = out / "sft_model"
        if not (sft_path / "config.json").exists():
            sft_path = sft_warmup(base, out)
        base = base.override(model={"name_or_path": str(sft_path)}, sft_warmup={"enabled": False})
    per_run, reference_memo, total = [], {}, len(variants) * seeds
    for name, overrides in variants.items():
        for seed in range(seeds):
            run_dir = out / name / f"seed{seed}"
            if (run_dir / SUMMARY_FILE).exists():
                summary = read_summary(run_dir)
            else:
                run_cfg = variant_config(base, overrides).override(train={"seed": seed}, curriculum={"seed": seed})
                label = f"run {len(per_run) + 1} of {total}: {name}, seed {seed}"
                if on_run is not None:
                    on_run(label)
                with progress.label(label):
                    summary = run(run_cfg, run_dir, reference_memo=reference_memo)
            per_run.append({"variant": name, "seed": seed, **run_metrics(summary)})
    rows = summarise(per_run, list(variants))
    (out / "results.json").write_text(json.dumps({"runs": per_run, "table": rows}, indent=2))
    (out / "results.md").write_text(markdown_table(rows, seeds))
    # The figure shows the best judge available: the exact reward, else the reward-model judge.
    key = next((k for k in ("true_reward", "judge_win_rate") if any(k in r for r in rows)), "pref_accuracy")
    sft = {"true_reward": next((r.get("sft_true_reward") for r in rows if "sft_true_reward" in r), None),
           "judge_win_rate": 0.5}.get(key)
    fig = viz.compare_runs([r["variant"] for r in rows], [r[key] for r in rows],
                           [r[key] - r[f"{key}_ci"] for r in rows], [r[key] + r[f"{key}_ci"] for r in rows],
                           metric=METRICS[key], baseline=sft, baseline_name="SFT model")
    write_html(out / "compare.html", "mixdpo-kit comparison", [fig], {"Results": rows})
    return rows


def summarise(per_run: list[dict], order: list[str]) -> list[dict]:
    """One row per variant: mean and 95 % half-width of every metric over seeds."""
    rows = []
    for name in order:
        runs = [r for r in per_run if r["variant"] == name]
        row = {"variant": name, "seeds": len(runs)}
        for key in list(METRICS) + ["sft_true_reward"]:
            values = [r[key] for r in runs if key in r]
            if values:
                row[key], row[f"{key}_ci"] = interval(values)
            if len(values) == 1 and f"{key}_bootstrap" in runs[0]:
                lo, hi = runs[0][f"{key}_bootstrap"]  # one seed: the interval over prompts instead
                row[f"{key}_ci"] = (hi - lo) / 2
        rows.append(row)
    return rows


def markdown_table(rows: list[dict], seeds: int) -> str:
    """The results as a Markdown table (mean ± 95 % half-width over seeds)."""
    keys = [k for k in METRICS if any(k in r for r in rows)]
    lines = ["| variant | " + " | ".join(METRICS[k] for k in keys) + " |",
             "|---|" + "---|" * len(keys)]
    for r in rows:
        cells = []
        for k in keys:
            if k not in r:
                cells.append("–")
            elif math.isnan(r[f"{k}_ci"]):
                cells.append(f"{r[k]:.3f}")
            else:
                cells.append(f"{r[k]:.3f} ± {r[f'{k}_ci']:.3f}")
        lines.append(f"| {r['variant']} | " + " | ".join(cells) + " |")
    sft = [r["sft_true_reward"] for r in rows if "sft_true_reward" in r]
    note = f"\nSFT model (the shared reference): ground-truth reward {sft[0]:.3f}.\n" if sft else "\n"
    if any("judge_win_rate" in r for r in rows):
        note += ("Judged win rates: the share of prompts on which a local reward model scored the run's answer "
                 "above the SFT model's (0.5 = no change); " + ("with one seed, ± is half the 95 % bootstrap "
                 "interval over prompts.\n" if seeds == 1 else "± is over seeds.\n"))
    return "\n".join(lines) + f"\n\n{seeds} seed(s) per variant; ± is the 95 % t-interval half-width.\n" + note


def heldout_curves(out_dir: str | Path, variants: list[str]) -> tuple[dict, dict]:
    """Held-out chosen/rejected log-prob curves of tracked runs (``eval.track_every``), averaged over
    seeds, and each variant's start → end change with its 95 % half-width over seeds:
    ``({variant: {steps, chosen, rejected}}, {variant: {chosen, chosen_ci, rejected, rejected_ci,
    gap_before, gap_after}})``. Variants without tracked runs are left out."""
    curves, changes = {}, {}
    for name in variants:
        per_seed = []
        for run_dir in sorted((Path(out_dir) / name).glob("seed*")):
            rows = [r for r in read_metrics(run_dir) if "heldout/logps_chosen" in r]
            per_seed.append({r["step"]: (r["heldout/logps_chosen"], r["heldout/logps_rejected"]) for r in rows})
        steps = sorted(set.intersection(*(set(s) for s in per_seed))) if per_seed else []
        if not steps:
            continue
        chosen = [float(np.mean([s[k][0] for s in per_seed])) for k in steps]
        rejected = [float(np.mean([s[k][1] for s in per_seed])) for k in steps]
        curves[name] = {"steps": steps, "chosen": chosen, "rejected": rejected}
        d_chosen = interval([s[steps[-1]][0] - s[steps[0]][0] for s in per_seed])
        d_rejected = interval([s[steps[-1]][1] - s[steps[0]][1] for s in per_seed])
        changes[name] = {"chosen": d_chosen[0], "chosen_ci": d_chosen[1], "rejected": d_rejected[0],
                         "rejected_ci": d_rejected[1], "gap_before": chosen[0] - rejected[0],
                         "gap_after": chosen[-1] - rejected[-1]}
    return curves, changes
