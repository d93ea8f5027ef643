"""The curriculum designer: order, stages, seed, batch, accumulation and schedule, with the live
timeline, the learning-rate mass by route and the first steps."""
from __future__ import annotations

import dataclasses

import ipywidgets as W
import numpy as np

from mixdpo_kit.core.config import CurriculumConfig, RunConfig, TrainConfig
from mixdpo_kit.core.units import percent
from mixdpo_kit.interface.margin_explorer import MarginExplorer, row_id_column
from mixdpo_kit.interface.panel import SCHEDULES, Panel, html_table, show_figure
from mixdpo_kit.core.steps import StepPlan
from mixdpo_kit.margins.curriculum import ORDERS, CurriculumPlan, lr_mass_by_route, lr_schedule, optimizer_steps
from mixdpo_kit.margins.split import Split
from mixdpo_kit.reports import viz


class CurriculumDesigner(Panel):
    """Order, stages, seed, batch size and accumulation → live timeline and first-steps preview."""

    def __init__(self, margins, hard=None, explorer: MarginExplorer | None = None, row_ids=None,
                 preview_steps: int = 3, train: TrainConfig | None = None, unit: str = "rating points",
                 curriculum: CurriculumConfig | None = None):
        """``train`` / ``curriculum``: the settings to start from (schedule, warm-up, batch; order,
        stages, seed; default: the config's); ``unit``: the margins' unit (followed from the
        explorer when one is given)."""
        self.explorer, self._unit = explorer, unit
        self.margins = np.asarray(margins if explorer is None else explorer.margins, dtype=float)
        self.hard = np.asarray(hard if hard is not None else explorer.split.hard, dtype=bool)
        self.row_ids, self._rows_of = np.arange(len(self.margins)), None  # _rows_of: the pairs row_ids belong to
        if row_ids is not None:
            self.row_ids, self._rows_of = np.asarray(row_ids), explorer and explorer.dataset
        elif explorer is not None and "row_id" in explorer.dataset.column_names:
            self._rows_of = explorer.dataset
            self.row_ids = row_id_column(explorer.dataset)
        self.preview_steps = preview_steps
        self.train, c = train or TrainConfig(), curriculum or CurriculumConfig()
        self.order = W.Dropdown(options=list(ORDERS), value=c.order, description="order")
        self.n_stages = W.IntSlider(value=c.n_stages, min=1, max=10, description="stages")
        self.seed = W.IntText(value=c.seed, description="seed")
        self.batch_size = W.IntSlider(value=self.train.per_device_train_batch_size, min=1, max=64, description="batch")
        self.grad_accum = W.IntSlider(value=self.train.gradient_accumulation_steps, min=1, max=32,
                                      description="grad accum")
        self.schedule = W.Dropdown(options=SCHEDULES, value=self.train.lr_scheduler_type, description="lr schedule")
        self.warmup = W.FloatSlider(value=self.train.warmup_ratio, min=0.0, max=0.5, step=0.05, description="warm-up")
        self.plot = W.Output()
        self.lr_mass = W.HTML()
        self.preview = W.HTML()
        super().__init__()
        for w in (self.order, self.n_stages, self.seed, self.batch_size, self.grad_accum, self.schedule, self.warmup):
            w.observe(lambda _: self.refresh(), names="value")
        if explorer is not None:
            explorer.on_change(self._follow_split)
        self.widget = W.VBox([W.HBox([self.order, self.n_stages, self.seed]), W.HBox([self.batch_size, self.grad_accum]),
                              W.HBox([self.schedule, self.warmup]), self.lr_mass, self.plot,
                              W.HTML("<b>First optimiser steps</b>"), self.preview])
        self.refresh()

    def _follow_split(self, split: Split) -> None:
        self.margins, self.hard = self.explorer.margins, split.hard
        ds = self.explorer.dataset
        if ds is not self._rows_of:  # another pairing rule: other pairs, other source rows (read once per rule)
            self._rows_of = ds
            self.row_ids = row_id_column(ds) if "row_id" in ds.column_names else np.arange(len(ds))
        self.refresh()


    @property
    def plan(self) -> CurriculumPlan:
        return CurriculumPlan(self.margins, self.order.value, self.n_stages.value, self.seed.value)

    def first_steps(self) -> list[dict]:
        """Which pairs the first optimiser steps train on: how many, their margins (first to last),
        their routes, and the first few row ids."""
        order = self.plan.indices(0)
        per_step = self.batch_size.value * self.grad_accum.value
        rows = []
        for step in range(self.preview_steps):
            idx = order[step * per_step: (step + 1) * per_step]
            if len(idx) == 0:
                break
            n_sft, m = int(self.hard[idx].sum()), self.margins[idx]
            ids = ", ".join(str(int(r)) for r in self.row_ids[idx][:4]) + (", …" if len(idx) > 4 else "")
            rows.append({"step": step + 1, "pairs": len(idx),
                         "margins": f"{m.max():.3g} to {m.min():.3g}" if m.max() != m.min() else f"{m[0]:.3g}",
                         "routes": f"{len(idx) - n_sft} preference, {n_sft} SFT", "rows": ids})
        return rows

    def train_settings(self) -> TrainConfig:
        """The training settings this panel plans with."""
        return dataclasses.replace(self.train, per_device_train_batch_size=self.batch_size.value,
                                   gradient_accumulation_steps=self.grad_accum.value,
                                   lr_scheduler_type=self.schedule.value, warmup_ratio=self.warmup.value)

    def mass_with(self, order: str | None = None, schedule: str | None = None) -> dict:
        """The learning-rate mass per route under another order or schedule, without touching the
        panel (what an exercise asks; the panel keeps what it shows and exports)."""
        plan = dataclasses.replace(self.plan, order=order or self.order.value)
        train = dataclasses.replace(self.train_settings(), lr_scheduler_type=schedule or self.schedule.value)
        return lr_mass_by_route(plan, self.hard, train)

    def lines(self) -> list[str]:
        """What the panel shows now, in words: the split, where the first hard pair comes in the
        training order and the learning rate there, and the learning-rate mass of each route."""
        train = self.train_settings()
        steps = optimizer_steps(self.plan, StepPlan.of(train, processes=1))
        n_hard, n = int(self.hard.sum()), len(self.hard)
        lines = [f"split: {n_hard:,} of {n:,} pairs hard ({percent(n_hard / n if n else 0)}), routed to SFT"]
        first = next((k for k, idx in enumerate(steps) if self.hard[idx].any()), None)
        if first is not None:
            lr = lr_schedule(len(steps), train.lr_scheduler_type, train.warmup_ratio)[first]
            lines.append(f"order {self.order.value}: the first hard pair comes at optimiser step {first + 1} of "
                         f"{len(steps)}, when the learning rate is {percent(lr)} of its peak ({train.lr_scheduler_type})")
        m = self.mass
        lines.append(f"learning-rate mass: {percent(m['sft'], 2)} to the SFT route, {percent(m['preference'], 2)} to the "
                     "preference route")
        return lines

    def refresh(self) -> None:
        """Recompute the timeline, the learning-rate mass per route and the preview."""
        train = self.train_settings()
        self.mass = lr_mass_by_route(self.plan, self.hard, train)
        self.lr_mass.value = (f"The SFT route gets <b>{percent(self.mass['sft_share_of_pairs'])}</b> of the pairs and "
                              f"<b>{percent(self.mass['sft'], 2)}</b> of the learning-rate mass (Σ lr over the "
                              f"{self.mass['steps']} optimiser steps); the preference route gets "
                              f"<b>{percent(self.mass['preference'], 2)}</b>.")
        unit = self._unit if self.explorer is None else self.explorer.units[self.explorer.source.value]
        self.figure = viz.curriculum_timeline(self.plan, self.hard, train, unit=unit, mass=self.mass)
        self.preview.value = html_table(self.first_steps())
        show_figure(self.plot, self.figure)
        self._changed(self)

    def apply_to(self, cfg: RunConfig) -> RunConfig:
        """``cfg`` with this panel's curriculum, batch and schedule settings."""
        return cfg.override(curriculum={"order": self.order.value, "n_stages": self.n_stages.value,
                                        "seed": self.seed.value},
                            train={"per_device_train_batch_size": self.batch_size.value,
                                   "gradient_accumulation_steps": self.grad_accum.value,
                                   "lr_scheduler_type": self.schedule.value, "warmup_ratio": self.warmup.value})
