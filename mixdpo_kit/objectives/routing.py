"""Named objectives: how pairs are routed (SFT weight, preference weight, kept or not), which
preference loss applies, and in which order pairs are trained.

An objective is a small registered entry, not a string branch: ``mixdpo`` routes hard pairs to
SFT; ``dpo`` trains every pair with DPO in random order; ``filtered_dpo`` drops the hard pairs;
``curriculum_dpo`` keeps DPO on every pair but sorts them easy→hard; and so on. ``mixdpo-kit
objectives`` lists them. The route weights are parameters of :class:`~mixdpo_kit.core.config.LossConfig`;
an objective with settings of its own (soft MixDPO's temperature, DPO+NLL's NLL weight) declares
them in a small frozen dataclass, as every preference loss does, and they sit beside the loss's
parameters in the config's ``loss:`` section.

An objective may set defaults for its loss's parameters (MixDPO: the paper's beta 0.01 and
eps 0.1) or pin them (``dpo`` is cDPO with eps = 0). :func:`resolve` writes the parameters that
will run, the loss's and the objective's own, into the config, once, at each entry point (CLI,
``runs.run``, the launcher).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from mixdpo_kit.core.config import LossConfig
from mixdpo_kit.core.errors import UserError
from mixdpo_kit.objectives.losses import get_loss


# A routing function takes the pairs' margins, their split (``hard`` mask and ``tau``, see
# margins.split.Split), the loss config and, when the objective asks, the reference's likelihood
# gap; an objective with settings of its own also gets them, bound, as ``p``.


@dataclass(frozen=True)
class Routing:
    """Per-pair SFT and preference weights, and which pairs are trained at all."""

    sft: np.ndarray
    preference: np.ndarray
    keep: np.ndarray


def logistic(z):
    """1 / (1 + e^-z), elementwise (soft MixDPO's weight; the judge's length model)."""
    return 1.0 / (1.0 + np.exp(-np.asarray(z, float)))


def _full(n: int, value: float) -> np.ndarray:
    return np.full(n, float(value))


def route_hard(margins, split, lc, reference_gap=None) -> Routing:
    """MixDPO: hard pairs (margin < tau) get SFT only, the others the preference loss only."""
    hard = split.hard.astype(float)
    return Routing(lc.sft_weight * hard, lc.preference_weight * (1 - hard), np.ones(len(hard), bool))


@dataclass(frozen=True)
class SoftRoutingParams:
    """Soft MixDPO's setting."""

    soft_temperature: float = 0.5  # T, on the margin's scale


@dataclass(frozen=True)
class NllParams:
    """DPO+NLL's setting."""

    nll_weight: float = 1.0  # the NLL term's weight on every pair


def route_soft(margins, split, lc, reference_gap=None, p: SoftRoutingParams = SoftRoutingParams()) -> Routing:
    """Soft MixDPO: ``w = sigma((margin - tau) / T)``; preference weight w, SFT weight 1 - w."""
    w = logistic((np.asarray(margins, float) - split.tau) / p.soft_temperature)
    return Routing(lc.sft_weight * (1 - w), lc.preference_weight * w, np.ones(len(w), bool))


def route_preference(margins, split, lc, reference_gap=None) -> Routing:
    """The preference loss on every pair."""
    n = len(split.hard)
    return Routing(_full(n, 0), _full(n, lc.preference_weight), np.ones(n, bool))


def route_sft(margins, split, lc, reference_gap=None) -> Routing:
    """SFT on every chosen response."""
    n = len(split.hard)
    return Routing(_full(n, lc.sft_weight), _full(n, 0), np.ones(n, bool))


def route_preference_plus_nll(margins, split, lc, reference_gap=None, p: NllParams = NllParams()) -> Routing:
    """DPO+NLL: the preference loss plus ``nll_weight`` × SFT on every pair."""
    n = len(split.hard)
    return Routing(_full(n, p.nll_weight), _full(n, lc.preference_weight), np.ones(n, bool))


def route_drop_hard(margins, split, lc, reference_gap=None) -> Routing:
    """Filtered DPO: the hard pairs (margin < tau) are dropped, the rest get the preference loss."""
    n = len(split.hard)
    return Routing(_full(n, 0), _full(n, lc.preference_weight), ~split.hard)


def route_hard_only(margins, split, lc, reference_gap=None) -> Routing:
    """Only the hard pairs (margin < tau), with the preference loss: what DPO does to them alone."""
    n = len(split.hard)
    return Routing(_full(n, 0), _full(n, lc.preference_weight), split.hard.copy())


def route_hard_only_sft(margins, split, lc, reference_gap=None) -> Routing:
    """Only the hard pairs (margin < tau), with SFT on their chosen responses: what MixDPO does to them."""
    n = len(split.hard)
    return Routing(_full(n, lc.sft_weight), _full(n, 0), split.hard.copy())


def route_drop_reference_hard(margins, split, lc, reference_gap=None) -> Routing:
    """Selective-DPO-style filter: drop the pairs the reference model finds hardest — the smallest
    per-token log-likelihood gap (chosen − rejected) — as many as the margin split calls hard."""
    gap = np.asarray(reference_gap, float)
    n_drop = split.n_hard
    keep = np.ones(len(gap), bool)
    keep[np.argsort(gap, kind="stable")[:n_drop]] = False
    return Routing(_full(len(gap), 0), _full(len(gap), lc.preference_weight), keep)


@dataclass(frozen=True)
class Objective:
    """A named objective: routing + preference loss + order (+ fixed loss settings)."""

    name: str
    routing: Callable[..., Routing]
    summary: str
    preference: str | None = None  # None: the config's loss.preference
    order: str | None = None  # None: the config's curriculum order
    defaults: dict = field(default_factory=dict)  # loss parameters unless the config sets them
    fixed: dict = field(default_factory=dict)  # loss parameters this objective pins (e.g. eps = 0 for DPO)
    needs_reference_gap: bool = False
    params: type | None = None  # frozen dataclass of the objective's own settings; its defaults

    def own_defaults(self) -> dict:
        """The objective's own settings and their defaults (none for most objectives)."""
        return {} if self.params is None else dataclasses.asdict(self.params())

    def route(self, margins, split, lc, reference_gap=None) -> Routing:
        """Route the pairs under the loss config ``lc``; the objective's own settings come from
        ``lc.params`` (missing ones take their defaults)."""
        if self.params is None:
            return self.routing(margins, split, lc, reference_gap)
        p = self.params(**{k: lc.params[k] for k in self.own_defaults() if k in lc.params})
        return self.routing(margins, split, lc, reference_gap, p)


OBJECTIVES: dict[str, Objective] = {}


def register_objective(name: str, routing, summary: str, **kwargs) -> Objective:
    """Register an objective under ``name``."""
    OBJECTIVES[name] = Objective(name, routing, summary, **kwargs)
    return OBJECTIVES[name]


# The MixDPO paper's loss settings: cDPO with beta 0.01 and eps 0.1.
MIXDPO_PAPER = {"beta": 0.01, "label_smoothing": 0.1}

register_objective("mixdpo", route_hard, "MixDPO: margin < tau → SFT on chosen, else the preference loss; "
                   "curriculum from the config (paper: easy→hard)", defaults=MIXDPO_PAPER)
register_objective("mixdpo_soft", route_soft, "soft MixDPO: weight sigma((margin - tau)/T) on the preference loss, "
                   "the rest on SFT", defaults=MIXDPO_PAPER, params=SoftRoutingParams)
register_objective("preference", route_preference, "the configured preference loss on every pair, configured order")
register_objective("sft", route_sft, "SFT on every chosen response", order="random")
register_objective("dpo", route_preference, "DPO on every pair, shuffled", preference="dpo", order="random",
                   fixed={"label_smoothing": 0.0})
register_objective("cdpo", route_preference, "conservative DPO (label smoothing eps) on every pair, shuffled",
                   preference="dpo", order="random", defaults={"label_smoothing": 0.1})
# The registered preference losses applied to every pair in shuffled order: one entry each.
for _loss, _summary in [
    ("ipo", "IPO on every pair, shuffled"),
    ("hinge", "hinge (SLiC) on every pair, shuffled"),
    ("simpo", "SimPO (reference-free) on every pair, shuffled"),
    ("beta_dpo", "β-DPO: batch-adaptive β with β-guided filtering, shuffled"),
    ("amapo", "AMaPO: instance-adaptive margin (reference-free), shuffled"),
    ("madpo", "MADPO: margin-based per-pair weights on DPO, shuffled"),
    ("gdpo", "GDPO: soft preference labels from the score gap, shuffled"),
    ("da_dpo", "DA-DPO: difficulty re-weighting of DPO, shuffled"),
    ("confpo", "ConfPO: SimPO on low-confidence tokens only, shuffled"),
]:
    register_objective(_loss, route_preference, _summary, preference=_loss, order="random")
register_objective("dpo_nll", route_preference_plus_nll, "DPO + nll_weight × NLL on every pair, shuffled",
                   preference="dpo", order="random", params=NllParams)
register_objective("filtered_dpo", route_drop_hard, "DPO with the hard pairs (margin < tau) dropped, shuffled",
                   preference="dpo", order="random")
register_objective("selective_dpo", route_drop_reference_hard,
                   "DPO without the pairs the reference finds hardest (Selective DPO style), shuffled",
                   preference="dpo", order="random", needs_reference_gap=True)
register_objective("hard_only_dpo", route_hard_only, "DPO on the hard pairs alone (margin < tau), shuffled: "
                   "the likelihood-displacement probe", preference="dpo", order="random")
register_objective("hard_only_sft", route_hard_only_sft, "SFT on the hard pairs' chosen responses alone, shuffled: "
                   "what MixDPO does to the pairs hard_only_dpo trains", order="random")
register_objective("curriculum_dpo", route_preference, "MixDPO without routing: its cDPO on every pair, sorted "
                   "easy→hard", preference="dpo", order="easy_to_hard", defaults=MIXDPO_PAPER)


def get_objective(name: str) -> Objective:
    """The registered objective ``name`` (a clear error lists the others)."""
    if name not in OBJECTIVES:
        raise UserError(f"unknown objective {name!r}; registered: {sorted(OBJECTIVES)}")
    return OBJECTIVES[name]


def preference_of(loss_cfg) -> str:
    """The name of the preference loss an objective trains with (its own, or the config's)."""
    return get_objective(loss_cfg.objective).preference or loss_cfg.preference


def check_loss_params(loss_cfg) -> None:
    """Raise a ``ValueError`` naming the real parameters when the config sets one that neither the
    loss nor the objective has."""
    spec = get_loss(preference_of(loss_cfg))
    own = get_objective(loss_cfg.objective).own_defaults()
    unknown = sorted(set(loss_cfg.params) - set(spec.defaults()) - set(own))
    if unknown:
        settings = f" and the objective's own settings {own}" if own else ""
        raise UserError(f"loss: {unknown} are not parameters of the {spec.name!r} loss (objective "
                        f"{loss_cfg.objective!r}); its parameters and defaults are {spec.defaults()}{settings}")


# Run folders written before objectives declared their own settings recorded these two in every
# loss section; where the run's objective does not own them they were never used.
LEGACY_LOSS_SETTINGS = ("nll_weight", "soft_temperature")


def drop_legacy_loss_settings(config: dict) -> None:
    """Remove from a run folder's config (a plain dict) the loss settings older releases wrote for
    every objective, where the run's objective does not own them."""
    loss = config.get("loss") or {}
    own = get_objective(loss.get("objective", LossConfig.objective)).own_defaults()
    for key in LEGACY_LOSS_SETTINGS:
        if key not in own:
            loss.pop(key, None)


def resolve(cfg):
    """``cfg`` with everything the objective decides written in: its preference loss, its order,
    every loss parameter (the loss's defaults < the objective's defaults < the config < what the
    objective pins) and the objective's own settings, so the saved config says exactly what ran.
    Idempotent."""
    obj = get_objective(cfg.loss.objective)
    name = preference_of(cfg.loss)
    spec = get_loss(name)
    own = {k: v for k, v in obj.defaults.items() if k in spec.defaults()}
    params = {**spec.defaults(), **obj.own_defaults(), **own, **cfg.loss.params, **obj.fixed}
    curriculum = {"order": obj.order} if obj.order is not None else {}
    return cfg.override(loss={"preference": name, **params}, curriculum=curriculum)


def bound_loss(loss_cfg):
    """The resolved config's preference loss with its parameters bound (see ``losses.make_loss``)."""
    spec = get_loss(loss_cfg.preference)
    if not set(spec.defaults()) <= set(loss_cfg.params):
        raise ValueError("the loss config is not resolved: call objectives.resolve(cfg) at the entry point")
    return spec.bind({k: loss_cfg.params[k] for k in spec.defaults()})
