"""Difficulty margins: one scalar per pair, larger = easier (clearer preference)."""
from __future__ import annotations

import math

import datasets
import numpy as np


def rating_margins(ds: datasets.Dataset) -> np.ndarray:
    """``score_chosen - score_rejected`` for every pair (the paper's default source)."""
    missing = [c for c in ("score_chosen", "score_rejected") if c not in ds.column_names]
    if missing:
        raise ValueError(
            f"margin source 'ratings' needs columns {missing}, found {ds.column_names}; "
            "choose another margin source for data without ratings"
        )
    return np.asarray(ds["score_chosen"], dtype=np.float64) - np.asarray(ds["score_rejected"], dtype=np.float64)


def chosen_score_margins(ds: datasets.Dataset) -> np.ndarray:
    """The chosen response's score alone (the paper's "sorted by chosen score" ablation)."""
    return np.asarray(ds["score_chosen"], dtype=np.float64)


def rejected_score_margins(ds: datasets.Dataset) -> np.ndarray:
    """Minus the rejected response's score: a worse rejected response makes an easier pair
    (the paper's "sorted by rejected score" ablation)."""
    return -np.asarray(ds["score_rejected"], dtype=np.float64)


MARGIN_SOURCES = {"ratings": rating_margins, "score_chosen": chosen_score_margins,
                  "score_rejected": rejected_score_margins}
MODEL_SOURCES = ("reward_model", "likelihood_gap")  # computed with a model: see mixdpo_kit.scoring


def column_margins(ds: datasets.Dataset, column: str) -> np.ndarray:
    """A numeric column of the data used as the margin (``source: column:NAME``)."""
    if column not in ds.column_names:
        raise ValueError(f"margin column {column!r} not found; columns: {ds.column_names}")
    return np.asarray(ds[column], dtype=np.float64)


def compute_margins(ds: datasets.Dataset, source="ratings") -> np.ndarray:
    """Margins from a named data source, ``column:NAME``, or a callable ``f(dataset) -> margins``.

    A callable's output is checked: one finite number per pair.
    """
    if callable(source):
        m = np.asarray(source(ds), dtype=np.float64)
        if m.shape != (len(ds),) or not np.isfinite(m).all():
            raise ValueError(f"a margin function must return {len(ds)} finite numbers, got shape {m.shape}"
                             f" with {int((~np.isfinite(m)).sum()) if m.ndim else 0} non-finite")
        return m
    if source.startswith("column:"):
        return column_margins(ds, source[len("column:"):])
    if source not in MARGIN_SOURCES:
        known = sorted(MARGIN_SOURCES) + list(MODEL_SOURCES) + ["column:NAME"]
        raise ValueError(f"unknown margin source {source!r}; choose one of {known}")
    return MARGIN_SOURCES[source](ds)


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
    raise ValueError(f"unknown margin normalisation {how!r}; choose one of {NORMALIZATIONS}")


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
