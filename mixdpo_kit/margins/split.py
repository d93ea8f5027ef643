"""Difficulty split: a pair is hard (routed to SFT) when its margin is below tau."""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from mixdpo_kit.core.errors import UserError
from mixdpo_kit.core.units import percent


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
            raise UserError(f"quantile must lie in [0, 1], got {quantile}")
        tau = float(np.quantile(m, quantile)) if len(m) else float("nan")
    elif tau is None:
        raise UserError("split_by_margin needs tau or quantile")
    split = Split(hard=m < tau, tau=float(tau), quantile=quantile)
    if warn and len(m):
        if split.n_hard == 0:
            warnings.warn(f"tau={tau:g} leaves no hard pairs: every pair gets the preference loss", stacklevel=2)
        elif split.n_easy == 0:
            warnings.warn(f"tau={tau:g} leaves no easy pairs: every pair gets SFT only", stacklevel=2)
    return split


# The paper's run (UltraFeedback-binarized train_prefs, rating margins, tau = 0.5): 53,748 DPO pairs
# followed by 7,387 SFT pairs (../shared/guide/PAPER.md; the authors' code).
PAPER_HARD, PAPER_PAIRS = 7387, 61135


def grid_step(margins) -> float | None:
    """The step of the grid the margins sit on (0.5 for UltraFeedback's ratings), or None."""
    m = np.asarray(margins, dtype=np.float64)
    for step in (1.0, 0.5, 0.25, 0.1):  # the coarsest that fits: ranks and strengths are whole numbers
        if len(m) and np.allclose(m / step, np.round(m / step), atol=1e-9):
            return step
    return None


def grid_note(margins, tau: float) -> str | None:
    """When τ falls on the margins' grid, what the strict ``<`` decides: how many pairs sit exactly
    on τ and the hard share ``≤`` would give instead. None when τ is off the grid (nothing sits on it)."""
    m = np.asarray(margins, dtype=np.float64)
    step = grid_step(m)
    if step is None or not np.isclose(tau / step, round(tau / step)):
        return None
    below, at = int((m < tau).sum()), int(np.isclose(m, tau).sum())
    if not at:
        return None
    ties = ", the exact ties" if below and below == int((m == 0).sum()) and m.min() >= 0 else ""
    n = len(m)
    return (f"τ = {tau:g} falls on the margins' {step:g}-point grid: margin < {tau:g} makes {below:,} pairs hard"
            f"{ties} ({percent(below / n)}); {at:,} more sit exactly on {tau:g}, so margin ≤ {tau:g} would make "
            f"{below + at:,} hard ({percent((below + at) / n)})")


def paper_comparison(split: Split) -> str:
    """The split's hard share beside the paper's at τ = 0.5 on the full UltraFeedback-binarized set."""
    n = len(split.hard)
    return (f"hard share here {percent(split.n_hard / max(n, 1))} ({split.n_hard:,} of {n:,}); the paper at "
            f"τ = 0.5 on all of UltraFeedback-binarized: {PAPER_HARD:,} of {PAPER_PAIRS:,} "
            f"({percent(PAPER_HARD / PAPER_PAIRS)})")
