"""The training order: a deterministic plan of pair indices per epoch, and its sampler.

``easy_to_hard`` (the paper's) sorts by margin, largest first; ``staged`` cuts that order into
k buckets and shuffles inside each with a seed; ``random`` and ``hard_to_easy`` are the
baselines. The order of epoch e depends only on (margins, order, stages, seed, e), so a run
resumed from a checkpoint sees exactly the pairs it would have seen.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch

from mixdpo_kit.core.config import CurriculumConfig
from mixdpo_kit.core.errors import UserError
from mixdpo_kit.core.steps import StepPlan

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
            raise UserError(f"unknown curriculum order {self.order!r}; choose one of {ORDERS}")
        if self.n_stages < 1:
            raise UserError(f"n_stages must be >= 1, got {self.n_stages}")

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


def optimizer_steps(plan: CurriculumPlan, steps: StepPlan) -> list[np.ndarray]:
    """The pair indices of every optimiser step, over every process, in order (:class:`StepPlan`:
    the last step of an epoch may be short, several processes repeat the epoch's first pairs to
    even out, ``max_steps > 0`` wins over epochs)."""
    n = len(plan.margins)
    positions = np.asarray(steps.epoch_positions(n), dtype=np.int64)
    orders: dict[int, np.ndarray] = {}
    out = []
    for epoch, start, stop in steps.step_positions(n):
        if epoch not in orders:
            orders[epoch] = plan.indices(epoch)[positions]
        out.append(orders[epoch][start:stop])
    return out


def lr_schedule(n_steps: int, scheduler: str, warmup_ratio: float) -> np.ndarray:
    """The learning rate of each optimiser step relative to the peak, from transformers' own
    scheduler (so it is the schedule the Trainer runs). Read-only: the same schedule is computed
    once (a panel redraws it on every slider move)."""
    return _lr_schedule(int(n_steps), scheduler, float(warmup_ratio))


@functools.lru_cache(maxsize=32)
def _lr_schedule(n_steps: int, scheduler: str, warmup_ratio: float) -> np.ndarray:
    from transformers import get_scheduler

    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched = get_scheduler(scheduler, optimizer, num_warmup_steps=math.ceil(n_steps * warmup_ratio),
                          num_training_steps=n_steps)
    lrs = []
    for _ in range(n_steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        sched.step()
    out = np.asarray(lrs)
    out.flags.writeable = False
    return out


def step_means(values: np.ndarray, steps: list[np.ndarray]) -> np.ndarray:
    """The mean of ``values`` over each step's pair indices (0 for an empty step), in one pass."""
    sizes = np.array([len(idx) for idx in steps], dtype=np.int64)
    out = np.zeros(len(steps))
    full = np.flatnonzero(sizes)
    if len(full):
        starts = np.concatenate([[0], np.cumsum(sizes[full])[:-1]])
        out[full] = np.add.reduceat(values[np.concatenate([steps[i] for i in full])], starts) / sizes[full]
    return out


def lr_mass_by_route(plan: CurriculumPlan, sft_share, train_cfg, steps_done: int | None = None,
                     processes: int | None = None) -> dict:
    """Where the learning rate goes: the share of the total learning-rate mass (the sum of the
    step learning rates) that the SFT and the preference route receive under ``train_cfg``
    (a :class:`~mixdpo_kit.core.config.TrainConfig`). ``sft_share``: each pair's SFT share of its
    loss weight (1 for a hard MixDPO pair, 0 for an easy one). With easy→hard order and a cosine
    schedule to zero the last, hardest steps get almost nothing — this makes that visible.

    ``steps_done``: for a run that stopped early, only its first ``steps_done`` steps count (the
    mass it actually applied, and the share of the pairs it actually trained). ``processes``: how
    many processes train (default: this launch's, :func:`~mixdpo_kit.core.steps.launched_processes`)."""
    t = train_cfg
    geometry = StepPlan.of(t, processes)
    steps = optimizer_steps(plan, geometry)
    lrs = lr_schedule(len(steps), t.lr_scheduler_type, t.warmup_ratio)
    done = len(steps) if steps_done is None else max(0, min(int(steps_done), len(steps)))
    share = np.asarray(sft_share, float)
    per_step_sft = step_means(share, steps[:done])
    total = lrs[:done].sum()
    sft = float((lrs[:done] * per_step_sft).sum() / total) if total > 0 else 0.0
    trained = np.concatenate(steps[:done]) if done else np.zeros(0, int)
    pairs = float(share[trained].mean()) if len(trained) else 0.0
    return {"sft": sft, "preference": 1.0 - sft if done else 0.0, "sft_share_of_pairs": pairs,
            "sft_share_of_data": float(share.mean()) if len(share) else 0.0, "steps": len(steps),
            "steps_trained": done, "pairs_trained": int(len(trained)), "schedule": t.lr_scheduler_type,
            "warmup_ratio": t.warmup_ratio, "processes": geometry.processes}
