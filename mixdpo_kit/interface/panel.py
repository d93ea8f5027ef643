"""What the notebooks' ipywidgets panels share: a small base (the widget it shows, listeners told
of each change), figures and HTML tables in widgets, and the panel choices one notebook exports and
another takes.

Each panel keeps its latest plotly figure in ``.figure`` and shows it in an ``Output`` widget
(core ipywidgets only, so it works in JupyterLab and in Colab). ``apply_to(cfg)`` copies a
panel's choices into a :class:`~mixdpo_kit.core.config.RunConfig`, which is how the split and the
curriculum chosen in the first two panels flow into the launcher. One panel per module:
``margin_explorer``, ``curriculum_designer``, ``training_launcher``, ``displacement_explorer``.
"""
from __future__ import annotations

import html
from pathlib import Path

import ipywidgets as W
import numpy as np
import plotly.io as pio

from mixdpo_kit.core.config import RunConfig
from mixdpo_kit.core.units import percent, threshold
from mixdpo_kit.data.chat import as_text
from mixdpo_kit.margins.split import split_by_margin
from mixdpo_kit.reports.explain import result_lines, worked_pairs_table
from mixdpo_kit.reports.results import RunSummary, as_summary

SCHEDULES = ["cosine", "linear", "constant_with_warmup", "constant"]


class Panel:
    """A notebook panel: ``widget`` is what it shows; ``on_change(callback)`` adds a listener that
    each change of the panel's choice is told of (what it receives is the panel's: the margin
    explorer passes its split, the curriculum designer itself)."""

    widget: W.Widget

    def __init__(self):
        self._listeners: list = []

    def on_change(self, callback) -> None:
        """Call ``callback`` after every change of this panel's choice."""
        self._listeners.append(callback)

    def _changed(self, *what) -> None:
        for callback in self._listeners:
            callback(*what)

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)


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


def results_html(summary: RunSummary) -> str:
    """A finished run for a panel: headline numbers, generations before/after, the worked pairs."""
    summary = as_summary(summary)
    lines = "".join(f"<li>{html.escape(line)}</li>" for line in result_lines(summary))
    return (f"<ul>{lines}</ul><b>Generations before (reference) and after training</b>"
            f"{html_table(summary.evaluation.generations)}"
            f"<b>Two pairs through the routed loss</b>{html_table(worked_pairs_table(summary.worked_pairs or []))}")


# What the margin explorer and the curriculum designer decide, by config section.
PANEL_FIELDS = {"margins": ("source",), "split": ("tau", "quantile"), "curriculum": ("order", "n_stages", "seed"),
                "train": ("per_device_train_batch_size", "gradient_accumulation_steps", "lr_scheduler_type",
                          "warmup_ratio")}


def with_panel_choices(cfg: RunConfig, path: str | Path) -> RunConfig:
    """``cfg`` with the choices the margin and curriculum panels exported to ``path`` (a config
    YAML) and nothing else from that file: a GPU run keeps its own model, data and learning rate."""
    exported = RunConfig.from_yaml(path).to_dict()
    return cfg.override(**{section: {k: exported[section][k] for k in keys} for section, keys in PANEL_FIELDS.items()})


def panel_choices_lines(cfg: RunConfig, margins=None) -> list[str]:
    """Every setting the two panels decide (``PANEL_FIELDS``), in words: what notebook 02 exports
    and notebook 03 takes. ``margins``: the pairs' margins, to state the split these pairs actually
    get (margins on a grid cannot give every share a quantile asks for)."""
    s, c, t = cfg.split, cfg.curriculum, cfg.train
    split = (f"hard = the lowest {percent(s.quantile)} of the margins (quantile {s.quantile:g})"
             if s.quantile is not None else f"hard = margin < τ = {threshold(s.tau)}")
    if margins is not None and len(margins):
        got = split_by_margin(np.asarray(margins, dtype=float), s.tau, s.quantile, warn=False)
        split += f"; on these pairs {got.n_hard:,} of {len(got.hard):,} ({percent(got.hard.mean())})"
        if s.quantile is not None:
            split += f", τ = {threshold(got.tau)}"
    order = {"easy_to_hard": "easy→hard (the paper's)", "hard_to_easy": "hard→easy", "random": "random",
             "staged": f"staged, {c.n_stages} margin buckets easy→hard, shuffled inside"}[c.order]
    per_step = t.per_device_train_batch_size * t.gradient_accumulation_steps
    return [f"margins: {cfg.margins.source}; {split}",
            f"order: {order}; stages {c.n_stages}, seed {c.seed}",
            f"batch: {t.per_device_train_batch_size} pairs × {t.gradient_accumulation_steps} accumulation = "
            f"{per_step} pairs per optimiser step",
            f"learning rate: {t.lr_scheduler_type} schedule, warm-up {t.warmup_ratio:g} of the steps"]
