"""One run folder holds one run: a new run replaces the last, Stop stops in every stage, a stopped
run reports what it trained, and the launcher never shows a previous run as the current one."""
import json
import threading

import pytest

from mixdpo_kit.interface.training_launcher import TrainingLauncher
from mixdpo_kit.reports.report import read_metrics
from mixdpo_kit.workflows.runs import RUN_OUTPUTS, clear_run_folder, run


def loss_steps(run_dir) -> list[int]:
    return [r["step"] for r in read_metrics(run_dir) if "loss" in r]


def test_run_stop_run_in_the_launcher_shows_only_the_current_run(small_cfg, tmp_path):
    launcher = TrainingLauncher(small_cfg, out_dir=str(tmp_path / "run"))
    launcher.run(blocking=True)  # a full first run: steps 1..6
    assert loss_steps(tmp_path / "run") == [1, 2, 3, 4, 5, 6]
    def stop_at_2(change):
        if change["new"] == 2:
            launcher.stop()

    launcher.progress.observe(stop_at_2, names="value")
    launcher.run(blocking=True)  # the same folder: stopped at step 2
    launcher.progress.unobserve(stop_at_2, names="value")
    assert loss_steps(tmp_path / "run") == [1, 2]  # this run's rows only, not 1..6 plus 1..2
    assert max(launcher.figure.data[0].x) == 2  # the curves are this run's
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["lr_mass"]["steps_trained"] == 2 and summary["lr_mass"]["steps"] == 6
    assert "stopped at step 2 of 6" in launcher.results.value and "stopped early" in launcher.status.value
    # A third run starts with a clear panel: no curves or numbers from the run before.
    seen = []
    launcher.stage.observe(lambda ch: seen.append((launcher.figure, launcher.results.value)) if ch["new"] else None,
                           names="value")
    launcher.run(blocking=True)
    assert seen[0] == (None, "") and loss_steps(tmp_path / "run") == [1, 2, 3, 4, 5, 6]


def test_stop_during_the_warmup_stops_before_anything_else(small_cfg, tmp_path):
    cfg = small_cfg.override(sft_warmup={"enabled": True, "max_steps": 500, "batch_size": 4})
    launcher = TrainingLauncher(cfg, out_dir=str(tmp_path / "run"))
    launcher.stage.observe(lambda ch: launcher.stop() if ch["new"].startswith("SFT warm-up") else None, names="value")
    launcher.run(blocking=True)
    assert launcher.summary is None and "stopped during the SFT warm-up" in launcher.status.value
    left = {p.name for p in (tmp_path / "run").iterdir()}
    # No reference pass, no training, no evaluation, no half-trained SFT model left as if it were one.
    assert not left & {"data_report.json", "checkpoints", "summary.json", "adapter", "sft_model"}, left
    warm = [r["step"] for r in read_metrics(tmp_path / "run" / "sft_warmup")]
    assert not warm or max(warm) < 500


def test_a_second_run_is_refused_while_one_is_going(small_cfg, tmp_path):
    launcher = TrainingLauncher(small_cfg.override(train={"max_steps": 200}), out_dir=str(tmp_path / "run"))
    launcher.run(blocking=False)
    launcher.run(blocking=False)
    assert "a run is going" in launcher.status.value
    launcher.stop()
    launcher.thread.join(timeout=600)
    assert not launcher.thread.is_alive()


def test_stop_before_training_raises_run_stopped(small_cfg, tmp_path):
    from mixdpo_kit.training.pipeline import RunStopped

    stop = threading.Event()
    stop.set()
    with pytest.raises(RunStopped, match="before the first training step"):
        run(small_cfg, tmp_path / "run", stop=stop)
    assert not list((tmp_path / "run").glob("checkpoints/checkpoint-*")) and not read_metrics(tmp_path / "run")


def test_clear_run_folder_removes_only_run_outputs_and_never_the_model_it_loads(tmp_path):
    for name in RUN_OUTPUTS[:3]:
        (tmp_path / name).write_text("old")
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "cache").mkdir()
    assert clear_run_folder(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "notes.txt"]
    assert not clear_run_folder(tmp_path)
    (tmp_path / "sft_model").mkdir()
    with pytest.raises(ValueError, match="would delete it"):
        clear_run_folder(tmp_path, keep=tmp_path / "sft_model")


def test_resume_drops_the_metrics_logged_after_the_checkpoint(small_cfg, tmp_path):
    first = run(small_cfg, tmp_path / "run")
    assert first["lr_mass"]["steps_trained"] == 6 and loss_steps(tmp_path / "run") == [1, 2, 3, 4, 5, 6]
    run(small_cfg, tmp_path / "run", resume_from_checkpoint=str(tmp_path / "run" / "checkpoints" / "checkpoint-3"))
    assert loss_steps(tmp_path / "run") == [1, 2, 3, 4, 5, 6]  # 4..6 once, not twice
