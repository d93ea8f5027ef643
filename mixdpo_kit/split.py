"""Difficulty split: a pair is hard (routed to SFT) when its margin is below tau."""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Split:
    """The hard mask and the threshold that produced it."""

    hard: np.ndarray  # bool, one per pair
    tau: float
    quantile: float | None = None

    @property
    def n_hard(self) -> int:
        return int(self.hard.sum())

    @property
    def n_easy(self) -> int:
        return int((~self.hard).sum())

    def summary(self) -> dict:
        """Counts and the threshold, JSON-ready."""
        n = len(self.hard)
        return {"tau": self.tau, "quantile": self.quantile, "n_pairs": n, "n_hard": self.n_hard,
                "n_easy": self.n_easy, "hard_fraction": self.n_hard / n if n else 0.0}


def split_by_margin(margins, tau: float | None = None, quantile: float | None = None, warn: bool = True) -> Split:
    """Hard = ``margin < tau``; with ``quantile`` set, tau is that quantile of the margins
    (``SplitConfig`` holds the defaults; one of the two must be given).

    The rule is strict (``<``) as in the paper, so with tau = 0.5 on ratings in steps of 0.5,
    exactly the ties are hard. Warns when one side is empty: training then degenerates to
    pure SFT or pure preference optimisation, which is still meaningful.
    """
    m = np.asarray(margins, dtype=np.float64)
    if quantile is not None:
        if not 0.0 <= quantile <= 1.0:
            raise ValueError(f"quantile must lie in [0, 1], got {quantile}")
        tau = float(np.quantile(m, quantile)) if len(m) else float("nan")
    elif tau is None:
        raise ValueError("split_by_margin needs tau or quantile")
    split = Split(hard=m < tau, tau=float(tau), quantile=quantile)
    if warn and len(m):
        if split.n_hard == 0:
            warnings.warn(f"tau={tau:g} leaves no hard pairs: every pair gets the preference loss", stacklevel=2)
        elif split.n_easy == 0:
            warnings.warn(f"tau={tau:g} leaves no easy pairs: every pair gets SFT only", stacklevel=2)
    return split
