"""Figures: counts, τ lines, stage lines, axis units and labels."""
import numpy as np
import pytest

from mixdpo_kit.core.config import TrainConfig
from mixdpo_kit.margins.curriculum import CurriculumPlan
from mixdpo_kit.margins.split import split_by_margin
from mixdpo_kit.reports import viz


def hist_counts(fig):
    return {t.name.split(" (")[0]: int(sum(t.y)) for t in fig.data if t.type == "bar"}


def test_margin_histogram_counts_and_tau():
    m = np.array([0, 0, 0.5, 1, 3, 9.0])
    fig = viz.margin_histogram(m, split_by_margin(m, tau=0.75))
    assert hist_counts(fig) == {"hard → SFT": 3, "easy → preference": 3}
    assert any(s.x0 == 0.75 for s in fig.layout.shapes if s.type == "line")
    # τ on the grid: the bar at τ is easy, and the line runs between it and the hard bar below, not through it.
    on_grid = viz.margin_histogram(m, split_by_margin(m, tau=0.5))
    assert [s.x0 for s in on_grid.layout.shapes if s.type == "line"] == [0.25]
    assert hist_counts(on_grid) == {"hard → SFT": 2, "easy → preference": 4}


def test_curriculum_timeline_sft_fraction_per_step_and_stage_lines():
    m = np.array([9, 8, 7, 0, 0, 0.0])
    plan = CurriculumPlan(m, "staged", n_stages=2)
    train = TrainConfig(per_device_train_batch_size=2, lr_scheduler_type="constant", warmup_ratio=0.0)
    fig = viz.curriculum_timeline(plan, m < 0.5, train)
    frac = [t for t in fig.data if t.name == "SFT fraction"][0]
    assert list(frac.y) == [0.0, 0.5, 1.0]
    assert list([t for t in fig.data if t.name == "learning rate"][0].y) == [1.0, 1.0, 1.0]
    assert "50.0 % of the pairs and 50.00 % of the learning-rate mass" in fig.layout.title.text
    assert sum(1 for s in fig.layout.shapes if s.type == "line") == 1  # one stage boundary


def test_other_figures_build():
    m = np.array([0, 1, 2, 3.0])
    assert "ρ = 1.00" in viz.margin_sources(m, m * 2, "a", "b").layout.title.text
    assert "ρ = -1.00" in viz.margin_vs_length(m, [1, 2, 3, 4], [9, 9, 9, 9][::-1] + np.array([0, 2, 4, 6])).layout.title.text
    fig = viz.compare_runs(["dpo", "mixdpo"], [0.5, 0.6], [0.4, 0.55], [0.6, 0.65], metric="reward", baseline=0.45,
                           baseline_name="SFT model")
    assert list(fig.data[0].error_y.array) == pytest.approx([0.1, 0.05])
    assert [s.y0 for s in fig.layout.shapes if s.type == "line"] == [0.45]  # the SFT baseline is drawn


def test_figures_label_what_they_show():
    m = np.array([0, 0.5, 2, 3.0, 5, 8])
    split = split_by_margin(m, tau=1.0)
    fig = viz.margin_vs_length(m, [1, 2, 3, 4, 5, 6], [2, 2, 2, 2, 2, 2], split)
    assert fig.layout.showlegend and {t.name for t in fig.data} == {"hard → SFT (2)", "easy → preference (4)"}
    assert "strong, positive" in fig.layout.title.text
    rows = [{"step": 1, "logps/chosen": -5.0, "logps/rejected": -6.0}]
    names = {t.name for t in viz.logprob_dynamics(rows).data}
    assert names == {"chosen, this step's training pairs", "rejected, this step's training pairs"}
    assert not any("/" in n for n in names)
    judge = viz.judge_scatter([0.1, -0.2], [3, -4], "notebook03", "notebook03-reference")
    assert len(judge.layout.yaxis.title.text) <= 40 and len(judge.layout.xaxis.title.text) <= 40
    assert "notebook03-reference" in judge.layout.title.text


def test_histogram_bars_never_straddle_tau():
    rng = np.random.default_rng(0)
    grid = np.round(rng.uniform(0, 9, 500) * 2) / 2
    x, counts, width = viz.histogram_bars(grid, 0.5)
    assert sorted(x) == sorted(np.unique(grid)) and counts.sum() == 500 and width == pytest.approx(0.45)
    for tau in (0.37, 1.0, -5.0):  # continuous margins: τ is a bin edge wherever it falls
        m = rng.normal(0, 1, 2000)
        x, counts, width = viz.histogram_bars(m, tau)
        assert counts.sum() == 2000
        assert all(hi <= tau + 1e-9 or lo >= tau - 1e-9 for lo, hi in zip(x - width / 2, x + width / 2))
        hard_bars = counts[x < tau].sum()
        assert hard_bars == (m < tau).sum()  # the bars below τ hold exactly the hard pairs


def test_figures_at_the_papers_scale_send_counts_or_webgl_not_one_svg_marker_per_pair():
    rng = np.random.default_rng(0)
    n = 61_135
    m = np.round(rng.uniform(0, 9, n) * 2) / 2
    split = split_by_margin(m, tau=0.5)
    hist = viz.margin_histogram(m, split)
    assert len(hist.to_json()) < 20_000  # bars, not 61k values
    assert {t.type for t in viz.margin_vs_length(m, rng.integers(1, 900, n), rng.integers(1, 900, n), split).data} \
        == {"histogram2d"}
    assert {t.type for t in viz.margin_sources(m, m - rng.integers(0, 3, n), "a", "b").data} == {"histogram2d"}
    timeline = viz.curriculum_timeline(CurriculumPlan(m), split.hard, TrainConfig())
    pairs = [t for t in timeline.data if t.name == "margin"]
    assert {t.type for t in pairs} == {"scattergl"} and sum(len(t.x) for t in pairs) == n
    ratings = viz.rating_histograms(m + 1, np.ones(n))
    assert {t.type for t in ratings.data} == {"bar"} and [int(sum(t.y)) for t in ratings.data] == [n, n]
    small = viz.margin_sources(m[:100], m[:100], "a", "b")  # few pairs: every one a point to hover
    assert {t.type for t in small.data} == {"scatter"}


def test_a_training_panel_without_its_route_says_so_on_real_axes():
    """A run stopped before the hard pairs logs no SFT loss: its panel is not an empty frame but
    says why, with the steps trained as its axis."""
    rows = [{"step": s, "loss": 0.69, "loss/preference": 0.69, "route/sft_fraction": 0.0, "rewards/accuracy": 0.5}
            for s in (1, 2, 3)]
    fig = viz.training_curves(rows)
    notes = [a for a in fig.layout.annotations if "no step of this route" in a.text]
    assert len(notes) == 1 and notes[0].xref == "x2 domain" and "3 steps" in notes[0].text
    assert tuple(fig.layout.xaxis2.range) == (0, 3)
    assert not [a for a in viz.training_curves(rows + [{"step": 4, "loss/sft": 1.2}]).layout.annotations
                if "no step" in a.text]
