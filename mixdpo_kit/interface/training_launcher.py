"""The training launcher: the run's settings (taken from the other panels), Run and Stop, live
curves and the finished run's results."""
from __future__ import annotations

import dataclasses
import html
import os
import threading
from pathlib import Path

import ipywidgets as W
from transformers import TrainerCallback

from mixdpo_kit.core.config import RunConfig
from mixdpo_kit.core.units import duration
from mixdpo_kit.interface.panel import SCHEDULES, Panel, results_html, show_figure
from mixdpo_kit.margins.curriculum import ORDERS
from mixdpo_kit.modeling.cost import RunTooLarge, check_run_size
from mixdpo_kit.modeling.model import MODES
from mixdpo_kit.objectives.losses import PREFERENCE_LOSSES
from mixdpo_kit.objectives.routing import OBJECTIVES, resolve
from mixdpo_kit.reports import viz
from mixdpo_kit.reports.results import RunSummary


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


class TrainingLauncher(Panel):
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
        self.params = W.HBox(layout=W.Layout(flex_flow="row wrap"))  # one field per loss parameter, rebuilt on change
        self._show_params(self.base.loss.params)
        # What the learner left in the fields of each (objective, loss) they tried: shown again on return.
        self._params_by_loss: dict[tuple[str, str], dict] = {}
        self.objective.observe(lambda ch: self._switch_loss((ch["old"], self.preference.value)), names="value")
        self.preference.observe(lambda ch: self._switch_loss((self.objective.value, ch["old"])), names="value")
        self.split_mode = W.Dropdown(options=["τ", "quantile"], description="hard if")
        self.split_value = W.FloatText(description="below")
        # Each mode keeps its own number: a quantile of 0.35 is not a τ of 0.35.
        self._split_values = {"τ": self.base.split.tau, "quantile": self.base.split.quantile or 0.5}
        self._filling = False
        self.split_mode.observe(self._switch_split_mode, names="value")
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
        self.ended: str | None = None  # why the last run ended without results (stopped early, failed)
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
        self._filling = True
        try:
            self.split_mode.value = "τ" if quantile is None else "quantile"
            self.split_value.value = cfg.split.tau if quantile is None else quantile
        finally:
            self._filling = False
        self._split_values = {"τ": cfg.split.tau, "quantile": quantile if quantile is not None else
                              self._split_values.get("quantile", 0.5)}
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

    def _switch_loss(self, left: tuple[str, str]) -> None:
        """The objective or the loss changed: keep what the learner left in the fields of ``left``
        (objective, loss) and show the new pair's fields as the learner last left them, else its defaults."""
        self._params_by_loss[left] = self.loss_params()
        self._show_params(self._params_by_loss.get((self.objective.value, self.preference.value)))

    def _switch_split_mode(self, change) -> None:
        if self._filling:
            return
        self._split_values[change["old"]] = self.split_value.value
        self.split_value.value = self._split_values[change["new"]]

    def _loss_config(self, params: dict) -> RunConfig:
        loss = dataclasses.replace(self.base.loss, objective=self.objective.value, preference=self.preference.value,
                                   params=params)
        return resolve(dataclasses.replace(self.base, loss=loss))

    def _show_params(self, params: dict | None = None) -> None:
        """Fields for the chosen loss's parameters: the given values, else its (objective's) defaults."""
        if params is None:
            params = self._loss_config({}).loss.params
        wide = {"style": {"description_width": "initial"}}  # "label_smoothing" whole, not "label_smo…"
        self.param_fields = {k: (W.FloatText(value=v, description=k, **wide) if isinstance(v, (int, float)) else
                                 W.Text(value="" if v is None else str(v), description=k, **wide))
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
            self.ended = f"{err}; the folder holds no finished run"
            self.status.value = html.escape(self.ended)
        except Exception as err:  # shown in the panel: a background thread has nowhere else to report
            self.ended = f"the run failed ({err!r}; the panel shows it)"
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
        self.results.value, self.stage.value, self.summary, self.ended = "", "", None, None
        self.stop_requested.clear()
        self.progress.value = 0
        self.run_button.disabled, self.stop_button.disabled = True, False
        self.status.value = "training…"
        self.thread = threading.Thread(target=self._train, args=(cfg,), daemon=True)
        self.thread.start()
        if blocking:
            self.thread.join()

    def results_note(self) -> str | None:
        """What a cell that reads the finished run should say instead, or None when there is one:
        no run yet, still training, or how the last run ended without results."""
        if self.summary is not None:
            return None
        if self.thread is None:
            return "no run yet: press Run in the launcher above, then run this cell again"
        if self.thread.is_alive():
            return "still training: run this cell again when the panel says finished"
        return f"{self.ended or 'the run ended without results'}: press Run to train again, then run this cell"

    def stop(self) -> None:
        """Ask the run to stop: during training after the current step (a checkpoint is saved
        there); during the SFT warm-up or the reference pass before training starts."""
        if self.thread is None or not self.thread.is_alive():
            self.status.value = "nothing is running"
            return
        self.stop_requested.set()
        self.status.value = "stop requested: the run ends after the current step"
