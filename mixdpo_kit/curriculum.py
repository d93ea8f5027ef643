"""The training order: a deterministic plan of pair indices per epoch, and its sampler.

``easy_to_hard`` (the paper's) sorts by margin, largest first; ``staged`` cuts that order into
k buckets and shuffles inside each with a seed; ``random`` and ``hard_to_easy`` are the
baselines. The order of epoch e depends only on (margins, order, stages, seed, e), so a run
resumed from a checkpoint sees exactly the pairs it would have seen.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mixdpo_kit.config import CurriculumConfig

ORDERS = ("easy_to_hard", "staged", "random", "hard_to_easy")


@dataclass(frozen=True)
class CurriculumPlan:
    """Which pair comes when, for every epoch."""

    margins: np.ndarray
    order: str = CurriculumConfig.order
    n_stages: int = CurriculumConfig.n_stages
    seed: int = CurriculumConfig.seed

    def __post_init__(self):
        if self.order not in ORDERS:
            raise ValueError(f"unknown curriculum order {self.order!r}; choose one of {ORDERS}")
        if self.n_stages < 1:
            raise ValueError(f"n_stages must be >= 1, got {self.n_stages}")

    def _easy_first(self) -> np.ndarray:
        # Stable sort on -margin: ties keep the data order, so the plan is reproducible.
        return np.argsort(-np.asarray(self.margins, dtype=np.float64), kind="stable")

    def stages(self) -> np.ndarray:
        """Stage number (0 = easiest bucket) of each position in the easy-first order."""
        n = len(self.margins)
        return np.minimum(np.arange(n) * self.n_stages // max(n, 1), self.n_stages - 1)

    def indices(self, epoch: int = 0) -> np.ndarray:
        """Pair indices in training order for ``epoch``."""
        rng = np.random.default_rng([self.seed, epoch])
        if self.order == "easy_to_hard":
            return self._easy_first()
        if self.order == "hard_to_easy":
            return np.argsort(np.asarray(self.margins, dtype=np.float64), kind="stable")
        if self.order == "random":
            return rng.permutation(len(self.margins))
        easy_first, stage = self._easy_first(), self.stages()
        return np.concatenate([rng.permutation(easy_first[stage == s]) for s in range(self.n_stages)])


class CurriculumSampler(torch.utils.data.Sampler):
    """Yields a :class:`CurriculumPlan`'s order; ``set_epoch`` is called by the Trainer."""

    def __init__(self, plan: CurriculumPlan):
        self.plan = plan
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        return iter(self.plan.indices(self.epoch).tolist())

    def __len__(self) -> int:
        return len(self.plan.margins)
