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


def compute_margins(ds: datasets.Dataset, source: str = "ratings") -> np.ndarray:
    """Margins from a named source."""
    if source not in MARGIN_SOURCES:
        raise ValueError(f"unknown margin source {source!r}; choose one of {sorted(MARGIN_SOURCES)}")
    return MARGIN_SOURCES[source](ds)


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
