"""The notebooks' panels, driven programmatically (no browser): the margin explorer, the curriculum designer and the training launcher."""
from pathlib import Path

import numpy as np
import pytest

from mixdpo_kit.core.config import TrainConfig, preset
from mixdpo_kit.interface.curriculum_designer import CurriculumDesigner
from mixdpo_kit.interface.margin_explorer import MarginExplorer
from mixdpo_kit.interface.training_launcher import TrainingLauncher
from mixdpo_kit.margins.split import split_by_margin
from mixdpo_kit.reports import viz
from mixdpo_kit.training.pipeline import analyze_data


@pytest.fixture(scope="module")
def builtin():
    return analyze_data(preset("demo"))


def hist_counts(fig):
    return {t.name.split(" (")[0]: int(sum(t.y)) for t in fig.data if t.type == "bar"}


def test_margin_explorer_slider_and_quantile(builtin):
    ex = MarginExplorer(builtin.dataset, {"ratings": builtin.margins, "negated": -builtin.margins})
    assert ex.split.n_hard == int((builtin.margins < 0.5).sum())
    ex.tau.value = 2.0
    counts = hist_counts(ex.figure)
    assert counts["hard → SFT"] == int((builtin.margins < 2.0).sum()) and str(counts["hard → SFT"]) in ex.counts.value
    examples = ex.border_examples()
    assert [r["side"] for r in examples] == ["hard → SFT"] * 3 + ["easy → preference"] * 3
    margin = "margin (ratings)"  # the column names its source; the ratings column says it holds ratings
    assert all(float(r[margin]) < 2.0 for r in examples[:3]) and all(float(r[margin]) >= 2.0 for r in examples[3:])
    assert all("ratings (chosen / rejected)" in r for r in examples)
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
    assert len(steps) == 3 and steps[0]["pairs"] == 16
    assert steps[0]["rows"].endswith(", …") and len(steps[0]["rows"].split(", ")) == 5  # a glimpse, not 16 ids
    assert steps[0]["routes"] == "16 preference, 0 SFT"
    d.order.value = "hard_to_easy"
    assert d.first_steps()[0]["routes"] == "0 preference, 16 SFT"
    d.order.value = "easy_to_hard"
    # Where the learning rate goes: with the hard pairs last, cosine gives them far less than their
    # share of pairs; a constant schedule gives them exactly their share.
    cosine = d.mass["sft"]
    assert cosine < 0.2 * d.mass["sft_share_of_pairs"] and f"{100 * cosine:.2f} %" in d.lr_mass.value
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
    from mixdpo_kit.interface.panel import with_panel_choices

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
    from mixdpo_kit.margins.sources import margin_unit

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

    from mixdpo_kit.interface import notebook

    monkeypatch.setitem(__import__("sys").modules, "fakepkg", types.SimpleNamespace(__version__="1.0"))
    monkeypatch.setattr(importlib.metadata, "version", lambda name: {"fakepkg": "2.0"}.get(name, "0"))
    assert notebook.upgraded_while_loaded(["fakepkg"]) == ["fakepkg 1.0 -> 2.0"]
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "1.0+cu121")
    assert notebook.upgraded_while_loaded(["fakepkg"]) == []  # a local build tag is not an upgrade


def test_explorer_and_designer_report_one_split_the_same_way(builtin):
    """One split, one number: the explorer said 12.9 % where the designer said 13.0 % (259 of 2,000)."""
    ex = MarginExplorer(builtin.dataset, builtin.margins)
    d = CurriculumDesigner(None, explorer=ex)
    share = ex.split.n_hard / len(builtin.margins)
    assert share == pytest.approx(0.1295)
    assert "13.0 % hard" in ex.counts.value and "<b>13.0 %</b> of the pairs" in d.lr_mass.value


def test_quantile_mode_names_its_slider_and_says_when_the_grid_makes_quantiles_coincide(builtin):
    ex = MarginExplorer(builtin.dataset, builtin.margins)
    assert ex.tau.description == "τ" and ex.tau.readout_format == ".1f" and "τ = 0.5)" in ex.counts.value
    ex.mode.value = "quantile"
    assert ex.tau.description == "quantile" and ex.tau.readout_format == ".2f"
    ex.tau.value = 0.2
    # Ratings sit on a 0.5 grid: every quantile in a range gives the same split, and the panel says which range.
    lo, hi = ex._same_split_quantiles(ex.split.n_hard)
    assert lo < 0.2 < hi and f"every quantile from {lo:.2f} to {hi:.2f}" in ex.counts.value
    assert "quantile 0.20 → τ = 0.5" in ex.counts.value
    ex.mode.value = "absolute"
    assert ex.tau.description == "τ" and "every quantile" not in ex.counts.value


def test_explorer_slider_steps_are_round_so_slider_and_text_agree(builtin):
    """A continuous source (here the ratings × 0.0937) gets a round step, ends on that step and a
    readout with its decimals: the slider never reads 0.20 while the text says 0.195."""
    m = builtin.margins * 0.0937
    ex = MarginExplorer(builtin.dataset, {"scaled": m})
    step = ex.tau.step
    assert step in (0.005, 0.01) and ex.tau.readout_format == (".3f" if step == 0.005 else ".2f")
    assert abs(ex.tau.min / step - round(ex.tau.min / step)) < 1e-6
    ex.tau.value = round(ex.tau.min + 37 * step, 6)
    shown = f"{ex.tau.value:{ex.tau.readout_format}}"
    assert f"τ = {shown})" in ex.counts.value
    assert "τ = 0.5" in viz.margin_histogram(builtin.margins, split_by_margin(builtin.margins, tau=0.5)).layout.annotations[0].text
    odd = split_by_margin(builtin.margins, tau=2.73525)
    assert viz.margin_histogram(builtin.margins, odd).layout.annotations[0].text == "τ = 2.74"


def test_designer_exercises_leave_the_panel_as_it_was(builtin):
    ex = MarginExplorer(builtin.dataset, builtin.margins)
    d = CurriculumDesigner(None, explorer=ex)
    before = d.apply_to(preset("demo")).to_dict()
    constant, shuffled = d.mass_with(schedule="constant_with_warmup"), d.mass_with(order="random")
    assert constant["sft"] > 10 * d.mass["sft"] and shuffled["sft"] > 10 * d.mass["sft"]
    assert d.apply_to(preset("demo")).to_dict() == before  # nothing the panel exports changed
    from mixdpo_kit.core.config import CurriculumConfig

    staged = CurriculumDesigner(None, explorer=ex, curriculum=CurriculumConfig(order="staged", n_stages=4),
                                train=TrainConfig(per_device_train_batch_size=16, gradient_accumulation_steps=2))
    assert staged.order.value == "staged" and staged.first_steps()[0]["pairs"] == 32
    assert d.order.value == "easy_to_hard" and d.batch_size.value == TrainConfig.per_device_train_batch_size


def test_panel_choices_lines_name_every_exported_setting(tmp_path, builtin):
    from mixdpo_kit.interface.panel import PANEL_FIELDS, panel_choices_lines, with_panel_choices

    ex = MarginExplorer(builtin.dataset, builtin.margins)
    ex.mode.value, ex.tau.value = "quantile", 0.2
    d = CurriculumDesigner(None, explorer=ex)
    d.order.value, d.n_stages.value, d.batch_size.value, d.grad_accum.value = "staged", 4, 16, 2
    d.apply_to(ex.apply_to(preset("demo"))).to_yaml(tmp_path / "panels.yaml")
    cfg = with_panel_choices(preset("demo"), tmp_path / "panels.yaml")
    text = "\n".join(panel_choices_lines(cfg))
    for needle in ("margins: data", "quantile 0.2", "staged, 4 margin buckets", "stages 4, seed 0",
                   "16 pairs × 2 accumulation = 32 pairs per optimiser step", "cosine schedule", "warm-up 0.1"):
        assert needle in text, (needle, text)
    assert "τ = 0.5" not in text  # a quantile export is not reported as the default tau
    # With the pairs' margins, the share the data actually gives (a 0.5-point grid: not 20.0 %), as the explorer shows.
    with_data = panel_choices_lines(cfg, margins=builtin.margins)[0]
    assert f"on these pairs {ex.split.n_hard:,} of 2,000" in with_data and ex.split.n_hard != 400, with_data
    assert sum(len(keys) for keys in PANEL_FIELDS.values()) == 10  # a new panel field needs a line above


def test_answer_tables_separate_their_cells():
    from mixdpo_kit.interface.panel import html_table

    table = html_table([{"before": "6 5 6 2", "after": "6 5 6 2"}])
    assert table.count("border:1px solid") == 4 and "padding" in table


def test_displacement_explorer_trains_the_chosen_setting_and_reads_back_a_trained_one(small_cfg, tmp_path):
    from mixdpo_kit.interface.displacement_explorer import DisplacementExplorer

    cfg = small_cfg.override(data={"max_rows": 64}, train={"max_steps": 2},
                             eval={"track_pairs": 8, "reward_prompts": 4, "max_pairs": 8})
    panel = DisplacementExplorer(cfg, out_dir=tmp_path, beta=0.05, learning_rate=1e-3)
    assert 0.05 in panel.beta.options and panel.lines() == [] and panel.figure is None
    shown = []  # the status while it trains: which run of how many, not one static line
    panel.status.observe(lambda ch: shown.append(ch["new"]), names="value")
    panel.button.click()
    assert any("training run 2 of 4" in text for text in shown), shown
    assert len(panel.figure.data) == 3 * 4 and len(panel.lines()) == 4  # three panels, four arms
    assert panel.run_dir("dpo_near_ties").joinpath("summary.json").exists()
    first = panel.figure
    panel.beta.value = 1.0
    panel.run()
    assert panel.figure is not first and "β = 1" in panel.figure.layout.title.text
    assert sorted(p.name for p in tmp_path.glob("dpo_all_*")) == ["dpo_all_b0.05_lr0.001", "dpo_all_b1_lr0.001"]
    stamp = panel.run_dir("dpo_all").joinpath("summary.json").stat().st_mtime
    panel.run()  # trained before: read back, not trained again
    assert panel.run_dir("dpo_all").joinpath("summary.json").stat().st_mtime == stamp
    assert "dpo_near_ties:" in panel.status.value


def test_explorer_switches_between_pairing_rules_and_the_designer_follows(tmp_path):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
    from schema_files import write_schema_files

    from mixdpo_kit.training.pipeline import analyze_data
    from mixdpo_kit.workflows.analysis import pairing_sources

    cfg = preset("mixdpo_paper").override(data={"source": str(write_schema_files(tmp_path)["nectar"]), "max_rows": None},
                                          split={"tau": 2.0})
    prep = analyze_data(cfg)
    sources = pairing_sources(cfg, prep.report)
    assert list(sources) == ["best_vs_random", "best_vs_worst", "all_pairs"]
    ex = MarginExplorer(prep.dataset, sources, tau=2.0, units={name: "rank places" for name in sources})
    d = CurriculumDesigner(None, explorer=ex)
    ex.source.value = "all_pairs"  # 9 pairs from 2 prompts; the same τ makes the neighbouring ranks hard
    assert len(ex.dataset) == 9 and ex.split.n_hard == 5 and len(d.margins) == len(d.hard) == 9
    assert sorted(set(d.row_ids.tolist())) == [0, 4] and d.first_steps()[0]["pairs"] == 4
    out = ex.apply_to(cfg)
    assert (out.data.pairing, out.data.format, out.margins.source, out.split.tau) == ("all_pairs", "nectar", "data", 2.0)
    ex.source.value = "best_vs_worst"
    assert len(ex.dataset) == 2 and ex.split.n_hard == 0 and "rank places" in ex.figure.layout.xaxis.title.text


def test_the_launcher_changes_no_setting_the_learner_did_not_touch(small_cfg, tmp_path):
    """Switching the objective away and back restores the learner's loss parameters (not the
    objective's defaults), and switching "hard if" between τ and quantile shows each mode's own value
    instead of reading the other's number in the new unit."""
    cfg = small_cfg.override(split={"tau": 0.5, "quantile": None})
    launcher = TrainingLauncher(cfg, out_dir=str(tmp_path / "run"))
    launcher.param_fields["beta"].value = 0.2  # the learner's β for MixDPO
    launcher.objective.value = "dpo"
    dpo_beta = launcher.loss_params()["beta"]  # DPO's own (resolved) parameters
    launcher.objective.value = "simpo"
    assert launcher.loss_params() == {"beta": 2.0, "gamma": 1.0, "label_smoothing": 0.0}  # its own, new fields
    launcher.param_fields["gamma"].value = 0.5
    launcher.objective.value = small_cfg.loss.objective
    assert launcher.loss_params()["beta"] == 0.2 and launcher.config().loss.params["beta"] == 0.2
    launcher.objective.value = "simpo"
    assert launcher.loss_params()["gamma"] == 0.5  # what the learner set there, too
    launcher.objective.value = "dpo"
    assert launcher.loss_params()["beta"] == dpo_beta
    launcher.split_mode.value, launcher.split_value.value = "quantile", 0.35
    launcher.split_mode.value = "τ"
    assert launcher.split_value.value == 0.5 and launcher.config().split.tau == 0.5  # τ = 0.5, not τ = 0.35
    launcher.split_mode.value = "quantile"
    assert launcher.split_value.value == 0.35 and launcher.config().split.quantile == 0.35


def test_after_stop_during_the_warmup_03s_result_cells_say_so(small_cfg, tmp_path, capsys):
    """Stop pressed during the SFT warm-up: notebook 03's result cells (run as the learner runs
    them) say the run was stopped and nothing trained, not "still training"."""
    import nbformat

    cfg = small_cfg.override(sft_warmup={"enabled": True, "max_steps": 400})
    launcher = TrainingLauncher(cfg, out_dir=str(tmp_path / "run"))
    launcher.stage.observe(lambda ch: launcher.stop() if "SFT warm-up" in ch["new"] else None, names="value")
    launcher.run(blocking=True)
    assert launcher.summary is None and "stopped during the SFT warm-up" in launcher.status.value
    nb = nbformat.read(Path(__file__).resolve().parents[2] / "notebooks" / "03_train_qlora.ipynb", as_version=4)
    cells = [c.source for c in nb.cells if c.cell_type == "code" and "launcher.summary" in c.source
             or "results_note" in c.source]
    assert len(cells) >= 2, "03's result cells read the launcher"
    for source in cells:
        exec(source, {"launcher": launcher, "on_gpu": False, "run": None})
        printed = capsys.readouterr().out
        assert "still training" not in printed and "stopped during the SFT warm-up" in printed, printed
    assert launcher.param_fields["label_smoothing"].style.description_width == "initial"  # the name in full


def test_01s_tau_exercise_after_the_learner_moved_the_panel(capsys):
    """Notebook 01's τ exercise, run after the learner left the panel on another source in quantile
    mode, prints the rating-margin counts at τ = 3 and 1 and puts the panel back as it was left;
    switching the source in quantile mode keeps the share as closely as the new margins allow."""
    import nbformat

    from mixdpo_kit.core.config import RunConfig
    from mixdpo_kit.core.units import percent
    from mixdpo_kit.margins.sources import compute_margins

    real = analyze_data(RunConfig().override(data={"source": "ultrafeedback-sample"}))
    second = compute_margins(real.dataset, "score_rejected")
    explorer = MarginExplorer(real.dataset, {"ratings": real.margins, "score_rejected": second})
    explorer.mode.value = "quantile"
    explorer.tau.value = 0.62
    before = explorer.split.hard.mean()
    explorer.source.value = "score_rejected"
    qs, hard = explorer._quantile_splits()
    closest = np.min(np.abs(hard / len(second) - before))
    assert abs(explorer.split.hard.mean() - before) == pytest.approx(closest)
    left = explorer.settings()
    nb = nbformat.read(Path(__file__).resolve().parents[2] / "notebooks" / "01_margins.ipynb", as_version=4)
    cell = next(c.source for c in nb.cells if c.cell_type == "code" and "for tau in (3.0, 1.0)" in c.source)
    exec(cell, {"explorer": explorer, "percent": percent})
    printed = capsys.readouterr().out
    for tau in (3.0, 1.0):
        n = int((real.margins < tau).sum())
        assert f"tau = {tau}: {n} hard pairs ({percent(n / len(real.margins))})" in printed, printed
    assert explorer.settings() == left and "panel back as you left it" in printed
