"""Figures and widget logic, driven programmatically (no browser)."""
import numpy as np
import pytest

from mixdpo_kit import viz
from mixdpo_kit.config import TrainConfig, preset
from mixdpo_kit.curriculum import CurriculumPlan
from mixdpo_kit.pipeline import analyze_data
from mixdpo_kit.split import split_by_margin
from mixdpo_kit.widgets import CurriculumDesigner, MarginExplorer, TrainingLauncher


@pytest.fixture(scope="module")
def builtin():
    return analyze_data(preset("demo"))


def hist_counts(fig):
    return {t.name.split(" (")[0]: len(t.x) for t in fig.data if t.type == "histogram"}


def test_margin_histogram_counts_and_tau():
    m = np.array([0, 0, 0.5, 1, 3, 9.0])
    fig = viz.margin_histogram(m, split_by_margin(m, tau=0.75))
    assert hist_counts(fig) == {"hard → SFT": 3, "easy → preference": 3}
    assert any(s.x0 == 0.75 for s in fig.layout.shapes if s.type == "line")


def test_curriculum_timeline_sft_fraction_per_step_and_stage_lines():
    m = np.array([9, 8, 7, 0, 0, 0.0])
    plan = CurriculumPlan(m, "staged", n_stages=2)
    train = TrainConfig(per_device_train_batch_size=2, lr_scheduler_type="constant", warmup_ratio=0.0)
    fig = viz.curriculum_timeline(plan, m < 0.5, train)
    frac = [t for t in fig.data if t.name == "SFT fraction"][0]
    assert list(frac.y) == [0.0, 0.5, 1.0]
    assert list([t for t in fig.data if t.name == "learning rate"][0].y) == [1.0, 1.0, 1.0]
    assert "50.0% of the pairs and 50.00% of the learning-rate mass" in fig.layout.title.text
    assert sum(1 for s in fig.layout.shapes if s.type == "line") == 1  # one stage boundary


def test_other_figures_build():
    m = np.array([0, 1, 2, 3.0])
    assert "ρ = 1.00" in viz.margin_sources(m, m * 2, "a", "b").layout.title.text
    assert "ρ = -1.00" in viz.margin_vs_length(m, [1, 2, 3, 4], [9, 9, 9, 9][::-1] + np.array([0, 2, 4, 6])).layout.title.text
    fig = viz.compare_runs(["dpo", "mixdpo"], [0.5, 0.6], [0.4, 0.55], [0.6, 0.65], metric="reward", baseline=0.45,
                           baseline_name="SFT model")
    assert list(fig.data[0].error_y.array) == pytest.approx([0.1, 0.05])
    assert [s.y0 for s in fig.layout.shapes if s.type == "line"] == [0.45]  # the SFT baseline is drawn


def test_margin_explorer_slider_and_quantile(builtin):
    ex = MarginExplorer(builtin.dataset, {"ratings": builtin.margins, "negated": -builtin.margins})
    assert ex.split.n_hard == int((builtin.margins < 0.5).sum())
    ex.tau.value = 2.0
    counts = hist_counts(ex.figure)
    assert counts["hard → SFT"] == int((builtin.margins < 2.0).sum()) and str(counts["hard → SFT"]) in ex.counts.value
    examples = ex.border_examples()
    assert [r["side"] for r in examples] == ["hard → SFT"] * 3 + ["easy → preference"] * 3
    assert all(float(r["margin"]) < 2.0 for r in examples[:3]) and all(float(r["margin"]) >= 2.0 for r in examples[3:])
    shown = ex.plot.outputs
    assert len(shown) == 1 and "application/vnd.plotly.v1+json" in shown[0]["data"]
    assert "2 hard" not in str(shown) and f"{counts['hard → SFT']} hard" in str(shown)  # the current figure only
    ex.mode.value = "quantile"
    ex.tau.value = 0.5
    assert ex.split.tau == pytest.approx(np.quantile(builtin.margins, 0.5))
    cfg = ex.apply_to(preset("demo"))
    assert cfg.split.quantile == 0.5
    ex.source.value = "negated"
    assert ex.split.n_hard + ex.split.n_easy == len(builtin.margins)


def test_designer_follows_explorer_and_previews_steps(builtin):
    ex = MarginExplorer(builtin.dataset, builtin.margins)
    d = CurriculumDesigner(None, explorer=ex, row_ids=builtin.dataset["row_id"])
    d.batch_size.value, d.grad_accum.value = 8, 2
    steps = d.first_steps()
    assert len(steps) == 3 and len(steps[0]["rows"].split(", ")) == 16
    assert steps[0]["routes"] == "16 preference, 0 SFT"
    d.order.value = "hard_to_easy"
    assert d.first_steps()[0]["routes"] == "0 preference, 16 SFT"
    d.order.value = "easy_to_hard"
    # Where the learning rate goes: with the hard pairs last, cosine gives them far less than their
    # share of pairs; a constant schedule gives them exactly their share.
    cosine = d.mass["sft"]
    assert cosine < 0.2 * d.mass["sft_share_of_pairs"] and f"{cosine:.2%}" in d.lr_mass.value
    d.schedule.value, d.warmup.value = "constant", 0.0
    assert d.mass["sft"] == pytest.approx(d.mass["sft_share_of_pairs"], abs=0.01)
    ex.tau.value = 0.0  # no hard pairs: the designer follows the explorer
    assert d.first_steps()[0]["routes"] == "16 preference, 0 SFT" and d.mass["sft"] == 0
    d.order.value = "hard_to_easy"
    cfg = d.apply_to(preset("demo"))
    assert (cfg.curriculum.order, cfg.train.per_device_train_batch_size, cfg.train.gradient_accumulation_steps,
            cfg.train.lr_scheduler_type) == ("hard_to_easy", 8, 2, "constant")


def test_launcher_config_export_run_and_stop(builtin, small_cfg, tmp_path):
    ex = MarginExplorer(builtin.dataset, builtin.margins)
    ex.tau.value = 3.0
    d = CurriculumDesigner(None, explorer=ex)
    d.order.value = "random"
    launcher = TrainingLauncher(small_cfg, panels=[ex, d], out_dir=str(tmp_path / "run"))
    launcher.param_fields["beta"].value = 0.25
    launcher.max_steps.value = 40
    cfg = launcher.config()
    assert (cfg.split.tau, cfg.curriculum.order, cfg.loss.params["beta"], cfg.train.max_steps) == (3.0, "random", 0.25, 40)
    # Another objective shows its own loss's parameters, with their defaults.
    launcher.objective.value = "simpo"
    assert launcher.loss_params() == {"beta": 2.0, "gamma": 1.0, "label_smoothing": 0.0}
    launcher.objective.value = small_cfg.loss.objective
    launcher.param_fields["beta"].value = 0.25
    text = launcher.export(tmp_path / "exported.yaml")
    assert "beta: 0.25" in text and (tmp_path / "exported.yaml").exists()
    # Stop after the second logged step: training ends cleanly and keeps a checkpoint.
    launcher.progress.observe(lambda ch: launcher.stop() if ch["new"] >= 2 else None, names="value")
    launcher.run(blocking=True)
    assert launcher.summary is not None and "stopped early" in launcher.status.value
    assert 2 <= len(launcher.logs) < 40
    assert any(p.name.startswith("checkpoint-") for p in (tmp_path / "run" / "checkpoints").iterdir())
    # Exporting after the run leaves the run's own record of what ran (reloaded by generate --run) alone.
    ran = (tmp_path / "run" / "config.yaml").read_text()
    launcher.export()
    assert (tmp_path / "run" / "config.yaml").read_text() == ran and (tmp_path / "run.yaml").exists()
    assert launcher.figure.data and not launcher.run_button.disabled


def test_panel_choices_carry_into_another_config_and_nothing_else(tmp_path, builtin):
    from mixdpo_kit.widgets import with_panel_choices

    ex = MarginExplorer(builtin.dataset, builtin.margins)
    ex.tau.value = 2.0
    d = CurriculumDesigner(None, explorer=ex)
    d.order.value, d.schedule.value, d.grad_accum.value = "staged", "constant_with_warmup", 4
    d.apply_to(ex.apply_to(preset("demo"))).to_yaml(tmp_path / "panels.yaml")
    gpu = preset("mixdpo_paper").override(model={"name_or_path": "some/model"}, train={"learning_rate": 5e-5})
    cfg = with_panel_choices(gpu, tmp_path / "panels.yaml")
    assert (cfg.split.tau, cfg.curriculum.order, cfg.train.lr_scheduler_type, cfg.train.gradient_accumulation_steps) == \
        (2.0, "staged", "constant_with_warmup", 4)
    assert (cfg.model.name_or_path, cfg.train.learning_rate, cfg.data.source) == \
        ("some/model", 5e-5, gpu.data.source)  # the GPU run keeps its own model, rate and data


def test_explorer_will_not_export_a_source_the_kit_cannot_compute(builtin):
    ex = MarginExplorer(builtin.dataset, {"ratings": builtin.margins, "true reward": builtin.margins * 0.1})
    ex.source.value = "true reward"
    with pytest.raises(ValueError, match="unknown margin source 'true reward'"):
        ex.apply_to(preset("demo"))


def test_margin_axes_name_their_unit(builtin):
    from mixdpo_kit.margins import margin_unit

    assert builtin.margin_unit == "rating points" == margin_unit("ratings")
    assert margin_unit("likelihood_gap") == "nats per token" and margin_unit("ratings", "rank") == "rank, 0–1"
    fig = viz.margin_histogram(builtin.margins, builtin.split, unit=builtin.margin_unit)
    assert fig.layout.xaxis.title.text.startswith("margin (rating points")
    ex = MarginExplorer(builtin.dataset, {"ratings": builtin.margins, "true reward": builtin.margins},
                        units={"true reward": "reward points"})
    ex.source.value = "true reward"
    assert "reward points" in ex.figure.layout.xaxis.title.text


def test_restart_note_names_packages_upgraded_under_the_kernel(monkeypatch):
    import importlib.metadata
    import types

    from mixdpo_kit import notebook

    monkeypatch.setitem(__import__("sys").modules, "fakepkg", types.SimpleNamespace(__version__="1.0"))
    monkeypatch.setattr(importlib.metadata, "version", lambda name: {"fakepkg": "2.0"}.get(name, "0"))
    assert notebook.upgraded_while_loaded(["fakepkg"]) == ["fakepkg 1.0 -> 2.0"]
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "1.0+cu121")
    assert notebook.upgraded_while_loaded(["fakepkg"]) == []  # a local build tag is not an upgrade
