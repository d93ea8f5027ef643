"""Plotly figures of margins, the curriculum, training curves and log-prob dynamics."""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from mixdpo_kit.curriculum import CurriculumPlan
from mixdpo_kit.split import Split

HARD, EASY = "#d62728", "#1f77b4"


def margin_histogram(margins, split: Split, title: str = "Margins") -> go.Figure:
    """Histogram of margins, hard (SFT) and easy (preference) pairs coloured, tau marked, counts in the legend."""
    m = np.asarray(margins, dtype=float)
    fig = go.Figure()
    fig.add_histogram(x=m[split.hard], name=f"hard → SFT ({split.n_hard})", marker_color=HARD, opacity=0.8)
    fig.add_histogram(x=m[~split.hard], name=f"easy → preference ({split.n_easy})", marker_color=EASY, opacity=0.8)
    fig.add_vline(x=split.tau, line_dash="dash", annotation_text=f"τ = {split.tau:g}")
    fig.update_layout(barmode="overlay", title=title, xaxis_title="margin (larger = easier)", yaxis_title="pairs")
    return fig


def curriculum_timeline(plan: CurriculumPlan, hard, batch_size: int = 1, grad_accum: int = 1, epoch: int = 0) -> go.Figure:
    """Margin of each pair in training order, and the fraction routed to SFT per optimiser step."""
    order = plan.indices(epoch)
    m = np.asarray(plan.margins, dtype=float)[order]
    h = np.asarray(hard, dtype=bool)[order]
    per_step = batch_size * grad_accum
    steps = np.arange(len(order)) // per_step
    frac = np.bincount(steps, weights=h.astype(float)) / np.bincount(steps)
    fig = go.Figure()
    fig.add_scatter(x=np.arange(len(order)), y=m, mode="markers", name="margin", marker=dict(
        size=3, color=np.where(h, HARD, EASY)))
    fig.add_scatter(x=np.arange(len(frac)) * per_step, y=frac, name="SFT fraction per step", yaxis="y2",
                    line=dict(color="black"))
    fig.update_layout(title=f"Curriculum ({plan.order})", xaxis_title="position in training order",
                      yaxis_title="margin", yaxis2=dict(overlaying="y", side="right", range=[0, 1],
                                                        title="fraction routed to SFT"))
    return fig


def training_curves(log_rows: list[dict], keys=("loss", "loss/preference", "loss/sft", "route/sft_fraction",
                                                "rewards/accuracy")) -> go.Figure:
    """Logged training metrics over steps; route metrics appear only at steps where that route ran."""
    fig = go.Figure()
    for key in keys:
        pts = [(r["step"], r[key]) for r in log_rows if key in r]
        if pts:
            x, y = zip(*pts)
            fig.add_scatter(x=x, y=y, mode="lines+markers", name=key)
    fig.update_layout(title="Training curves by route", xaxis_title="optimiser step")
    return fig


def logprob_dynamics(log_rows: list[dict], eval_metrics: dict | None = None) -> go.Figure:
    """Policy log-probs of chosen and rejected responses during training (and held-out before/after)."""
    fig = go.Figure()
    for key, color in (("logps/chosen", EASY), ("logps/rejected", HARD)):
        pts = [(r["step"], r[key]) for r in log_rows if key in r]
        if pts:
            x, y = zip(*pts)
            fig.add_scatter(x=x, y=y, name=f"train {key}", line=dict(color=color))
    if eval_metrics:
        last = max([r["step"] for r in log_rows] or [1])
        for kind, color in (("chosen", EASY), ("rejected", HARD)):
            fig.add_scatter(x=[0, last], y=[eval_metrics[f"logps_{kind}_before"], eval_metrics[f"logps_{kind}_after"]],
                            name=f"held-out {kind} (before → after)", line=dict(color=color, dash="dot"))
    fig.update_layout(title="Chosen / rejected log-probs", xaxis_title="optimiser step", yaxis_title="sum log-prob")
    return fig
