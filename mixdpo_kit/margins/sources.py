"""Difficulty margins: one scalar per pair, larger = easier (clearer preference).

Every source is an entry of one registry, ``MARGIN_SOURCES``: a function of the dataset, a
:class:`MarginContext` (lazy access to the policy, the reference cache and the config) and an
optional argument (``column:NAME`` gives ``NAME``). The data sources live here; the model-based
ones (``reward_model``, ``likelihood_gap``, ``ches``) register themselves in :mod:`mixdpo_kit.margins.scoring`.
Adding a source is one decorated function; ``docs/architecture.md`` shows an example.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import datasets
import numpy as np

from mixdpo_kit.core.errors import UserError


class MarginContext:
    """What a margin source may need besides the data, built only when asked for.

    ``cfg``: the run config; ``policy``: a ready policy, or ``build_policy()`` makes one on first
    use (a model-based source on data analysed without a model).
    """

    def __init__(self, cfg, policy=None, build_policy: Callable | None = None):
        self.cfg = cfg
        self._policy, self._build_policy = policy, build_policy

    @property
    def policy(self):
        if self._policy is None:
            if self._build_policy is None:
                raise ValueError("this margin source needs the model, and no policy was given")
            self._policy = self._build_policy()
        return self._policy

    @property
    def tokenizer(self):
        return self.policy.tokenizer


@dataclass(frozen=True)
class MarginSource:
    """A registered margin source."""

    name: str
    fn: Callable[[datasets.Dataset, MarginContext, str | None], np.ndarray]
    summary: str
    needs_tokens: bool = False  # pairs must be tokenised (with the policy's tokenizer) first
    columns: Callable[[str | None], tuple[str, ...]] = lambda arg: ()  # raw columns to keep when loading
    unit: str = "margin units"  # what one unit of a raw margin is, for axis titles


MARGIN_SOURCES: dict[str, MarginSource] = {}


def register_margin_source(name: str, summary: str, needs_tokens: bool = False, columns=None,
                           unit: str = "margin units"):
    """Decorator: register ``fn(dataset, ctx, arg) -> margins`` as the margin source ``name``
    (``name:ARG`` in a config passes ``ARG``); ``unit`` names what its margins are measured in."""
    def wrap(fn):
        MARGIN_SOURCES[name] = MarginSource(name, fn, summary, needs_tokens, columns or (lambda arg: ()), unit)
        return fn
    return wrap


def margin_source(spec) -> tuple[MarginSource, str | None]:
    """The registry entry and argument of a source spec (``ratings``, ``column:NAME``, a callable)."""
    if callable(spec):
        return MarginSource("callable", lambda ds, ctx, arg: spec(ds), "a function of the dataset"), None
    name, _, arg = str(spec).partition(":")
    if name not in MARGIN_SOURCES:
        known = [f"{n}:NAME" if n == "column" else n for n in MARGIN_SOURCES]
        raise UserError(f"unknown margin source {spec!r}; choose one of {known} or pass a function")
    return MARGIN_SOURCES[name], arg or None


def compute_margins(ds: datasets.Dataset, spec="ratings", ctx: MarginContext | None = None) -> np.ndarray:
    """Margins from a registered source spec or a callable ``f(dataset) -> margins``; the result is
    checked: one finite number per pair."""
    source, arg = margin_source(spec)
    m = np.asarray(source.fn(ds, ctx, arg), dtype=np.float64)
    if m.shape != (len(ds),) or not np.isfinite(m).all():
        bad = int((~np.isfinite(m)).sum()) if m.ndim else 0
        raise UserError(f"margin source {source.name!r} must give {len(ds)} finite numbers, got shape {m.shape}"
                        f" with {bad} non-finite")
    return m


def _scores(ds: datasets.Dataset, source: str) -> tuple[np.ndarray, np.ndarray]:
    missing = [c for c in ("score_chosen", "score_rejected") if c not in ds.column_names]
    if missing:
        raise UserError(f"margin source {source!r} needs columns {missing}, found {ds.column_names}; "
                        "choose another margin source for data without ratings")
    return np.asarray(ds["score_chosen"], dtype=np.float64), np.asarray(ds["score_rejected"], dtype=np.float64)


class NoMarginSignal(UserError):
    """The data carries no margin of its own (no ratings, strength, ratio or ranks)."""


def data_signal(ds: datasets.Dataset, arg: str | None = None) -> str:
    """The name of the data's own margin signal (``arg`` picks one where its format has several):
    the format's ``margin_<signal>`` column, else the rating gap where each response is rated."""
    from mixdpo_kit.data.formats import SIGNALS

    carried = [c[len("margin_"):] for c in ds.column_names if c.startswith("margin_") and c[7:] in SIGNALS]
    rated = {"score_chosen", "score_rejected"} <= set(ds.column_names)
    available = carried + (["rating_gap"] if rated else [])
    if arg is not None:
        if arg not in available:
            raise UserError(f"margin source data:{arg}: this data carries {available or 'no margin of its own'}")
        return arg
    if not available:
        raise NoMarginSignal("this data carries no margin of its own (no ratings, preference strength, vote ratio or "
                             "ranks); margin sources that apply: " + ", ".join(applicable_sources(ds)))
    return available[0]


def applicable_sources(ds: datasets.Dataset) -> list[str]:
    """The margin sources that can score this data: the model-based ones, and ``column:NAME`` for
    each numeric column besides the canonical ones."""
    skip = {"row_id", "prompt", "chosen", "rejected"}
    numeric = [c for c, f in ds.features.items() if c not in skip and getattr(f, "dtype", "") in
               ("float32", "float64", "int32", "int64")]
    return ["likelihood_gap", "reward_model (with margins.reward_model)", "ches", *(f"column:{c}" for c in numeric)]


def data_unit(ds: datasets.Dataset, spec: str) -> str:
    """The unit of the ``data`` source's margins on ``ds`` (``spec``: ``data`` or ``data:NAME``)."""
    from mixdpo_kit.data.formats import SIGNALS

    return SIGNALS[data_signal(ds, str(spec).partition(":")[2] or None)].unit


@register_margin_source("data", "the data's own margin: the rating gap, or its format's signal (HelpSteer's "
                        "preference strength, SHP's vote ratio, Nectar's rank gap); data:NAME picks one",
                        unit="the data's units")
def data_margins(ds: datasets.Dataset, ctx=None, arg: str | None = None) -> np.ndarray:
    """The data's own margin signal (see :func:`data_signal`)."""
    signal = data_signal(ds, arg)
    if signal == "rating_gap" and f"margin_{signal}" not in ds.column_names:
        return rating_margins(ds)
    return np.asarray(ds[f"margin_{signal}"], dtype=np.float64)


@register_margin_source("ratings", "score_chosen − score_rejected (the paper's default)", unit="rating points")
def rating_margins(ds: datasets.Dataset, ctx=None, arg=None) -> np.ndarray:
    """``score_chosen - score_rejected`` for every pair."""
    chosen, rejected = _scores(ds, "ratings")
    return chosen - rejected


@register_margin_source("score_chosen", "the chosen response's score (the paper's sort-key ablation)",
                        unit="rating points")
def chosen_score_margins(ds: datasets.Dataset, ctx=None, arg=None) -> np.ndarray:
    """The chosen response's score alone."""
    return _scores(ds, "score_chosen")[0]


@register_margin_source("score_rejected", "minus the rejected response's score (the paper's ablation)",
                        unit="rating points")
def rejected_score_margins(ds: datasets.Dataset, ctx=None, arg=None) -> np.ndarray:
    """Minus the rejected response's score: a worse rejected response makes an easier pair."""
    return -_scores(ds, "score_rejected")[1]


@register_margin_source("column", "a numeric column of the data (column:NAME)", columns=lambda arg: (arg,),
                        unit="the column's units")
def column_margins(ds: datasets.Dataset, ctx=None, arg: str | None = None) -> np.ndarray:
    """A numeric column of the data used as the margin (``source: column:NAME``)."""
    if not arg or arg not in ds.column_names:
        raise UserError(f"margin column {arg!r} not found; columns: {ds.column_names}")
    return np.asarray(ds[arg], dtype=np.float64)


NORMALIZATIONS = ("raw", "zscore", "rank")


def normalize_margins(margins, how: str = "raw") -> np.ndarray:
    """``raw``; ``zscore`` (mean 0, std 1); or ``rank`` (average ranks scaled to [0, 1]) —
    the last two make sources on different scales comparable and tau portable between them."""
    m = np.asarray(margins, dtype=np.float64)
    if how == "raw":
        return m
    if how == "zscore":
        return (m - m.mean()) / (m.std() or 1.0)
    if how == "rank":
        return _ranks(m) / max(len(m) - 1, 1)
    raise UserError(f"unknown margin normalisation {how!r}; choose one of {NORMALIZATIONS}")


NORMALIZED_UNITS = {"zscore": "standard deviations", "rank": "rank, 0–1"}


def margin_unit(spec="ratings", how: str = "raw", ds: datasets.Dataset | None = None) -> str:
    """What a margin from source ``spec`` normalised by ``how`` is measured in (for axis titles);
    the ``data`` source's unit depends on the data (``ds``)."""
    if how in NORMALIZED_UNITS:
        return NORMALIZED_UNITS[how]
    source, _ = margin_source(spec)
    if source.name == "data" and ds is not None:
        return data_unit(ds, spec)
    return source.unit


def margin_stats(margins: np.ndarray) -> dict[str, float]:
    """Count, mean, std, min, quartiles, max and the number of exact ties (margin 0)."""
    m = np.asarray(margins, dtype=np.float64)
    q = np.quantile(m, [0.25, 0.5, 0.75]) if len(m) else [math.nan] * 3
    return {
        "count": int(len(m)), "mean": float(m.mean()), "std": float(m.std()), "min": float(m.min()),
        "q25": float(q[0]), "median": float(q[1]), "q75": float(q[2]), "max": float(m.max()),
        "ties": int((m == 0).sum()),
    }


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks with ties averaged (as Spearman's rho needs)."""
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x), dtype=float)
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return (sums / counts)[inverse]


def rank_correlation(a, b) -> float:
    """Spearman's rank correlation of two margin sources (NaN when either is constant)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) != len(b):
        raise ValueError(f"margin sources differ in length: {len(a)} vs {len(b)}")
    ra, rb = _ranks(a), _ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def correlation_strength(rho: float) -> str:
    """A rank correlation in words, e.g. "weak, positive": how much one ordering tells about the other."""
    r = abs(rho)
    if not np.isfinite(r):
        return "undefined"
    strength = "very weak" if r < 0.1 else "weak" if r < 0.3 else "moderate" if r < 0.6 else "strong"
    return f"{strength}, {'positive' if rho > 0 else 'negative'}" if r >= 0.1 else strength


def agreement(a, b, share: float) -> dict:
    """How far two margin sources agree on the same pairs: Spearman's ρ, and the overlap of the
    pairs each calls hardest at the same ``share`` (the ``share`` with the smallest margins under
    each, ties broken by position): ``{"rho", "hard_both", "hard_a", "overlap"}``, ``overlap`` the
    share of A's hard pairs that B also calls hard (``share`` itself for unrelated sources)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    k = max(1, int(round(share * len(a))))
    hard_a = set(np.argsort(a, kind="stable")[:k].tolist())
    hard_b = set(np.argsort(b, kind="stable")[:k].tolist())
    both = len(hard_a & hard_b)
    return {"rho": rank_correlation(a, b), "hard_a": k, "hard_both": both, "overlap": both / k}
