"""Named variants for comparisons: every registered objective, plus the controls of the built-in study.

A variant is a name and the config overrides that make it, computed from the comparison's base
config (so "as many hard pairs as the base split" means the base split of *your* data). One
registry serves ``mixdpo-kit compare --objectives``, the notebooks and ``scripts/builtin_study.py``:

- every objective by its own name (``mixdpo``, ``dpo``, ``filtered_dpo``, ...);
- ``mixdpo_constant_lr`` / ``curriculum_dpo_constant_lr``: the paper's order with a constant
  learning rate after warm-up, so the hard pairs (last) get their share of the updates and the
  routing decision reaches the weights;
- ``mixdpo_shuffled``: MixDPO's routing without the curriculum (random order);
- ``mixdpo_sorted_by_chosen_score`` / ``mixdpo_sorted_by_rejected_score``: the paper's sort-key
  ablations, with as many hard pairs as the base split;
- ``<objective>_tau_<T>`` (e.g. ``mixdpo_tau_3``): a τ sweep, any objective and any τ.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from mixdpo_kit.core.config import deep_merge
from mixdpo_kit.core.errors import UserError
from mixdpo_kit.objectives.routing import OBJECTIVES


@dataclass(frozen=True)
class Variant:
    """A named set of config overrides; ``overrides(base_cfg) -> {section: {field: value}}``."""

    name: str
    summary: str
    overrides: Callable[[object], dict]
    needs_base: bool = False  # computed from the base config's data (needs ``base=``)


VARIANTS: dict[str, Variant] = {}


def register_variant(name: str, summary: str, needs_base: bool = False):
    """Register ``fn(base_cfg) -> overrides`` under ``name``."""
    def wrap(fn):
        VARIANTS[name] = Variant(name, summary, fn, needs_base)
        return fn
    return wrap


CONSTANT = {"lr_scheduler_type": "constant_with_warmup"}


@register_variant("mixdpo_constant_lr", "MixDPO, easy→hard, constant learning rate after warm-up: the hard "
                                        "pairs get their share of the updates")
def _mixdpo_constant(base) -> dict:
    return {"loss": {"objective": "mixdpo"}, "train": CONSTANT}


@register_variant("curriculum_dpo_constant_lr", "curriculum DPO (DPO on every pair, easy→hard) with a constant "
                                                "learning rate: mixdpo_constant_lr without the routing")
def _curriculum_constant(base) -> dict:
    return {"loss": {"objective": "curriculum_dpo"}, "train": CONSTANT}


@register_variant("mixdpo_shuffled", "MixDPO's routing in random order: the routing without the curriculum")
def _shuffled(base) -> dict:
    return {"loss": {"objective": "mixdpo"}, "curriculum": {"order": "random"}}


def _sorted_by(score: str):
    def overrides(base) -> dict:
        return {"loss": {"objective": "mixdpo"}, "margins": {"source": score},
                "split": {"quantile": hard_share(base)}}
    return overrides


for _score in ("chosen", "rejected"):
    register_variant(f"mixdpo_sorted_by_{_score}_score", f"MixDPO with the {_score} response's score as the "
                     "difficulty (the paper's ablation), as many hard pairs as the base split",
                     needs_base=True)(_sorted_by(f"score_{_score}"))

TAU_SWEEP = re.compile(r"^(?P<objective>.+)_tau_(?P<tau>-?\d+(\.\d+)?)$")


def hard_share(base) -> float:
    """The share of pairs the base config's split marks hard, on its own data and margins."""
    from mixdpo_kit.training.pipeline import analyze_data

    return float(analyze_data(base).split.hard.mean())


def get_variant(name: str) -> Variant:
    """A variant by name: a registered one, an objective, or ``<objective>_tau_<T>``."""
    if name in VARIANTS:
        return VARIANTS[name]
    if name in OBJECTIVES:
        obj = OBJECTIVES[name]
        return Variant(name, obj.summary, lambda base: {"loss": {"objective": obj.name}})
    sweep = TAU_SWEEP.match(name)
    if sweep and sweep["objective"] in OBJECTIVES:
        objective, tau = sweep["objective"], float(sweep["tau"])
        return Variant(name, f"{objective} at τ = {tau:g}",
                       lambda base: {"loss": {"objective": objective}, "split": {"tau": tau, "quantile": None}})
    raise UserError(f"unknown objective or variant {name!r}; objectives: {sorted(OBJECTIVES)}; variants: "
                    f"{sorted(VARIANTS)}; or <objective>_tau_<T> for a τ sweep")


def variants_for(names: list[str], base=None, extra: dict | None = None) -> dict[str, dict]:
    """``{name: overrides}`` for :func:`mixdpo_kit.workflows.compare.run_comparison`. ``base``: the
    comparison's config (needed by variants defined relative to it, e.g. the sort-key ablations);
    ``extra``: overrides added to every variant (e.g. a chosen β and learning rate)."""
    out = {}
    for name in names:
        variant = get_variant(name)
        if base is None and variant.needs_base:
            raise ValueError(f"variant {name!r} is defined relative to the comparison's config: pass base=cfg")
        out[name] = deep_merge(variant.overrides(base), extra or {})
    return out


def describe(names: list[str]) -> list[dict]:
    """One row per name: what the variant runs (for tables in notebooks and the CLI)."""
    return [{"variant": n, "what it does": get_variant(n).summary} for n in names]

