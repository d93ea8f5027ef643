"""The displacement explorer: choose β and the learning rate, train the four arms of the
likelihood-displacement experiment there and see their held-out log-probs."""
from __future__ import annotations

import html
from pathlib import Path

import ipywidgets as W

from mixdpo_kit.core.config import RunConfig
from mixdpo_kit.interface.panel import Panel, show_figure
from mixdpo_kit.reports import viz
from mixdpo_kit.workflows.displacement import ARMS, DisplacementSetting, change_words, run_displacement, run_name


class DisplacementExplorer(Panel):
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
        head = f"{s.label()}, {self.seeds} seed(s): "
        self.status.value = head + "reading back the runs trained before, training the others (about 10 s each on 2 CPU cores)…"
        try:
            curves, changes = run_displacement(self.cfg, [s], self.seeds, self.out_dir,
                                               on_run=lambda text: setattr(self.status, "value", f"{head}training {text}…"))
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

    def change(self, arm: str) -> dict:
        """One arm's held-out changes at the chosen setting (``chosen``, ``rejected``, the gap before
        and after), once it ran."""
        return self.changes[run_name(arm, self.setting)]

    def lines(self) -> list[str]:
        """What happened at the chosen setting, one sentence per arm (empty before it ran)."""
        s = self.setting
        return [change_words(arm, self.changes[run_name(arm, s)]) for arm in ARMS if run_name(arm, s) in self.changes]
