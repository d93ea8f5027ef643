"""Real public data, offline: the shipped UltraFeedback sample (by name, as the hub's schema
gives it, with its rating grid), the official AlpacaEval and Arena-Hard files as published, bad
real-world input, and training on real text at real lengths."""
import gzip
import json
import os
from pathlib import Path

import datasets
import numpy as np
import pytest

from mixdpo_kit.core.config import JudgeConfig, RunConfig
from mixdpo_kit.data.loading import DataError, load_preferences, read_records
from mixdpo_kit.interface.cli import main
from mixdpo_kit.training.pipeline import analyze_data

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


def shared(name: str) -> Path:
    path = SHARED / name
    if not path.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{path} is missing")
        pytest.skip(f"{path} is missing")
    return path


def test_the_sample_ships_and_loads_by_name_offline(capsys, tmp_path):
    ds, report = load_preferences("ultrafeedback-sample")
    assert (report.rows_read, report.rows_kept) == (1000, 994)
    assert report.dropped == {"chosen identical to rejected": 4, "empty response": 2}
    assert ds[0]["prompt"] == [{"role": "user", "content": "how to cook t-bone in the oven"}]
    shipped = Path(__file__).resolve().parents[2] / "data" / "ultrafeedback-sample"
    assert (shipped / "LICENSE").exists() and "MIT" in (shipped / "LICENSE").read_text()
    assert "kkminions888-ops/ultrafeedback-dpo-noise-study" in (shipped / "README.md").read_text()
    # analyze: the hard share beside the paper's, and what < vs <= changes on the rating grid.
    assert main(["analyze", "--data", "ultrafeedback-sample", "--out", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert "hard pairs (margin < τ = 0.5): 110 of 994 (11.1 %)" in out
    assert "7,387 of 61,135 (12.1 %)" in out
    assert "192 more sit exactly on 0.5, so margin ≤ 0.5 would make 302 hard (30.4 %)" in out
    assert "{" not in out  # sentences, not a JSON dump
    saved = json.loads((tmp_path / "a" / "data_report.json").read_text())
    assert "margin ≤ 0.5 would make 302 hard" in saved["split"]["grid_note"]


def test_the_explorer_says_what_the_grid_decides():
    from mixdpo_kit.interface.margin_explorer import MarginExplorer

    prep = analyze_data(RunConfig().override(data={"source": "ultrafeedback-sample"}))
    ex = MarginExplorer(prep.dataset, prep.margins)
    assert "margin ≤ 0.5 would make 302 hard (30.4 %)" in ex.counts.value
    ex.tau.value = 0.75  # off the grid: nothing sits on tau, nothing to say
    assert "grid" not in ex.counts.value


def hub_schema() -> datasets.Dataset:
    """The sample in HuggingFaceH4/ultrafeedback_binarized's exact schema: message lists that
    repeat the prompt, ``messages``, ``prompt_id``, ``score_chosen``/``score_rejected``."""
    rows = []
    for i, r in enumerate(read_records(shared("ultrafeedback-binarized-sample.jsonl.gz"))):
        user = {"content": r["prompt"], "role": "user"}
        chosen = [user, {"content": r["chosen"], "role": "assistant"}]
        rows.append({"prompt": r["prompt"], "prompt_id": f"{i:064x}", "chosen": chosen,
                     "rejected": [user, {"content": r["rejected"], "role": "assistant"}], "messages": chosen,
                     "score_chosen": r["score_chosen"], "score_rejected": r["score_rejected"]})
    return datasets.Dataset.from_list(rows)


def test_the_full_set_loads_by_its_hub_name_through_the_same_code(monkeypatch):
    local = hub_schema()
    calls = []

    def load_dataset(name, split=None, **kw):
        calls.append((name, split))
        return local

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    hub = analyze_data(RunConfig().override(data={"source": "HuggingFaceH4/ultrafeedback_binarized",
                                                  "split": "train_prefs"}))
    monkeypatch.undo()
    sample = analyze_data(RunConfig().override(data={"source": "ultrafeedback-sample"}))
    assert calls == [("HuggingFaceH4/ultrafeedback_binarized", "train_prefs")]
    for column in ("prompt", "chosen", "rejected", "score_chosen", "score_rejected"):
        assert hub.dataset[column] == sample.dataset[column], column
    assert np.array_equal(hub.margins, sample.margins) and hub.split.n_hard == sample.split.n_hard == 110


def test_official_files_generate_and_judge_as_published(tmp_path):
    """Generate with a tiny model on real AlpacaEval instructions and Arena-Hard questions, then
    judge against the real baseline answers: every answer is matched (by instruction, by uid)."""
    ah_q, ah_b = shared("arena-hard-v0.1-question.jsonl.gz"), shared("arena-hard-v0.1-gpt-4-0314-answers.jsonl.gz")
    ae = shared("alpaca-eval-gpt4-1106-preview-outputs.json.gz")
    from mixdpo_kit.evaluation.judge import judge_files
    from mixdpo_kit.data.prompt_sets import load_prompts
    from mixdpo_kit.modeling.tiny import build_tiny_reward_model

    assert len(load_prompts(str(ah_q))) == 500 and len(load_prompts(str(ae))) == 805
    questions = load_prompts(str(ah_q), 24)
    assert questions[0]["id_field"] == "uid" and questions[0]["category"] == "arena-hard-v0.1"
    rm = str(build_tiny_reward_model(tmp_path / "rm"))
    for prompts, baseline, name, by in ((ah_q, ah_b, "ah", "id"), (ae, ae, "ae", "instruction")):
        out = tmp_path / name / "answers.json"
        assert main(["generate", "--model", "tiny-llama", "--prompts", str(prompts), "--max-prompts", "24",
                     "--max-new-tokens", "4", "--out", str(out)]) == 0
        mine = out.parent / "model_answer" / "tiny-llama.jsonl" if by == "id" else out
        v = judge_files(mine, baseline, rm, tmp_path / f"{name}-judge", tmp_path / "cache",
                        JudgeConfig(bootstrap=50))
        assert v["left_out"]["matched_by"] == by and v["left_out"]["matched"] == v["prompts"] == 24
        assert v["left_out"]["only_in_a"] == 0 and v["left_out"]["only_in_b"] == (500 if by == "id" else 805) - 24
    assert v["b"]["generator"] == "gpt4_1106_preview"


@pytest.mark.parametrize("kind, message", [
    ("truncated_gzip", "the gzip data breaks off after line"),
    ("not_a_list", "a JSON dict with keys .*not a list of rows"),
    ("no_instruction", "row 2: no prompt field"),
    ("duplicate_uid", "row 3 repeats the id 'u1' of row 1"),
    ("bad_line", "line 2 is not valid JSON"),
])
def test_bad_real_world_input_gets_one_line_naming_file_and_row(tmp_path, capsys, kind, message):
    path = tmp_path / f"{kind}.jsonl"
    if kind == "truncated_gzip":
        path = tmp_path / "cut.jsonl.gz"
        path.write_bytes(shared("arena-hard-v0.1-question.jsonl.gz").read_bytes()[:20_000])
    elif kind == "not_a_list":
        path = tmp_path / "outputs.json"
        path.write_text(json.dumps({"instruction": "a", "output": "b"}, indent=2))
    elif kind == "no_instruction":
        path.write_text(json.dumps({"uid": "u1", "prompt": "a"}) + "\n" + json.dumps({"uid": "u2", "text": "b"}) + "\n")
    elif kind == "duplicate_uid":
        path.write_text("".join(json.dumps({"uid": u, "prompt": "p" + u + str(i)}) + "\n" for i, u in
                                enumerate(["u1", "u2", "u1"])))
    else:
        path.write_text(json.dumps({"uid": "u1", "prompt": "a"}) + "\n{broken\n")
    code = main(["generate", "--model", "tiny-llama", "--prompts", str(path), "--out", str(tmp_path / "o.json")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and str(path) in err, err
    import re

    assert re.search(message, err), err
    # The same reader serves the judge's answer files and the preference data.
    if kind in ("truncated_gzip", "not_a_list", "bad_line"):
        with pytest.raises(DataError, match=str(path.name)):
            load_preferences(str(path))


def test_answer_files_with_a_repeated_uid_are_refused(tmp_path):
    from mixdpo_kit.evaluation.judge import read_answers

    rows = [{"uid": "a", "messages": [{"role": "user", "content": "q"}, {"role": "assistant",
                                                                         "content": {"answer": "x"}}]}] * 2
    path = tmp_path / "model_answer.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match="row 2 repeats the id 'a' of row 1"):
        read_answers(path)


def test_training_on_real_text_at_real_lengths(small_cfg, tmp_path):
    """A tokenizer trained on the sample in seconds lets a tiny Llama train on its real text:
    chat template, truncation (counted and reported), the reference cache reused by a second run."""
    from mixdpo_kit.reports.explain import report_lines
    from mixdpo_kit.workflows.runs import run
    from mixdpo_kit.modeling.tiny import build_text_tokenizer, build_tiny_model

    ds, _ = load_preferences("ultrafeedback-sample")
    texts = [m["content"] for p in ds["prompt"] for m in p] + list(ds["chosen"]) + list(ds["rejected"])
    tok = build_text_tokenizer(texts)
    model = build_tiny_model(tmp_path / "model", tokenizer=tok, max_positions=512)
    cfg = small_cfg.override(model={"name_or_path": str(model)},
                             data={"source": "ultrafeedback-sample", "max_rows": 40, "max_length": 384,
                                   "max_prompt_length": 128, "eval_source": None},
                             eval={"reward_prompts": 0}, train={"max_steps": 3, "per_device_train_batch_size": 4})
    first = run(cfg, tmp_path / "r1")
    report = first["data"]
    assert report["rows_read"] == 40 and report["truncated"] > 0
    assert any("truncated to fit the length limits" in line for line in report_lines(report))
    prep = analyze_data(cfg, tokenizer=tok)
    ids = prep.dataset[0]["prompt_ids"]
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1 and tok.convert_tokens_to_ids("<|user|>") in ids
    assert max(len(r["prompt_ids"]) + len(r["chosen_ids"]) for r in prep.dataset) <= 384
    cache = sorted(Path(cfg.cache.dir).rglob("*.json"))
    stamps = [p.stat().st_mtime_ns for p in cache]
    assert cache
    run(cfg, tmp_path / "r2")  # the same data and model: the reference log-probs come from the cache
    assert [p.stat().st_mtime_ns for p in sorted(Path(cfg.cache.dir).rglob("*.json"))] == stamps


def test_the_terminal_is_calm(tmp_path):
    """demo in a fresh process: stage lines, bars and a short summary with the paths written; no
    per-step log dicts, no JSON dump, no library notices (bitsandbytes' kernels line included).
    --verbose brings transformers' log lines back."""
    import subprocess
    import sys

    def demo(*flags):
        res = subprocess.run([sys.executable, "-m", "mixdpo_kit", "demo", "--out", str(tmp_path / "d"), *flags],
                             capture_output=True, text=True, timeout=900, cwd=tmp_path)
        assert res.returncode == 0, res.stderr[-2000:]
        return res.stdout, res.stderr

    out, err = demo()
    lines = out.strip().splitlines()
    assert lines[0].startswith("SFT warm-up") and lines[-1].startswith("finished in ") and "report.html" in lines[-1]
    assert any(line.startswith("ground-truth reward on 256 held-out prompts") for line in lines)
    assert len(lines) <= 12 and "{" not in out, out
    for noise in ("kernels", "'loss'", "Generating train split", "Writing model shards", "Warning"):
        assert noise not in out + err, noise
    out, err = demo("--verbose")
    assert "'loss'" in out + err


def test_switching_mode_and_source_on_real_ratings_keeps_the_split():
    """On a rating grid, absolute -> quantile -> absolute gives back the same τ and hard pairs, and a
    new source takes the slider position whose split is closest to the current one."""
    from mixdpo_kit.margins.sources import compute_margins
    from mixdpo_kit.interface.margin_explorer import MarginExplorer

    real = analyze_data(RunConfig().override(data={"source": "ultrafeedback-sample"}))
    ex = MarginExplorer(real.dataset, {"ratings": real.margins,
                                       "score_rejected": compute_margins(real.dataset, "score_rejected")})
    for tau in (0.5, 1.0, 2.5, 5.5):
        ex.mode.value, ex.tau.value = "absolute", tau
        hard = ex.split.n_hard
        ex.mode.value = "quantile"
        assert ex.split.n_hard == hard
        ex.mode.value = "absolute"
        assert (ex.tau.value, ex.split.n_hard) == (tau, hard)
    ex.source.value = "score_rejected"
    other = compute_margins(real.dataset, "score_rejected")
    best = min(abs((other < t).sum() - hard) for t in np.arange(-10, 0.5, 0.5))
    assert abs(ex.split.n_hard - hard) == best
