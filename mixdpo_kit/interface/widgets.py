"""ipywidgets panels: explore margins, design the curriculum, launch training.

Each panel keeps its latest plotly figure in ``.figure`` and shows it in an ``Output`` widget
(core ipywidgets only, so it works in JupyterLab and in Colab). ``apply_to(cfg)`` copies a
panel's choices into a :class:`~mixdpo_kit.core.config.RunConfig`, which is how the split and the
curriculum chosen in the first two panels flow into the launcher.
"""
from __future__ import annotations

import dataclasses
import html
import os
import threading
from pathlib import Path

import ipywidgets as W
import numpy as np
import plotly.io as pio
from transformers import TrainerCallback

from mixdpo_kit.core.config import CurriculumConfig, RunConfig, SplitConfig, TrainConfig
from mixdpo_kit.core.units import duration, percent, threshold
from mixdpo_kit.data.chat import as_text
from mixdpo_kit.margins.curriculum import ORDERS, CurriculumPlan, lr_mass_by_route
from mixdpo_kit.margins.sources import margin_source, margin_unit
from mixdpo_kit.margins.split import Split, grid_note, split_by_margin
from mixdpo_kit.modeling.cost import RunTooLarge, check_run_size
from mixdpo_kit.modeling.model import MODES
from mixdpo_kit.objectives.losses import PREFERENCE_LOSSES
from mixdpo_kit.objectives.routing import OBJECTIVES, resolve
from mixdpo_kit.reports import viz
from mixdpo_kit.reports.explain import result_lines, worked_pairs_table
from mixdpo_kit.reports.results import RunSummary, as_summary
from mixdpo_kit.workflows.displacement import ARMS, DisplacementSetting, change_words, run_displacement, run_name


SCHEDULES = ["cosine", "linear", "constant_with_warmup", "constant"]


def figure_output(fig) -> dict:
    """A notebook display_data output holding ``fig`` as plotly's mimetype (plus what the active
    renderer adds, e.g. HTML on Colab)."""
    bundle = {}
    for name in ["plotly_mimetype", *pio.renderers.default.split("+")]:
        renderer = pio.renderers[name] if name in pio.renderers else None
        if hasattr(renderer, "to_mimebundle"):
            bundle.update(renderer.to_mimebundle(fig.to_dict()))
    return {"output_type": "display_data", "data": bundle, "metadata": {}}


def show_figure(output: W.Output, fig) -> None:
    """Replace an Output widget's content with ``fig``.

    The outputs are set as data rather than through ``display``: a plotly figure's
    ``_ipython_display_`` would print into whichever cell is running, and an Output's context
    manager does not capture from the launcher's training thread.
    """
    output.outputs = (figure_output(fig),)


def _text(value, limit: int = 120) -> str:
    value = as_text(value)
    return html.escape(value if len(value) <= limit else value[: limit - 1] + "…")


def html_table(rows: list[dict], limit: int = 120, wrap: bool = False) -> str:
    """A small HTML table of dict rows (values escaped and cut at ``limit`` characters; ``wrap``:
    keep the texts' line breaks, for multi-paragraph answers)."""
    if not rows:
        return "<i>none</i>"
    cols = list(rows[0])
    # Cell borders and padding: short answers side by side ("6 5 6 2" | "6 5 6 2") must not read as one.
    cell = ("style='text-align:left;padding:2px 10px;border:1px solid #ddd;vertical-align:top"
            + (";white-space:pre-wrap;max-width:32em" if wrap else "") + "'")
    head = "".join(f"<th {cell}>{html.escape(str(c))}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td {cell}>{_text(r[c], limit)}</td>" for c in cols) + "</tr>" for r in rows)
    return f"<table style='border-collapse:collapse'><tr>{head}</tr>{body}</table>"


def pairs_side_by_side(dataset, margins, n: int = 3, seed: int = 0) -> dict[str, list[dict]]:
    """``n`` pairs at the smallest margins and ``n`` at the largest, drawn with ``seed``: prompt, both
    answers and both ratings, for a person to judge whether small-margin labels can be trusted."""
    m = np.asarray(margins, dtype=float)
    rng = np.random.default_rng(seed)
    out = {}
    for name, pool in (("smallest margins", np.flatnonzero(m == m.min())), ("largest margins",
                                                                          np.argsort(-m, kind="stable")[:max(4 * n, n)])):
        rows = []
        for i in sorted(rng.choice(pool, size=min(n, len(pool)), replace=False).tolist()):
            row = dataset[int(i)]
            rows.append({"margin": f"{m[i]:g}", "ratings (chosen / rejected)": f"{row.get('score_chosen')} / "
                         f"{row.get('score_rejected')}", "prompt": row["prompt"], "chosen": row["chosen"],
                         "rejected": row["rejected"]})
        out[name] = rows
    return out


def _registered_unit(source: str, dataset=None) -> str:
    try:
        return margin_unit(source, ds=dataset)
    except ValueError:
        return "margin units"


def results_html(summary: RunSummary) -> str:
    """A finished run for a panel: headline numbers, generations before/after, the worked pairs."""
    summary = as_summary(summary)
    lines = "".join(f"<li>{html.escape(line)}</li>" for line in result_lines(summary))
    return (f"<ul>{lines}</ul><b>Generations before (reference) and after training</b>"
            f"{html_table(summary.evaluation.generations)}"
            f"<b>Two pairs through the routed loss</b>{html_table(worked_pairs_table(summary.worked_pairs or []))}")


class MarginExplorer:
    """Margin source, τ slider (absolute or quantile), live histogram, counts and border examples."""

    def __init__(self, dataset, margins, tau: float | None = None, n_examples: int = 3, units: dict | None = None):
        """``margins``: one array, or ``{source name: array}`` to choose between sources, or
        ``{name: (pairs, array, config overrides)}`` where each choice has pairs of its own (K-wise
        data paired by different rules: :func:`mixdpo_kit.workflows.analysis.pairing_sources`);
        ``tau``: the starting threshold (default: the config's); ``units``: ``{source name: unit}``
        for the axis (default: the registered source's unit)."""
        given = dict(margins) if isinstance(margins, dict) else {"data": margins}  # the data's own margins
        # name -> (pairs, margins, what apply_to writes into a config)
        self.sources = {name: value if isinstance(value, tuple) else (dataset, value, {"margins": {"source": name}})
                        for name, value in given.items()}
        self.units = {name: (units or {}).get(name) or _registered_unit(name, pairs)
                      for name, (pairs, _, _) in self.sources.items()}
        self.n_examples = n_examples
        self.source = W.Dropdown(options=list(self.sources), description="source")
        self.mode = W.ToggleButtons(options=["absolute", "quantile"], description="τ as")
        self.tau = W.FloatSlider(description="τ", continuous_update=False, readout_format=".2f")
        self.counts = W.HTML()
        self.plot = W.Output()
        self.examples = W.HTML()
        self._listeners = []
        self._split: Split | None = None
        self._source_before = None
        self._decimals = 2
        self._configure_slider(SplitConfig.tau if tau is None else tau)
        self.tau.observe(lambda _: self.refresh(), names="value")
        for w in (self.source, self.mode):
            w.observe(lambda _: self._configure_slider(), names="value")
        self.widget = W.VBox([W.HBox([self.source, self.mode]), self.tau, self.counts, self.plot,
                              W.HTML("<b>Pairs just below and just above τ</b>"), self.examples])
        self.refresh()

    @property
    def margins(self) -> np.ndarray:
        return np.asarray(self.sources[self.source.value][1], dtype=float)

    @property
    def dataset(self):
        """The pairs of the current source (each pairing rule has its own)."""
        return self.sources[self.source.value][0]

    def _configure_slider(self, value: float | None = None) -> None:
        """Fit the slider to the mode and source; with no ``value``, keep the current share of hard
        pairs (a new mode or margin scale must not silently change the split), or τ itself when the
        new source is the same margin on other pairs (another pairing rule of K-wise data: its own
        hard share at the same τ is the point of switching)."""
        m = self.margins
        share = None if self._split is None else float(self._split.hard.mean())
        before, self._source_before = self._source_before, self.source.value
        signal = lambda name: self.sources[name][2].get("margins", {}).get("source")  # noqa: E731
        same_signal = before not in (None, self.source.value) and signal(before) == signal(self.source.value)
        if value is None and self.mode.value == "absolute" and same_signal:
            value = self._split.tau
        # One message to the browser for range and value together: sent one by one, the browser
        # clamps the old value into the new range and sends that back (tau 5.5 -> quantile 1.00).
        with self.tau.hold_sync(), self.tau.hold_trait_notifications():
            if self.mode.value == "quantile":
                self.tau.description = "quantile"
                self.tau.min, self.tau.max, self.tau.step = 0.0, 1.0, 0.01
                self._decimals = 2
                self.tau.value = share if value is None else value
            else:
                self.tau.description = "τ"
                step = _slider_step(m)
                # Round ends on the step, so every value the slider can take reads exactly as shown.
                lo, hi = np.floor(m.min() / step) * step, np.ceil(m.max() / step) * step
                self.tau.max, self.tau.min = max(hi, lo + step), lo  # set max first: min may not exceed max
                self.tau.step = step
                self._decimals = max(0, -int(np.floor(np.log10(step) + 1e-9)))
                if value is None:  # the slider position whose split comes closest to the current one
                    positions = lo + step * np.arange(int(round((hi - lo) / step)) + 1)
                    counts = np.array([(m < t).sum() for t in positions])
                    value = float(positions[np.argmin(np.abs(counts - share * len(m)))])
                self.tau.value = round(float(np.clip(value, lo, hi)), self._decimals)
            self.tau.readout_format = f".{self._decimals}f"
        self.refresh()

    @property
    def split(self) -> Split:
        """The current split of the current margin source."""
        if self.mode.value == "quantile":
            return split_by_margin(self.margins, quantile=self.tau.value, warn=False)
        return split_by_margin(self.margins, tau=self.tau.value, warn=False)

    def on_change(self, callback) -> None:
        """Call ``callback(split)`` whenever the split changes (used by the curriculum designer)."""
        self._listeners.append(callback)

    def border_examples(self) -> list[dict]:
        """The pairs closest to τ on each side: the decisions the threshold actually makes. The
        margin is the chosen source's; ratings are shown (and labelled so) when the data has them."""
        m, split = self.margins, self.split
        below = [i for i in np.argsort(-m, kind="stable") if split.hard[i]][: self.n_examples]
        above = [i for i in np.argsort(m, kind="stable") if not split.hard[i]][: self.n_examples]
        rows = []
        for i in list(below) + list(above):
            row = self.dataset[int(i)]
            shown = {"side": "hard → SFT" if split.hard[i] else "easy → preference",
                     f"margin ({self.source.value})": f"{m[i]:.3g}",
                     "prompt": row["prompt"], "chosen": row["chosen"], "rejected": row["rejected"]}
            if row.get("score_chosen") is not None:
                shown["ratings (chosen / rejected)"] = f"{row['score_chosen']:g} / {row['score_rejected']:g}"
            rows.append(shown)
        return rows

    def counts_text(self, split: Split) -> str:
        """The split in words: counts, share, τ, and in quantile mode what the quantile became."""
        share = split.hard.mean() if len(split.hard) else 0.0
        head = f"<b>{split.n_hard}</b> hard → SFT, <b>{split.n_easy}</b> easy → preference ({percent(share)} hard; "
        if self.mode.value == "absolute":
            note = grid_note(self.margins, split.tau)
            return head + f"τ = {self._tau_text(split.tau)})" + (f"<br><i>{html.escape(note)}</i>" if note else "")
        text = head + f"quantile {self.tau.value:.2f} → τ = {threshold(split.tau)})"
        lo, hi = self._same_split_quantiles(split.n_hard)
        if hi - lo >= 0.015:
            text += (f". The margins sit on a grid (many pairs share a value), so every quantile from {lo:.2f} to "
                     f"{hi:.2f} gives this same split.")
        return text

    def _tau_text(self, tau: float) -> str:
        """τ as the slider reads it (its step's decimals), or to three digits when set off that grid."""
        text = f"{tau:.{self._decimals}f}"
        return text if abs(float(text) - tau) < 1e-9 else threshold(tau)

    def _same_split_quantiles(self, n_hard: int) -> tuple[float, float]:
        """The slider's quantiles (steps of 0.01) that give ``n_hard`` hard pairs."""
        qs = np.round(np.arange(0, 1.0001, 0.01), 2)
        ordered = np.sort(self.margins)
        hard = np.searchsorted(ordered, np.quantile(ordered, qs), side="left")  # split_by_margin's m < tau
        same = qs[hard == n_hard]
        return (float(same.min()), float(same.max())) if len(same) else (self.tau.value, self.tau.value)

    def refresh(self) -> None:
        """Recompute the split, counts, figure and examples."""
        split = self._split = self.split
        self.figure = viz.margin_histogram(self.margins, split, title=f"Margins ({self.source.value})",
                                           unit=self.units[self.source.value])
        self.counts.value = self.counts_text(split)
        self.examples.value = html_table(self.border_examples())
        show_figure(self.plot, self.figure)
        for callback in self._listeners:
            callback(split)

    def apply_to(self, cfg: RunConfig) -> RunConfig:
        """``cfg`` with this panel's margin source (or pairing choice) and threshold (a source the
        kit can compute again)."""
        overrides = self.sources[self.source.value][2]
        margin_source(overrides.get("margins", {}).get("source", "data"))  # e.g. "true reward": built-in task only
        quantile = self.tau.value if self.mode.value == "quantile" else None
        tau = cfg.split.tau if quantile is not None else self.tau.value
        return cfg.override(**overrides, split={"tau": tau, "quantile": quantile})

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)


def _slider_step(margins: np.ndarray) -> float:
    """0.5 for margins on UltraFeedback's half-point grid; else a round step (1, 2 or 5 × 10^k)
    giving about a hundred positions over the range."""
    if np.allclose(margins * 2, np.round(margins * 2)):
        return 0.5
    raw = (float(margins.max()) - float(margins.min())) / 100 or 0.01
    power = 10.0 ** np.floor(np.log10(raw))
    return float(next(k * power for k in (1, 2, 5, 10) if k * power >= raw))


def row_id_column(ds) -> np.ndarray:
    """The pairs' source rows as one array (column access row by row takes seconds at 61k pairs)."""
    return ds.select_columns(["row_id"]).with_format("numpy")[:]["row_id"]


class CurriculumDesigner:
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
        self._listeners = []
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

    def on_change(self, callback) -> None:
        """Call ``callback(designer)`` after every change (used by the training launcher)."""
        self._listeners.append(callback)

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
        for callback in self._listeners:
            callback(self)

    def apply_to(self, cfg: RunConfig) -> RunConfig:
        """``cfg`` with this panel's curriculum, batch and schedule settings."""
        return cfg.override(curriculum={"order": self.order.value, "n_stages": self.n_stages.value,
                                        "seed": self.seed.value},
                            train={"per_device_train_batch_size": self.batch_size.value,
                                   "gradient_accumulation_steps": self.grad_accum.value,
                                   "lr_scheduler_type": self.schedule.value, "warmup_ratio": self.warmup.value})

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)


# What the margin explorer and the curriculum designer decide, by config section.
PANEL_FIELDS = {"margins": ("source",), "split": ("tau", "quantile"), "curriculum": ("order", "n_stages", "seed"),
                "train": ("per_device_train_batch_size", "gradient_accumulation_steps", "lr_scheduler_type",
                          "warmup_ratio")}


def with_panel_choices(cfg: RunConfig, path: str | Path) -> RunConfig:
    """``cfg`` with the choices the margin and curriculum panels exported to ``path`` (a config
    YAML) and nothing else from that file: a GPU run keeps its own model, data and learning rate."""
    exported = RunConfig.from_yaml(path).to_dict()
    return cfg.override(**{section: {k: exported[section][k] for k in keys} for section, keys in PANEL_FIELDS.items()})


def panel_choices_lines(cfg: RunConfig) -> list[str]:
    """Every setting the two panels decide (``PANEL_FIELDS``), in words: what notebook 02 exports
    and notebook 03 takes."""
    s, c, t = cfg.split, cfg.curriculum, cfg.train
    split = (f"the lowest {percent(s.quantile)} of the margins are hard (quantile {s.quantile:g})"
             if s.quantile is not None else f"hard = margin < τ = {threshold(s.tau)}")
    order = {"easy_to_hard": "easy→hard (the paper's)", "hard_to_easy": "hard→easy", "random": "random",
             "staged": f"staged, {c.n_stages} margin buckets easy→hard, shuffled inside"}[c.order]
    per_step = t.per_device_train_batch_size * t.gradient_accumulation_steps
    return [f"margins: {cfg.margins.source}; {split}",
            f"order: {order}; stages {c.n_stages}, seed {c.seed}",
            f"batch: {t.per_device_train_batch_size} pairs × {t.gradient_accumulation_steps} accumulation = "
            f"{per_step} pairs per optimiser step",
            f"learning rate: {t.lr_scheduler_type} schedule, warm-up {t.warmup_ratio:g} of the steps"]


class _LiveCallback(TrainerCallback):
    """Feeds the launcher: progress and live curves of the run in progress."""

    shows_progress = True  # the panel's bar is the run's one bar (mixdpo_kit.core.progress)

    def __init__(self, launcher: "TrainingLauncher"):
        self.launcher = launcher

    def on_train_begin(self, args, state, control, **kw):
        self.launcher.progress.max = max(state.max_steps, 1)

    def on_train_end(self, args, state, control, **kw):
        if self.launcher.stop_requested.is_set():
            self.launcher.stage.value = f"stopped at step {state.global_step} of {state.max_steps}; checkpoint kept"

    def on_step_end(self, args, state, control, **kw):
        self.launcher.progress.value = state.global_step

    def on_log(self, args, state, control, logs=None, **kw):
        if logs and "loss" in logs:
            self.launcher.logs.append({"step": state.global_step, **logs})
            self.launcher.show_curves(self.launcher.logs)


class TrainingLauncher:
    """A form bound to the run config, Run / Stop buttons, progress, live curves and YAML export.

    The form holds every setting a learner changes between runs: objective and loss parameters,
    the split, the order, the batch and the schedule, the learning rate and the caps. One run
    folder holds one run: Run replaces what a previous run left there."""

    def __init__(self, cfg: RunConfig, panels=(), out_dir: str = "runs/notebook"):
        """``panels``: a margin explorer and/or a curriculum designer whose choices fill the form's
        split, order, batch and schedule fields, now and whenever they change."""
        self.base, self.panels = resolve(cfg), list(panels)
        self.objective = W.Dropdown(options=list(OBJECTIVES), value=cfg.loss.objective, description="objective")
        self.preference = W.Dropdown(options=sorted(PREFERENCE_LOSSES), value=self.base.loss.preference,
                                     description="pref. loss")
        self.params = W.HBox()  # one field per parameter of the chosen loss, rebuilt when it changes
        self._show_params(self.base.loss.params)
        for w in (self.objective, self.preference):
            w.observe(lambda _: self._show_params(), names="value")
        self.split_mode = W.Dropdown(options=["τ", "quantile"], description="hard if")
        self.split_value = W.FloatText(description="below")
        self.order = W.Dropdown(options=list(ORDERS), description="order")
        self.schedule = W.Dropdown(options=SCHEDULES, description="lr schedule")
        self.batch_size = W.BoundedIntText(min=1, max=4096, description="batch")
        self.grad_accum = W.BoundedIntText(min=1, max=4096, description="grad accum")
        self._set_plan_fields(self.base)
        self.learning_rate = W.FloatText(value=cfg.train.learning_rate, description="lr")
        self.max_steps = W.IntText(value=cfg.train.max_steps, description="max steps")
        self.max_rows = W.IntText(value=cfg.data.max_rows or 0, description="max rows")  # 0: all
        self.model = W.Text(value=cfg.model.name_or_path, description="model")
        self.mode = W.Dropdown(options=list(MODES), value=cfg.model.mode, description="mode")
        self.out_dir = W.Text(value=out_dir, description="run folder")
        self.run_button = W.Button(description="Run", button_style="success", icon="play")
        self.stop_button = W.Button(description="Stop", button_style="danger", icon="stop", disabled=True)
        self.export_button = W.Button(description="Export config", icon="download")
        self.progress = W.IntProgress(value=0, min=0, max=1, description="steps")
        self.stage = W.HTML()  # which long step runs now: warm-up, reference log-probs, training, evaluation
        self.status = W.HTML()
        self.results = W.HTML()  # filled when a run finishes: numbers, generations, worked pairs
        self.plot = W.Output()
        self.yaml = W.Textarea(layout=W.Layout(width="100%", height="160px"))
        self.exported = W.Accordion(children=[self.yaml], selected_index=None)  # folded until asked for
        self.exported.set_title(0, "exported config (YAML)")
        self.stop_requested = threading.Event()
        self.logs: list[dict] = []
        self.figure = None
        self.summary: RunSummary | None = None
        self.thread: threading.Thread | None = None
        self.run_button.on_click(lambda _: self.run())
        self.stop_button.on_click(lambda _: self.stop())
        self.export_button.on_click(lambda _: self.export())
        for panel in self.panels:
            panel.on_change(lambda *_: self._sync_from_panels())
        self._sync_from_panels()
        form = W.VBox([W.HBox([self.objective, self.preference]), self.params,
                       W.HBox([self.split_mode, self.split_value, self.order]),
                       W.HBox([self.batch_size, self.grad_accum, self.schedule]),
                       W.HBox([self.learning_rate, self.max_steps, self.max_rows]), W.HBox([self.model, self.mode]),
                       self.out_dir])
        self.widget = W.VBox([form, W.HBox([self.run_button, self.stop_button, self.export_button]),
                              W.HBox([self.progress, self.stage]), self.status, self.plot, self.results, self.exported])

    def _set_plan_fields(self, cfg: RunConfig) -> None:
        """Fill the split, order, batch and schedule fields from ``cfg``."""
        quantile = cfg.split.quantile
        self.split_mode.value = "τ" if quantile is None else "quantile"
        self.split_value.value = cfg.split.tau if quantile is None else quantile
        self.order.value, self.schedule.value = cfg.curriculum.order, cfg.train.lr_scheduler_type
        self.batch_size.value = cfg.train.per_device_train_batch_size
        self.grad_accum.value = cfg.train.gradient_accumulation_steps

    def _sync_from_panels(self) -> None:
        if not self.panels:
            return
        cfg = self.base
        try:
            for panel in self.panels:
                cfg = panel.apply_to(cfg)
        except ValueError as err:  # e.g. a margin source only the built-in task has: say so, keep the form
            self.status.value = f"<span style='color:#d62728'>{html.escape(str(err))}</span>"
            return
        self.base = cfg
        self._set_plan_fields(cfg)

    def _loss_config(self, params: dict) -> RunConfig:
        loss = dataclasses.replace(self.base.loss, objective=self.objective.value, preference=self.preference.value,
                                   params=params)
        return resolve(dataclasses.replace(self.base, loss=loss))

    def _show_params(self, params: dict | None = None) -> None:
        """Fields for the chosen loss's parameters: the given values, else its (objective's) defaults."""
        if params is None:
            params = self._loss_config({}).loss.params
        self.param_fields = {k: (W.FloatText(value=v, description=k) if isinstance(v, (int, float)) else
                                 W.Text(value="" if v is None else str(v), description=k))
                             for k, v in params.items()}
        self.params.children = tuple(self.param_fields.values())

    def loss_params(self) -> dict:
        """The values in the parameter fields (an empty text field is None)."""
        return {k: (w.value if isinstance(w, W.FloatText) else (float(w.value) if w.value.strip() else None))
                for k, w in self.param_fields.items()}

    def config(self) -> RunConfig:
        """The resolved run config: the base (with the panels' choices), then this form."""
        quantile = self.split_value.value if self.split_mode.value == "quantile" else None
        return resolve(self._loss_config(self.loss_params()).override(
            model={"name_or_path": self.model.value, "mode": self.mode.value},
            data={"max_rows": self.max_rows.value or None},
            split={"tau": self.base.split.tau if quantile is not None else self.split_value.value, "quantile": quantile},
            curriculum={"order": self.order.value},
            train={"learning_rate": self.learning_rate.value, "max_steps": self.max_steps.value,
                   "output_dir": self.out_dir.value, "lr_scheduler_type": self.schedule.value,
                   "per_device_train_batch_size": self.batch_size.value,
                   "gradient_accumulation_steps": self.grad_accum.value}))

    def export(self, path: str | Path | None = None) -> str:
        """Show the config as YAML (and write it to ``path`` or ``<run folder>.yaml``). Not into the run
        folder: its ``config.yaml`` records what actually ran (e.g. the SFT model the warm-up made),
        which ``generate --run`` and ``evaluate --run`` reload."""
        path = Path(path or f"{Path(self.out_dir.value)}.yaml")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.yaml.value = self.config().to_yaml(path)
        self.status.value = (f"config written to <code>{html.escape(str(path))}</code> (for <code>mixdpo-kit train "
                             "--config</code>; open “exported config” below to read it)")
        return self.yaml.value

    def show_curves(self, rows: list[dict]) -> None:
        """Draw ``rows`` (logged metrics of the current run) in the panel; none: clear it."""
        self.figure = viz.training_curves(rows) if rows else None
        if self.figure is None:
            self.plot.outputs = ()
        else:
            show_figure(self.plot, self.figure)

    def _train(self, cfg: RunConfig) -> None:
        from mixdpo_kit.training.pipeline import RunStopped
        from mixdpo_kit.reports.report import read_metrics
        from mixdpo_kit.workflows.runs import run

        def on_stage(text: str) -> None:
            if not self.stop_requested.is_set() or not text.startswith("training"):
                self.stage.value = text

        try:
            self.summary = run(cfg, cfg.train.output_dir, callbacks=[_LiveCallback(self)], on_stage=on_stage,
                               stop=self.stop_requested)
            stopped = " (stopped early; checkpoint kept)" if self.stop_requested.is_set() else ""
            mass = self.summary.lr_mass
            self.stage.value = f"stopped at step {mass.steps_trained} of {mass.steps}" if stopped else ""
            self.status.value = (f"finished{stopped} in {duration(self.summary.wall_seconds)}: report at "
                                 f"<code>{html.escape(cfg.train.output_dir)}/report.html</code>")
            self.show_curves([r for r in read_metrics(cfg.train.output_dir) if "loss" in r])  # exactly this run's
            self.results.value = results_html(self.summary)
        except RunStopped as err:
            self.stage.value = ""
            self.status.value = f"{html.escape(str(err))}; the folder holds no finished run"
        except Exception as err:  # shown in the panel: a background thread has nowhere else to report
            self.status.value = f"<span style='color:#d62728'>failed: {html.escape(repr(err))}</span>"
            raise
        finally:
            self.run_button.disabled, self.stop_button.disabled = False, True

    def run(self, blocking: bool | None = None) -> None:
        """Start training in a background thread and return: the kernel stays free, so Stop works
        even under Run All. ``blocking`` waits for the end (scripts and tests; in a notebook it
        would hold the kernel and Stop could not be heard). By default it blocks only where
        ``MIXDPO_KIT_BLOCKING_RUNS=1``: headless executions of the notebooks (the tests, the
        rendered copies) have no one to press Stop, and their later cells need the finished run.
        A real-data run with neither max rows nor max steps is refused, with what the full run
        would cost; so is a second run while one is going. A new run replaces what the run folder held."""
        if blocking is None:
            blocking = os.environ.get("MIXDPO_KIT_BLOCKING_RUNS") == "1"
        if self.thread is not None and self.thread.is_alive():
            self.status.value = "a run is going: press Stop and wait for it to end before starting another"
            return
        cfg = self.config()
        try:
            check_run_size(cfg)
        except RunTooLarge as err:
            self.status.value = f"<span style='color:#d62728'>not started: {html.escape(str(err))}</span>"
            return
        # Nothing of a previous run stays on screen: its curves, numbers and stage line go now.
        self.logs.clear()
        self.show_curves([])
        self.results.value, self.stage.value, self.summary = "", "", None
        self.stop_requested.clear()
        self.progress.value = 0
        self.run_button.disabled, self.stop_button.disabled = True, False
        self.status.value = "training…"
        self.thread = threading.Thread(target=self._train, args=(cfg,), daemon=True)
        self.thread.start()
        if blocking:
            self.thread.join()

    def stop(self) -> None:
        """Ask the run to stop: during training after the current step (a checkpoint is saved
        there); during the SFT warm-up or the reference pass before training starts."""
        if self.thread is None or not self.thread.is_alive():
            self.status.value = "nothing is running"
            return
        self.stop_requested.set()
        self.status.value = "stop requested: the run ends after the current step"

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)


class DisplacementExplorer:
    """Choose β and the learning rate, train the four arms of the displacement experiment there
    (:mod:`mixdpo_kit.workflows.displacement`: DPO and SFT on the near-ties, DPO and MixDPO on every
    pair) and see their held-out log-probs over training. A setting trained before (in ``out_dir``)
    is read back and drawn at once."""

    def __init__(self, cfg: RunConfig, out_dir: str | Path = "runs/displacement_notebook", beta: float = 0.01,
                 learning_rate: float = 1e-4, betas=(0.01, 0.1, 1.0), learning_rates=(1e-4, 3e-4), seeds: int = 1):
        """``beta``, ``learning_rate``: the setting shown first (added to the choices if not among them)."""
        self.cfg, self.out_dir, self.seeds = cfg, Path(out_dir), seeds
        self.beta = W.Dropdown(options=sorted({*betas, beta}), value=beta, description="β")
        self.learning_rate = W.Dropdown(options=sorted({*learning_rates, learning_rate}), value=learning_rate,
                                        description="learning rate", style={"description_width": "initial"})
        self.button = W.Button(description="train and plot", button_style="primary")
        self.button.on_click(lambda _: self.run())
        self.status, self.plot = W.HTML(), W.Output()
        self.figure, self.changes = None, {}
        self.widget = W.VBox([W.HBox([self.beta, self.learning_rate, self.button]), self.status, self.plot])

    @property
    def setting(self) -> DisplacementSetting:
        """The (β, learning rate) point chosen in the panel."""
        return DisplacementSetting(self.beta.value, self.learning_rate.value)

    def run(self) -> None:
        """Train (or read back) the four arms at the chosen setting and draw their curves."""
        s = self.setting
        self.button.disabled = True
        self.status.value = f"training the four arms at {s.label()} ({self.seeds} seed(s))…"
        try:
            curves, changes = run_displacement(self.cfg, [s], self.seeds, self.out_dir)
        finally:
            self.button.disabled = False
        self.changes.update(changes)
        self.figure = viz.displacement_curves({arm: curves[run_name(arm, s)] for arm in ARMS},
                                              f"Held-out log-probs during training, {s.label()}")
        show_figure(self.plot, self.figure)
        self.status.value = "<br>".join(html.escape(line) for line in self.lines())

    def run_dir(self, arm: str, seed: int = 0) -> Path:
        """The folder of one arm's run at the chosen setting (``arm``: a key of ``ARMS``)."""
        return self.out_dir / run_name(arm, self.setting) / f"seed{seed}"

    def lines(self) -> list[str]:
        """What happened at the chosen setting, one sentence per arm (empty before it ran)."""
        s = self.setting
        return [change_words(arm, self.changes[run_name(arm, s)]) for arm in ARMS if run_name(arm, s) in self.changes]

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)
