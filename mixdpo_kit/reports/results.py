"""A finished run's results as types: :class:`RunSummary` (``summary.json``), its
:class:`Evaluation` and its :class:`LearningRateMass`, with one reader and one writer.

``summary.json`` keeps the layout released runs have (a run folder written by an older release
loads; fields it lacks are None), and a :class:`RunSummary` still reads like that JSON
(``summary["evaluation"]["preference"]``) for notebooks written against the plain dict.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SUMMARY_FILE = "summary.json"


@dataclass
class GroundTruthReward:
    """The built-in task's exact reward of greedy generations on held-out prompts."""

    mean_reward: float
    exact_match: float
    n: int
    rewards: list[float] = field(default_factory=list)


@dataclass
class PreferenceMetrics:
    """Held-out pairs under the reference (before) and the policy (after): implicit-reward accuracy,
    the mean log-ratio margin and the log-prob means (see ``evaluation.evaluate.preference_metrics``)."""

    pairs: int
    reward_accuracy: float
    logratio_margin: float
    logps_chosen_before: float
    logps_rejected_before: float
    logps_chosen_after: float
    logps_rejected_after: float
    logps_gap_before: float
    logps_gap_after: float

    @property
    def delta_chosen(self) -> float:
        """How far training moved the chosen responses' mean log-prob."""
        return self.logps_chosen_after - self.logps_chosen_before

    @property
    def delta_rejected(self) -> float:
        """How far training moved the rejected responses' mean log-prob."""
        return self.logps_rejected_after - self.logps_rejected_before


@dataclass
class Evaluation:
    """What a run's evaluation measured; each part is None where it did not apply. ``judge`` is the
    local reward-model judge's verdict as ``evaluation.judge`` writes it (its own JSON document)."""

    preference: PreferenceMetrics | None = None
    true_reward_before: GroundTruthReward | None = None
    true_reward_after: GroundTruthReward | None = None
    generations: list[dict] = field(default_factory=list)
    judge: dict | None = None

    @classmethod
    def from_dict(cls, data: Mapping) -> "Evaluation":
        """From ``summary["evaluation"]`` (or ``evaluate_policy``'s dict)."""
        reward = data.get("true_reward") or {}
        pref = data.get("preference")
        return cls(preference=_build(PreferenceMetrics, pref) if pref else None,
                   true_reward_before=_build(GroundTruthReward, reward["before"]) if reward else None,
                   true_reward_after=_build(GroundTruthReward, reward["after"]) if reward else None,
                   generations=list(data.get("generations", [])), judge=data.get("judge"))

    def to_dict(self) -> dict:
        """The JSON layout of ``summary["evaluation"]``."""
        out: dict[str, Any] = {}
        if self.preference is not None:
            out["preference"] = dataclasses.asdict(self.preference)
        if self.true_reward_after is not None:
            out["true_reward"] = {"before": dataclasses.asdict(self.true_reward_before),
                                  "after": dataclasses.asdict(self.true_reward_after)}
        if self.generations:
            out["generations"] = self.generations
        if self.judge is not None:
            out["judge"] = self.judge
        return out


@dataclass
class LearningRateMass:
    """Where the learning rate went (``margins.curriculum.lr_mass_by_route``): the SFT and the
    preference route's shares of the summed step learning rates, the SFT route's share of the pairs
    trained, and the steps and pairs it counts. Runs of older releases lack the last four fields."""

    sft: float
    preference: float
    sft_share_of_pairs: float
    steps: int
    schedule: str
    warmup_ratio: float
    steps_trained: int | None = None
    pairs_trained: int | None = None
    processes: int | None = None
    sft_share_of_data: float | None = None  # the SFT route's share of all the pairs, trained or not

    @property
    def stopped_early(self) -> bool:
        """Whether the run trained fewer steps than planned."""
        return self.steps_trained is not None and self.steps_trained < self.steps

    def to_dict(self) -> dict:
        """The JSON layout of ``summary["lr_mass"]`` (fields an older run lacks stay out)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass
class RunSummary(Mapping):
    """A finished run: its resolved config, data report, split, last training metrics, evaluation,
    learning-rate mass, worked pairs and timings. ``extra``: any other key of ``summary.json``,
    kept as it was. Reads like the JSON too (``summary["evaluation"]``)."""

    evaluation: Evaluation
    config: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)
    split: dict = field(default_factory=dict)
    final_train_metrics: dict = field(default_factory=dict)
    lr_mass: LearningRateMass | None = None
    worked_pairs: list[dict] | None = None
    wall_seconds: float | None = None
    sft_warmup_seconds: float | None = None
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping) -> "RunSummary":
        """From the JSON layout (any release's)."""
        known = {f.name for f in dataclasses.fields(cls)} - {"extra", "evaluation", "lr_mass"}
        mass = data.get("lr_mass")
        return cls(**{k: data[k] for k in known if k in data},
                   evaluation=Evaluation.from_dict(data.get("evaluation") or {}),
                   lr_mass=_build(LearningRateMass, mass) if mass else None,
                   extra={k: v for k, v in data.items() if k not in known | {"evaluation", "lr_mass"}})

    def to_dict(self) -> dict:
        """The JSON layout of ``summary.json`` (unset fields left out)."""
        out = {"config": self.config, "data": self.data, "split": self.split,
               "final_train_metrics": self.final_train_metrics, "evaluation": self.evaluation.to_dict()}
        optional = {"lr_mass": self.lr_mass.to_dict() if self.lr_mass else None, "worked_pairs": self.worked_pairs,
                    "wall_seconds": self.wall_seconds, "sft_warmup_seconds": self.sft_warmup_seconds}
        out.update({k: v for k, v in optional.items() if v is not None})
        return {**out, **self.extra}

    # Read like the JSON document (notebooks written against summary dicts keep working).
    def __getitem__(self, key: str):
        return self.to_dict()[key]

    def __iter__(self):
        return iter(self.to_dict())

    def __len__(self) -> int:
        return len(self.to_dict())


def as_summary(summary: Mapping) -> RunSummary:
    """``summary`` as a :class:`RunSummary` (a plain ``summary.json`` dict is read into one)."""
    return summary if isinstance(summary, RunSummary) else RunSummary.from_dict(summary)


def as_mass(mass: Mapping) -> LearningRateMass:
    """``mass`` as a :class:`LearningRateMass` (the plain dict ``lr_mass_by_route`` returns is read into one)."""
    return mass if isinstance(mass, LearningRateMass) else _build(LearningRateMass, mass)


def read_summary(run_dir: str | Path) -> RunSummary:
    """A run folder's ``summary.json``."""
    return RunSummary.from_dict(json.loads((Path(run_dir) / SUMMARY_FILE).read_text()))


def write_summary(run_dir: str | Path, summary: RunSummary) -> Path:
    """Write ``summary.json``."""
    path = Path(run_dir) / SUMMARY_FILE
    path.write_text(json.dumps(summary.to_dict(), indent=2, default=str))
    return path


def _build(cls, data: Mapping):
    """``cls`` from a JSON mapping, ignoring keys it does not have (a newer or older layout)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})
