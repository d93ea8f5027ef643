"""The console script end to end: demo, analyze (good and bad input), train + evaluate from YAML."""
import json
import subprocess
import sys

import datasets

from mixdpo_kit.interface.cli import main


def test_demo_writes_summary_metrics_and_report(tmp_path):
    out = tmp_path / "demo"
    # Run as a real subprocess through the console-script module, like a user would.
    res = subprocess.run([sys.executable, "-m", "mixdpo_kit", "demo", "--out", str(out)],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["loss"]["objective"] == "mixdpo"
    assert summary["data"]["rows_read"] == 2000 and summary["split"]["n_hard"] > 0
    tr = summary["evaluation"]["true_reward"]
    assert tr["before"]["n"] == tr["after"]["n"] == 256 and 0 <= tr["after"]["mean_reward"] <= 1
    assert tr["before"]["exact_match"] > 0.3  # the SFT warm-up learned the task
    assert 0 <= summary["evaluation"]["preference"]["reward_accuracy"] <= 1
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("loss/preference" in r for r in rows) and any("loss/sft" in r for r in rows)
    html = (out / "report.html").read_text()
    for title in ("Margins", "Curriculum", "Training curves by route", "rejected log-probs"):
        assert title in html
    assert (out / "adapter" / "adapter_model.safetensors").exists()


def test_analyze_builtin_and_bad_input(tmp_path, capsys):
    assert main(["analyze", "--data", "builtin", "--out", str(tmp_path / "a")]) == 0
    report = json.loads((tmp_path / "a" / "data_report.json").read_text())
    assert report["rows_read"] == 2000 and report["split"]["n_hard"] + report["split"]["n_easy"] == report["rows_kept"]
    assert (tmp_path / "a" / "margins.html").exists()
    bad = tmp_path / "bad.jsonl"
    datasets.Dataset.from_list([{"prompt": "q", "answer": "a"}]).to_json(bad)
    assert main(["analyze", "--data", str(bad), "--out", str(tmp_path / "b")]) == 2
    assert "no known format fits the columns ['answer', 'prompt']: pairs need chosen and rejected" in \
        capsys.readouterr().err
    assert main(["analyze", "--data", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "c")]) == 2


def test_train_and_evaluate_from_yaml(small_cfg, tmp_path):
    cfg_path = tmp_path / "cfg.yaml"
    small_cfg.override(loss={"objective": "dpo"}).to_yaml(cfg_path)  # dpo pins eps = 0 and a shuffled order
    run_dir = tmp_path / "run"
    assert main(["train", "--config", str(cfg_path), "--out", str(run_dir)]) == 0
    first = json.loads((run_dir / "summary.json").read_text())
    assert main(["evaluate", "--run", str(run_dir)]) == 0
    again = json.loads((run_dir / "summary.json").read_text())
    # The reloaded adapter (safetensors, via PeftModel.from_pretrained) scores the same, and the
    # re-evaluation used exactly the config the run saved.
    for key in ("logps_chosen_after", "logps_rejected_after", "logratio_margin"):
        assert abs(first["evaluation"]["preference"][key] - again["evaluation"]["preference"][key]) < 1e-3, key
    from mixdpo_kit.core.config import read_run_config

    assert again["config"] == first["config"] == read_run_config(run_dir).to_dict()
    assert (first["config"]["loss"]["label_smoothing"], first["config"]["curriculum"]["order"]) == (0.0, "random")


def test_a_run_folder_works_after_a_move_from_any_directory(small_cfg, tmp_path, monkeypatch):
    """Made with relative paths (as `mixdpo-kit demo --out runs/demo` does), moved to another place,
    then used from another working directory: generate --run and evaluate --run still load it."""
    import shutil

    from mixdpo_kit.workflows.runs import run

    made, elsewhere = tmp_path / "made", tmp_path / "elsewhere"
    made.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(made)
    cfg = small_cfg.override(train={"output_dir": "runs/r"}, cache={"dir": "runs/r/cache"},
                             sft_warmup={"enabled": True, "max_steps": 3, "batch_size": 4})
    run(cfg, "runs/r")
    text = (made / "runs" / "r" / "config.yaml").read_text()
    assert "name_or_path: sft_model" in text and "dir: cache" in text and "output_dir: ." in text
    shutil.move(made / "runs" / "r", tmp_path / "moved")
    shutil.rmtree(made)
    monkeypatch.chdir(elsewhere)
    assert main(["generate", "--run", str(tmp_path / "moved"), "--prompts", "builtin", "--max-prompts", "3",
                 "--max-new-tokens", "4", "--out", "answers.json"]) == 0
    assert main(["evaluate", "--run", "../moved"]) == 0
    assert (tmp_path / "moved" / "summary.json").exists()


def test_formats_lists_every_registered_schema_with_its_columns_and_margin(capsys):
    from mixdpo_kit.data.formats import FORMATS

    assert main(["formats"]) == 0
    out = capsys.readouterr().out
    for fmt in FORMATS.values():
        assert out.count(f"{fmt.name}: {fmt.title}") == 1 and all(c in out for c in fmt.columns)
    assert "margin: preference_strength (strength points, 1–3)" in out and "K-wise" in out


def test_export_of_data_without_a_margin_says_why(tmp_path, capsys):
    path = tmp_path / "hh.jsonl"
    path.write_text("".join(json.dumps({"chosen": f"\n\nHuman: q{i}\n\nAssistant: yes", "rejected":
                                        f"\n\nHuman: q{i}\n\nAssistant: no"}) + "\n" for i in range(3)))
    assert main(["analyze", "--data", str(path), "--out", str(tmp_path / "a")]) == 0  # reported, no margins
    assert main(["analyze", "--data", str(path), "--out", str(tmp_path / "b"), "--export", str(tmp_path / "p.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "--export needs margins" in err and "likelihood_gap" in err


def test_a_user_error_is_one_line_and_a_bug_keeps_its_traceback(tmp_path, capsys, monkeypatch):
    import pytest

    from mixdpo_kit.interface import cli

    assert main(["train", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert capsys.readouterr().err.strip() == f"mixdpo-kit train: error: config file not found: {tmp_path / 'missing.yaml'}"
    (tmp_path / "bad.yaml").write_text("loss: {betaa: 0.1}\n")
    assert main(["train", "--config", str(tmp_path / "bad.yaml")]) == 2
    assert "are not parameters of the 'dpo' loss" in capsys.readouterr().err
    # A ValueError that is not the kit's user error is a bug: it propagates with its traceback.
    monkeypatch.setattr(cli, "command_config", lambda args: (_ for _ in ()).throw(ValueError("a bug")))
    with pytest.raises(ValueError, match="a bug"):
        main(["train", "--config", str(tmp_path / "bad.yaml")])


def test_importing_the_kit_prints_nothing(tmp_path):
    res = subprocess.run([sys.executable, "-c", "import mixdpo_kit, bitsandbytes, peft\n"
                          "from mixdpo_kit.modeling.model import build_policy"], capture_output=True, text=True,
                         cwd=tmp_path)
    assert res.returncode == 0 and res.stdout == "" and "kernels-community" not in res.stderr, res.stderr
