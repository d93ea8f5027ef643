"""Plotly figures: margins, difficulty vs length, margin sources, the curriculum, training and runs.

Every function returns a ``plotly.graph_objects.Figure``; the HTML report and the widgets use
these same functions.
"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from mixdpo_kit.core.steps import StepPlan
from mixdpo_kit.core.units import percent, threshold
from mixdpo_kit.margins.curriculum import CurriculumPlan, lr_mass_by_route, lr_schedule, optimizer_steps, step_means
from mixdpo_kit.margins.sources import correlation_strength, rank_correlation
from mixdpo_kit.margins.split import Split, grid_step

HARD, EASY = "#d62728", "#1f77b4"


# Above this many points a scatter is drawn with WebGL, or as counts per cell where points stack
# (ratings on a 0.5 grid put thousands on one spot): one SVG marker per pair makes a browser crawl.
LARGE = 5000


def histogram_bars(margins, tau: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Bar centres, counts and width of the margins: one bar per value when they sit on a grid
    (UltraFeedback's halves, ranks), else about 40 bins with an edge at ``tau``, so no bar holds
    pairs from both sides of τ."""
    m = np.asarray(margins, dtype=float)
    if not len(m):
        return np.zeros(0), np.zeros(0), 1.0
    step = grid_step(m)
    values, counts = np.unique(m, return_counts=True)
    if step is not None and len(values) <= 200:
        return values, counts, step * 0.9
    width = (m.max() - m.min()) / 40 or 1.0
    first, last = np.floor((m.min() - tau) / width), np.ceil((m.max() - tau) / width)
    edges = tau + width * np.arange(first, max(last, first + 1) + 1)
    counts, edges = np.histogram(m, bins=edges)
    return (edges[:-1] + edges[1:]) / 2, counts, width


def margin_histogram(margins, split: Split, title: str = "Margins", unit: str = "rating points") -> go.Figure:
    """Histogram of margins in ``unit`` (counts per bar, computed here: the browser gets bars, not
    every pair); the hard region (margin < τ) shaded, τ marked, both sides counted."""
    m = np.asarray(margins, dtype=float)
    fig = go.Figure()
    lo, hi = (float(m.min()), float(m.max())) if len(m) else (0.0, 1.0)
    x, counts, width = histogram_bars(m, split.tau)
    # The line marks the split: with τ on the margins' grid the bar at τ is easy (margin < τ is hard),
    # so the line goes between that bar and the one below, not through it.
    step = grid_step(m) if len(m) else None
    on_grid = step is not None and np.isclose(split.tau / step, round(split.tau / step))
    edge = split.tau - step / 2 if on_grid else split.tau
    fig.add_vrect(x0=min(lo, edge) - width, x1=edge, fillcolor=HARD, opacity=0.08, line_width=0)
    fig.add_vrect(x0=edge, x1=max(hi, edge) + width, fillcolor=EASY, opacity=0.05, line_width=0)
    for side, name, color in ((x < split.tau, f"hard → SFT ({split.n_hard:,})", HARD),
                              (x >= split.tau, f"easy → preference ({split.n_easy:,})", EASY)):
        fig.add_bar(x=x[side], y=counts[side], width=width, name=name, marker_color=color, opacity=0.85)
    fig.add_vline(x=edge, line_dash="dash", annotation_text=f"τ = {threshold(split.tau)}"
                  + (f" (margin < {threshold(split.tau)} is hard)" if on_grid else ""))
    fig.update_layout(barmode="overlay", bargap=0, title=f"{title}: {split.n_hard:,} hard / {split.n_easy:,} easy",
                      xaxis_title=f"margin ({unit}; larger = easier)", yaxis_title="pairs",
                      legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1.0))
    return fig


def rating_histograms(score_chosen, score_rejected, unit: str = "rating points") -> go.Figure:
    """The two ratings of every pair, overlaid: where the chosen and the rejected answers' ratings lie."""
    fig = go.Figure()
    for values, name, color in ((score_chosen, "chosen", EASY), (score_rejected, "rejected", HARD)):
        v = np.asarray(values, dtype=float)
        x, counts, width = histogram_bars(v, float(v.min()) if len(v) else 0.0)  # counted here: bars, not every pair
        fig.add_bar(x=x, y=counts, width=width, name=f"{name} (mean {v.mean():.2f})", marker_color=color, opacity=0.6)
    fig.update_layout(barmode="overlay", bargap=0, title="The ratings of the chosen and the rejected answers",
                      xaxis_title=f"rating ({unit})", yaxis_title="pairs",
                      legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1.0))
    return fig


def margin_vs_length(margins, chosen_lengths, rejected_lengths, split: Split | None = None,
                     length_unit: str = "tokens", unit: str = "rating points") -> go.Figure:
    """Margin (in ``unit``) against the chosen−rejected length difference (in ``length_unit``):
    is difficulty confounded with length? Beyond ``LARGE`` pairs, counts per cell (τ drawn)."""
    m = np.asarray(margins, dtype=float)
    diff = np.asarray(chosen_lengths, dtype=float) - np.asarray(rejected_lengths, dtype=float)
    rho = rank_correlation(m, diff)
    fig = go.Figure()
    if len(m) > LARGE:
        fig.add_trace(density(diff, m))
        if split is not None:
            fig.add_hline(y=split.tau, line_dash="dash", annotation_text=f"τ = {threshold(split.tau)}: "
                          f"{split.n_hard:,} hard below, {split.n_easy:,} easy")
    else:
        groups = [(np.ones(len(m), bool), "pairs", EASY)] if split is None else \
            [(split.hard, f"hard → SFT ({split.n_hard})", HARD), (~split.hard, f"easy → preference ({split.n_easy})", EASY)]
        for mask, name, color in groups:
            fig.add_scatter(x=diff[mask], y=m[mask], mode="markers", name=name,
                            marker=dict(size=4, color=color, opacity=0.6))
    fig.update_layout(title=f"Margin vs length difference (Spearman ρ = {rho:.2f}: {correlation_strength(rho)})",
                      xaxis_title=f"length of chosen − length of rejected ({length_unit})",
                      yaxis_title=f"margin ({unit})", showlegend=split is not None and len(m) <= LARGE,
                      legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="right", x=1.0))
    return fig


def density(x, y) -> go.Histogram2d:
    """Counts of points per cell (a cell per grid value on a gridded axis), for many points."""
    def bins(v):
        step = grid_step(v)
        if step is not None and len(np.unique(v)) <= 200:
            return dict(start=float(v.min()) - step / 2, end=float(v.max()) + step / 2, size=step)
        return dict(size=(float(v.max()) - float(v.min())) / 60 or 1.0)
    return go.Histogram2d(x=x, y=y, xbins=bins(x), ybins=bins(y), colorscale="Blues", name="pairs",
                          colorbar=dict(title="pairs"), hovertemplate="%{z} pairs<extra></extra>")


def margin_sources(a, b, name_a: str = "source A", name_b: str = "source B") -> go.Figure:
    """Two margin sources for the same pairs, with their rank correlation: a scatter, or beyond
    ``LARGE`` pairs the counts per cell (ratings on a grid stack thousands of pairs on one point)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    rho = rank_correlation(a, b)
    trace = density(a, b) if len(a) > LARGE else go.Scatter(x=a, y=b, mode="markers", marker=dict(size=4, opacity=0.6))
    fig = go.Figure(trace)
    fig.update_layout(title=f"{name_a} vs {name_b} (Spearman ρ = {rho:.2f})", xaxis_title=name_a, yaxis_title=name_b)
    return fig


def pairing_choices(choices: list[dict], unit: str = "rating points") -> go.Figure:
    """K-wise data under each pairing rule (and rating): the share of pairs at each margin (left)
    and the hard share at τ (right), from :func:`mixdpo_kit.workflows.analysis.pairing_choices`."""
    from plotly.subplots import make_subplots

    every = np.concatenate([np.asarray(c["margins"], float) for c in choices])
    values = np.unique(every)
    # A grid (ratings in halves, ranks) keeps its values; anything else gets 40 bins.
    edges = np.append(values, values[-1] + 1) if len(values) <= 60 else np.histogram_bin_edges(every, 40)
    fig = make_subplots(rows=1, cols=2, column_widths=[0.68, 0.32], horizontal_spacing=0.12,
                        subplot_titles=("share of pairs at each margin", f"hard pairs at τ = {choices[0]['tau']:g}"))
    names = [c["pairing"] + (f" · {c['rating']}" if "rating" in c else "") for c in choices]
    for name, c in zip(names, choices):
        counts, _ = np.histogram(c["margins"], bins=edges)
        fig.add_scatter(x=edges[:-1], y=counts / max(len(c["margins"]), 1), mode="lines", line_shape="hv",
                        name=f"{name} ({c['pairs']:,} pairs)", row=1, col=1)
    fig.add_bar(x=names, y=[c["hard_share"] for c in choices], showlegend=False, marker_color=HARD,
                text=[percent(c["hard_share"]) for c in choices], textposition="outside", row=1, col=2)
    fig.update_xaxes(title_text=f"margin ({unit}; larger = easier)", row=1, col=1)
    fig.update_xaxes(title_text="pairing rule", tickangle=-30, row=1, col=2)
    fig.update_yaxes(title_text="share of pairs", tickformat=".0%", row=1, col=1)
    fig.update_yaxes(title_text="hard share", tickformat=".0%", rangemode="tozero", row=1, col=2)
    fig.update_layout(title="The same prompts paired by each rule: margins and hard share", height=460,
                      legend=dict(orientation="h", yanchor="top", y=-0.3, xanchor="left", x=0.0))
    return fig


def curriculum_timeline(plan: CurriculumPlan, hard, train_cfg, epoch: int = 0, unit: str = "rating points",
                        mass: dict | None = None) -> go.Figure:
    """The planned order: each pair's margin by position (top); per optimiser step, the fraction
    routed to SFT (middle) and the learning rate relative to its peak (bottom), with the share of
    the learning-rate mass each route receives in the title. ``train_cfg``: a ``TrainConfig``
    (batch size, accumulation, epochs, schedule); ``mass``: that share when already computed
    (:func:`~mixdpo_kit.margins.curriculum.lr_mass_by_route`)."""
    from plotly.subplots import make_subplots

    t = train_cfg
    order = plan.indices(epoch)
    m = np.asarray(plan.margins, dtype=float)[order]
    h = np.asarray(hard, dtype=float)
    steps = optimizer_steps(plan, StepPlan.of(t))
    frac = step_means(h, steps)
    lrs = lr_schedule(len(steps), t.lr_scheduler_type, t.warmup_ratio)
    mass = mass or lr_mass_by_route(plan, h, t)
    fig = make_subplots(rows=3, cols=1, row_heights=[0.5, 0.25, 0.25], vertical_spacing=0.17,
                        subplot_titles=("margin of each pair in training order (epoch 1)",
                                        "fraction of each optimiser step routed to SFT",
                                        f"learning rate ({t.lr_scheduler_type}, warm-up {t.warmup_ratio:g})"))
    points = go.Scattergl if len(order) > LARGE else go.Scatter  # tens of thousands of pairs: WebGL
    position, routed = np.arange(len(order)), h[order] > 0
    for side, color in ((routed, HARD), (~routed, EASY)):
        fig.add_trace(points(x=position[side], y=m[side], mode="markers", name="margin", showlegend=False,
                             marker=dict(size=3, color=color)), row=1, col=1)
    fig.add_scatter(x=np.arange(1, len(frac) + 1), y=frac, name="SFT fraction", showlegend=False,
                    line=dict(color=HARD, shape="hv"), row=2, col=1)
    fig.add_scatter(x=np.arange(1, len(lrs) + 1), y=lrs, name="learning rate", showlegend=False,
                    line=dict(color="black"), row=3, col=1)
    if plan.order == "staged":
        for b in np.flatnonzero(np.diff(plan.stages())) + 1:
            fig.add_vline(x=int(b), line_dash="dot", line_color="gray", row=1, col=1)
    fig.update_xaxes(title_text="position in training order (pairs)", row=1, col=1)
    fig.update_xaxes(title_text="optimiser step", row=2, col=1)
    fig.update_xaxes(title_text="optimiser step", row=3, col=1)
    fig.update_yaxes(title_text=f"margin ({unit})", row=1, col=1)
    fig.update_yaxes(title_text="SFT share", range=[-0.05, 1.05], tickformat=".0%", row=2, col=1)
    fig.update_yaxes(title_text="× peak lr", range=[0, 1.05], tickformat=".1f", row=3, col=1)
    fig.update_layout(height=720, title=f"Curriculum ({plan.order}), {len(steps)} optimiser steps: the SFT route gets "
                                        f"{percent(mass['sft_share_of_pairs'])} of the pairs and {percent(mass['sft'], 2)} of the "
                                        "learning-rate mass", title_font_size=14)
    return fig


TRAINING_PANELS = (("loss/preference", "preference loss", "nats per pair"),
                   ("loss/sft", "SFT loss", "nats per token"),
                   ("route/sft_fraction", "fraction of the step routed to SFT", "share of pairs"),
                   ("rewards/accuracy", "implicit-reward accuracy (preference pairs)", "share of pairs"))


def training_curves(log_rows: list[dict]) -> go.Figure:
    """Logged training metrics over optimiser steps, one panel per quantity (they have different
    units); a route's metrics appear only at steps where that route ran."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=2, cols=2, subplot_titles=[title for _, title, _ in TRAINING_PANELS],
                        vertical_spacing=0.2, horizontal_spacing=0.12)
    last_step = max((r["step"] for r in log_rows), default=0)
    for k, (key, title, unit) in enumerate(TRAINING_PANELS):
        row, col = k // 2 + 1, k % 2 + 1
        pts = [(r["step"], r[key]) for r in log_rows if key in r]
        if pts:
            x, y = zip(*pts)
            fig.add_scatter(x=x, y=y, mode="lines+markers", marker=dict(size=4), name=title, showlegend=False,
                            line=dict(color=HARD if "sft" in key else EASY), row=row, col=col)
        else:  # say why the panel is empty (e.g. a run stopped before the hard pairs), on real axes
            fig.add_annotation(text=f"no step of this route among<br>the {last_step} steps logged", showarrow=False,
                               xref=f"x{k + 1 if k else ''} domain", yref=f"y{k + 1 if k else ''} domain", x=0.5, y=0.5)
            fig.update_xaxes(range=[0, max(last_step, 1)], row=row, col=col)
            fig.update_yaxes(range=[0, 1], row=row, col=col)
        fig.update_yaxes(title_text=unit, row=row, col=col)
        fig.update_xaxes(title_text="optimiser step", row=row, col=col)
    fig.update_yaxes(range=[-0.05, 1.05], row=2, col=1)
    fig.update_yaxes(range=[-0.05, 1.05], row=2, col=2)
    fig.update_layout(title="Training curves by route", height=560)
    return fig


def logprob_dynamics(log_rows: list[dict], eval_metrics: dict | None = None) -> go.Figure:
    """Policy log-probs of chosen and rejected responses during training (and held-out before/after)."""
    fig = go.Figure()
    for kind, color in (("chosen", EASY), ("rejected", HARD)):
        pts = [(r["step"], r[f"logps/{kind}"]) for r in log_rows if f"logps/{kind}" in r]
        if pts:
            x, y = zip(*pts)
            fig.add_scatter(x=x, y=y, name=f"{kind}, this step's training pairs", line=dict(color=color, width=1),
                            opacity=0.5)
    tracked = [r for r in log_rows if "heldout/logps_chosen" in r]
    for kind, color in (("chosen", EASY), ("rejected", HARD)):
        if tracked:  # held-out pairs during training (eval.track_every)
            fig.add_scatter(x=[r["step"] for r in tracked], y=[r[f"heldout/logps_{kind}"] for r in tracked],
                            name=f"held-out {kind}", line=dict(color=color, width=3))
    if eval_metrics and not tracked:
        last = max([r["step"] for r in log_rows] or [1])
        for kind, color in (("chosen", EASY), ("rejected", HARD)):
            fig.add_scatter(x=[0, last], y=[eval_metrics[f"logps_{kind}_before"], eval_metrics[f"logps_{kind}_after"]],
                            name=f"held-out {kind} (before → after)", line=dict(color=color, dash="dot"))
    fig.update_layout(title="Chosen and rejected log-probs", xaxis_title="optimiser step",
                      yaxis_title="summed log-prob of the response (nats)")
    return fig


def compare_runs(names: list[str], means, lows=None, highs=None, metric: str = "metric", baseline=None,
                 baseline_name: str = "baseline", x_title: str = "objective") -> go.Figure:
    """A metric per run as points with optional intervals (e.g. 95 % over seeds) against a baseline
    line (e.g. the SFT model); the axis is fitted to the values, not started at 0."""
    means = np.asarray(means, dtype=float)
    error = None
    if lows is not None and highs is not None and not np.isnan(np.asarray(lows, float)).all():
        error = dict(type="data", symmetric=False, array=np.asarray(highs, float) - means,
                     arrayminus=means - np.asarray(lows, float))
    fig = go.Figure(go.Scatter(x=list(names), y=means, error_y=error, mode="markers",
                               marker=dict(color=EASY, size=10), name=metric))
    if baseline is not None:
        fig.add_hline(y=float(baseline), line_dash="dash", line_color="gray",
                      annotation_text=f"{baseline_name} {float(baseline):.3f}", annotation_position="top left")
    # Fit the axis to the points, their intervals and the baseline, so the baseline line is never on the edge.
    ends = [v for v in [*means, *(np.asarray(lows, float) if error else []), *(np.asarray(highs, float) if error else []),
                        *([] if baseline is None else [float(baseline)])] if np.isfinite(v)]
    pad = 0.15 * ((max(ends) - min(ends)) or abs(max(ends)) or 1.0)
    fig.update_layout(title=f"{metric} by run" + (" (95 % intervals over seeds)" if error else ""),
                      yaxis=dict(title=metric, range=[min(ends) - pad, max(ends) + pad]),
                      xaxis_title=x_title, showlegend=False)
    return fig


def heldout_logps(curves: dict) -> go.Figure:
    """One panel per variant: held-out mean log p(chosen) and log p(rejected) over training
    (``compare.heldout_curves``). A falling chosen curve is likelihood displacement."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=max(len(curves), 1), subplot_titles=list(curves), shared_yaxes=True)
    for i, (name, c) in enumerate(curves.items(), start=1):
        for key, color in (("chosen", EASY), ("rejected", HARD)):
            fig.add_scatter(x=c["steps"], y=c[key], name=f"log p({key})", line=dict(color=color),
                            showlegend=i == 1, legendgroup=key, row=1, col=i)
        fig.update_xaxes(title_text="optimiser step", row=1, col=i)
    fig.update_yaxes(title_text="mean summed log-prob (nats)", row=1, col=1)
    fig.update_layout(title="Held-out log-probs during training (mean over seeds)", height=380,
                      legend=dict(orientation="h", y=-0.25))
    return fig


ARM_COLORS = ("#d62728", "#2ca02c", "#1f77b4", "#9467bd", "#8c564b", "#7f7f7f")


def displacement_curves(curves: dict, title: str = "Held-out log-probs during training") -> go.Figure:
    """Three panels: held-out mean log p(chosen), log p(rejected) and their gap over training, one
    line per run (``compare.heldout_curves``). A falling chosen line is likelihood displacement."""
    from plotly.subplots import make_subplots

    panels = ("log p(chosen)", "log p(rejected)", "gap: chosen − rejected")
    fig = make_subplots(rows=1, cols=3, subplot_titles=panels)
    for k, (name, c) in enumerate(curves.items()):
        chosen, rejected = np.asarray(c["chosen"]), np.asarray(c["rejected"])
        for col, values in enumerate((chosen, rejected, chosen - rejected), start=1):
            fig.add_scatter(x=c["steps"], y=values, name=name, legendgroup=name, showlegend=col == 1,
                            line=dict(color=ARM_COLORS[k % len(ARM_COLORS)]), row=1, col=col)
            fig.update_xaxes(title_text="optimiser step", row=1, col=col)
    fig.update_yaxes(title_text="mean summed log-prob (nats)", row=1, col=1)
    fig.update_layout(title=title, height=400, legend=dict(orientation="h", y=-0.3))
    return fig


def judge_scatter(score_diff, length_diff, name_a: str = "A", name_b: str = "B") -> go.Figure:
    """One point per prompt: the judge's score difference (A − B) against the answers' length
    difference (A − B, characters). Points right of 0 and above 0 are longer answers that won:
    a cloud along the diagonal is a judge that rewards length."""
    s = np.asarray(score_diff, dtype=float)
    d = np.asarray(length_diff, dtype=float)
    colors = np.where(s > 0, EASY, np.where(s < 0, HARD, "gray"))
    fig = go.Figure(go.Scatter(x=d, y=s, mode="markers", marker=dict(color=colors, size=6, opacity=0.7),
                               hovertemplate="length diff %{x}<br>score diff %{y:.3f}<extra></extra>"))
    fig.add_hline(y=0, line_dash="dash", line_color="gray")
    fig.add_vline(x=0, line_dash="dash", line_color="gray")
    wins = int((s > 0).sum())
    # The names can be long (a run and its reference): they go in the title, the axes say A and B.
    fig.update_layout(title=f"A = {name_a}, B = {name_b}: A won {wins} of {len(s)} prompts (blue)",
                      xaxis_title="length difference, A − B (characters)",
                      yaxis_title="judge's score difference, A − B", showlegend=False)
    return fig
