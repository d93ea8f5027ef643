"""The likelihood-displacement experiment: does DPO lower the chosen response's likelihood, and on which pairs?

At each (β, learning rate) setting four arms train from the same SFT model, their held-out chosen
and rejected log-probs tracked during training:

- ``dpo_near_ties``: DPO on the near-tie pairs alone (margin < τ), where the MixDPO paper says DPO
  goes wrong;
- ``sft_near_ties``: what MixDPO does with those same pairs: SFT on their chosen responses;
- ``dpo_all`` and ``mixdpo_all``: DPO and MixDPO on every pair.

The near-tie arms take as many optimiser steps as the all-pair arms (they see their pairs several
times), so every curve spans the same number of updates. :func:`pair_displacement` then asks which
training pairs lost most chosen log-likelihood, and whether those are the ones the reference's CHES
score (:mod:`mixdpo_kit.margins.scoring`) calls most alike.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mixdpo_kit.core.steps import StepPlan
from mixdpo_kit.evaluation.evaluate import pair_logps
from mixdpo_kit.margins.sources import MarginContext, agreement, compute_margins, rank_correlation
from mixdpo_kit.modeling.refcache import ReferenceCache, reference_logps
from mixdpo_kit.workflows.compare import heldout_curves, run_comparison

# Arm name → objective; the near-tie arms train the pairs the split calls hard.
ARMS = {"dpo_near_ties": "hard_only_dpo", "sft_near_ties": "hard_only_sft", "dpo_all": "dpo", "mixdpo_all": "mixdpo"}
NEAR_TIE_ARMS = ("dpo_near_ties", "sft_near_ties")


@dataclass(frozen=True)
class DisplacementSetting:
    """One (β, learning rate) point of the experiment."""

    beta: float
    learning_rate: float

    @property
    def name(self) -> str:
        return f"b{self.beta:g}_lr{self.learning_rate:g}"

    def label(self) -> str:
        """The setting in words, for titles."""
        return f"β = {self.beta:g}, lr = {self.learning_rate:g}"


def run_name(arm: str, setting: DisplacementSetting) -> str:
    """The folder (and comparison variant) name of one arm at one setting."""
    return f"{arm}_{setting.name}"


def all_pair_steps(prep, train_cfg) -> int:
    """How many optimiser steps one run over every pair takes (the near-tie arms' budget)."""
    return StepPlan.of(train_cfg).total_steps(len(prep.margins))


def displacement_variants(settings: list[DisplacementSetting], steps: int, track_every: int = 5) -> dict[str, dict]:
    """``{run name: overrides}`` for :func:`~mixdpo_kit.workflows.compare.run_comparison`: every arm at
    every setting, held-out log-probs tracked every ``track_every`` steps, the near-tie arms capped at
    ``steps`` optimiser steps (:func:`all_pair_steps`)."""
    out = {}
    for s in settings:
        for arm, objective in ARMS.items():
            train = {"learning_rate": s.learning_rate, **({"max_steps": steps} if arm in NEAR_TIE_ARMS else {})}
            out[run_name(arm, s)] = {"loss": {"objective": objective, "beta": s.beta}, "train": train,
                                     "eval": {"track_every": track_every}}
    return out


def run_displacement(cfg, settings: list[DisplacementSetting], seeds: int, out_dir: str | Path,
                     track_every: int = 5, on_run=None):
    """Train every arm at every setting over ``seeds`` (resumable: finished runs are read back) and
    return ``(curves, changes)`` as :func:`~mixdpo_kit.workflows.compare.heldout_curves` gives them,
    keyed by run name. ``on_run(text)`` hears each run as it starts."""
    from mixdpo_kit.training.pipeline import analyze_data

    variants = displacement_variants(settings, all_pair_steps(analyze_data(cfg), cfg.train), track_every)
    run_comparison(cfg, variants, seeds, out_dir, on_run=on_run)
    return heldout_curves(out_dir, list(variants))


def displaced(change: dict) -> str:
    """``"falls"``, ``"rises"`` or ``"no clear change"``: the held-out chosen log-prob's change, called
    only when its 95 % interval over seeds excludes zero (with one seed, by its sign)."""
    half = 0.0 if math.isnan(change["chosen_ci"]) else change["chosen_ci"]
    if change["chosen"] + half < 0:
        return "falls"
    if change["chosen"] - half > 0:
        return "rises"
    return "no clear change"


def change_words(name: str, change: dict, markdown: bool = False) -> str:
    """One sentence: what happened to the held-out chosen and rejected log-probs and their gap
    (``markdown``: the name as code and a fall in bold, for a page)."""
    ci = "" if math.isnan(change["chosen_ci"]) else f" ± {change['chosen_ci']:.3f}"
    gap = change["gap_after"] - change["gap_before"]
    falls = "**falls**" if markdown else "FALLS"
    state = {"falls": f"the chosen log-prob {falls} (likelihood displacement)",
             "rises": "the chosen log-prob rises", "no clear change": "the chosen log-prob does not move beyond "
             "seed noise"}[displaced(change)]
    name = f"`{name}`" if markdown else name
    return (f"{name}: {state}: Δ log p(chosen) = {change['chosen']:+.3f}{ci} nats, Δ log p(rejected) = "
            f"{change['rejected']:+.3f}; the chosen − rejected gap goes {change['gap_before']:.2f} → "
            f"{change['gap_after']:.2f} ({'widens' if gap > 0 else 'shrinks'} by {abs(gap):.2f}).")


def pair_displacement(run_dir: str | Path, near_ties_only: bool) -> dict[str, np.ndarray]:
    """Per training pair of a finished run: the change of the chosen and rejected log-prob sums
    (policy − reference) and the reference's CHES score (length-normalised), with the rating margin.
    ``near_ties_only``: the pairs the split calls hard (what a near-tie arm trained)."""
    from mixdpo_kit.data.tokenization import TokenizationSettings
    from mixdpo_kit.workflows.runs import load_run

    cfg, policy, prep = load_run(run_dir)
    idx = np.flatnonzero(prep.split.hard) if near_ties_only else np.arange(len(prep.dataset))
    ds = prep.dataset.select(idx)
    tok, device = policy.tokenizer, next(policy.model.parameters()).device
    after_c, after_r = pair_logps(policy.model, ds, tok.pad_token_id, cfg.eval.batch_size, device,
                                  cfg.model.share_prompt)
    before_c, before_r = reference_logps(policy, ds, list(range(len(ds))),
                                         TokenizationSettings.from_config(cfg.data).to_dict(),
                                         ReferenceCache(cfg.cache.dir), cfg.eval.batch_size)
    ches = -compute_margins(ds, "ches", MarginContext(cfg, policy))
    return {"delta_chosen": after_c - np.asarray(before_c), "delta_rejected": after_r - np.asarray(before_r),
            "ches": ches, "margin": prep.margins[idx]}


def reference_config(cfg, out_dir: str | Path):
    """``cfg`` on every arm's reference in an experiment in ``out_dir`` (the SFT model it trained, when
    ``cfg`` has a warm-up), with the experiment's caches: for margins computed under that model
    (e.g. ``margins.source: ches``)."""
    out = Path(out_dir)
    cfg = cfg.override(cache={"dir": str(out / "cache")})
    if not cfg.sft_warmup.enabled:
        return cfg
    return cfg.override(model={"name_or_path": str(out / "sft_model")}, sft_warmup={"enabled": False})


def ches_vs_ratings(cfg, out_dir: str | Path) -> dict:
    """The rating margin and minus the CHES score (under the experiment's SFT model in ``out_dir``) of
    every training pair, and how far they agree (:func:`~mixdpo_kit.margins.sources.agreement` at the
    split's hard share): ``{"ratings", "minus_ches", "agreement"}``."""
    from mixdpo_kit.modeling.model import build_policy
    from mixdpo_kit.training.pipeline import analyze_data

    base = reference_config(cfg, out_dir)
    policy = build_policy(base.model, models_dir=base.cache.path("models"))
    prep = analyze_data(base, policy=policy)
    minus_ches = compute_margins(prep.dataset, "ches", MarginContext(base, policy))
    return {"ratings": prep.margins, "minus_ches": minus_ches,
            "agreement": agreement(prep.margins, minus_ches, float(prep.split.hard.mean()))}


def ches_quartiles(pairs: dict[str, np.ndarray]) -> list[dict]:
    """Mean Δ log p(chosen) and Δ log p(rejected) in each quarter of the pairs by CHES (lowest first),
    and Spearman's ρ of CHES with Δ log p(chosen) (negative: the higher the CHES, the more the
    chosen response lost), repeated on every row."""
    order = np.argsort(pairs["ches"], kind="stable")
    rho = rank_correlation(pairs["ches"], pairs["delta_chosen"])
    rows = []
    for q, idx in enumerate(np.array_split(order, 4), start=1):
        rows.append({"CHES quarter": f"Q{q} ({'lowest' if q == 1 else 'highest' if q == 4 else 'middle'})",
                     "pairs": len(idx), "CHES": float(pairs["ches"][idx].mean()),
                     "Δ log p(chosen)": float(pairs["delta_chosen"][idx].mean()),
                     "Δ log p(rejected)": float(pairs["delta_rejected"][idx].mean()),
                     "share displaced": float((pairs["delta_chosen"][idx] < 0).mean()), "ρ(CHES, Δ chosen)": rho})
    return rows


def ches_line(rows: list[dict]) -> str:
    """:func:`ches_quartiles` in one sentence: does the chosen likelihood fall most where CHES is highest?"""
    rho, low, high = rows[0]["ρ(CHES, Δ chosen)"], rows[0], rows[-1]
    pairs = sum(r["pairs"] for r in rows)
    trend = ("the higher a pair's CHES, the more its chosen response lost" if rho <= -0.1 else
             "the higher a pair's CHES, the less its chosen response lost" if rho >= 0.1 else
             "CHES tells little about which chosen responses lost")
    return (f"Spearman ρ(CHES, Δ log p(chosen)) = {rho:.2f} over {pairs} pairs: {trend}. Mean Δ log p(chosen): "
            f"{low['Δ log p(chosen)']:+.2f} nats in the lowest-CHES quarter, {high['Δ log p(chosen)']:+.2f} in the "
            f"highest; chosen log-prob fell on {low['share displaced']:.0%} and {high['share displaced']:.0%} of them.")
