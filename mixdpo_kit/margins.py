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


MARGIN_SOURCES = {"ratings": rating_margins}


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
