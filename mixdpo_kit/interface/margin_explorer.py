"""The margin explorer: a margin source, a τ slider (absolute or quantile), the live histogram, the
counts and the pairs either side of τ."""
from __future__ import annotations

import html

import ipywidgets as W
import numpy as np

from mixdpo_kit.core.config import RunConfig, SplitConfig
from mixdpo_kit.core.units import percent, threshold
from mixdpo_kit.interface.panel import Panel, html_table, show_figure
from mixdpo_kit.margins.sources import margin_source, margin_unit
from mixdpo_kit.margins.split import Split, grid_note, split_by_margin
from mixdpo_kit.reports import viz


class MarginExplorer(Panel):
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
        super().__init__()
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
                if value is None and share is not None:  # the slider's quantile whose split comes closest
                    qs, hard = self._quantile_splits()
                    value = float(qs[np.argmin(np.abs(hard - share * len(m)))])
                self.tau.value = 0.5 if value is None else value
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

    def settings(self) -> dict:
        """What the panel shows now (source, mode, slider value): ``show(**settings)`` puts it back,
        so an exercise can set what it needs and restore what the learner left."""
        return {"source": self.source.value, "mode": self.mode.value, "tau": self.tau.value}

    def show(self, source: str | None = None, mode: str | None = None, tau: float | None = None) -> None:
        """Set the source, then the mode ("absolute" or "quantile"), then the slider (τ or the quantile)."""
        if source is not None:
            self.source.value = source
        if mode is not None:
            self.mode.value = mode
        if tau is not None:
            self.tau.value = tau

    @property
    def split(self) -> Split:
        """The current split of the current margin source."""
        if self.mode.value == "quantile":
            return split_by_margin(self.margins, quantile=self.tau.value, warn=False)
        return split_by_margin(self.margins, tau=self.tau.value, warn=False)


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

    def _quantile_splits(self) -> tuple[np.ndarray, np.ndarray]:
        """The slider's quantiles (steps of 0.01) and the number of hard pairs each gives."""
        qs = np.round(np.arange(0, 1.0001, 0.01), 2)
        ordered = np.sort(self.margins)
        return qs, np.searchsorted(ordered, np.quantile(ordered, qs), side="left")  # split_by_margin's m < tau

    def _same_split_quantiles(self, n_hard: int) -> tuple[float, float]:
        """The slider's quantiles that give ``n_hard`` hard pairs."""
        qs, hard = self._quantile_splits()
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
        self._changed(split)

    def apply_to(self, cfg: RunConfig) -> RunConfig:
        """``cfg`` with this panel's margin source (or pairing choice) and threshold (a source the
        kit can compute again)."""
        overrides = self.sources[self.source.value][2]
        margin_source(overrides.get("margins", {}).get("source", "data"))  # e.g. "true reward": built-in task only
        quantile = self.tau.value if self.mode.value == "quantile" else None
        tau = cfg.split.tau if quantile is not None else self.tau.value
        return cfg.override(**overrides, split={"tau": tau, "quantile": quantile})


def _registered_unit(source: str, dataset=None) -> str:
    try:
        return margin_unit(source, ds=dataset)
    except ValueError:
        return "margin units"


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
