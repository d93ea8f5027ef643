"""Loading and normalising pairs (UltraFeedback, TRL, HH-RLHF): clear errors for unusable input, every dropped row counted by reason."""
import json
import math
import os
from pathlib import Path
import datasets
import pytest

from mixdpo_kit.data.loading import DataError, load_preferences, normalise
from mixdpo_kit.training.pipeline import train


ROOT = Path(__file__).resolve().parents[2]


HH = ROOT.parent / "shared" / "data" / "hh-rlhf-harmless-base-test.jsonl.gz"


def accounted(report) -> bool:
    return report.rows_read == report.rows_kept + sum(report.dropped.values())


def test_ultrafeedback_schema_from_jsonl_parquet_csv_and_memory(chat_pairs, tmp_path):
    chat_pairs.to_json(tmp_path / "p.jsonl")
    chat_pairs.to_parquet(tmp_path / "p.parquet")
    for src in (chat_pairs, str(tmp_path / "p.jsonl"), str(tmp_path / "p.parquet")):
        ds, report = load_preferences(src)
        assert len(ds) == 6 and report.rows_dropped == 0
        assert ds[0]["prompt"] == [{"role": "user", "content": "sort 3 2 1"}]
        assert ds[0]["chosen"] == "1 2 3" and ds[0]["score_chosen"] == 9.0
    datasets.Dataset.from_list([{"prompt": "q", "chosen": "a", "rejected": "b", "score_chosen": 2,
                                 "score_rejected": 1}]).to_csv(tmp_path / "p.csv")
    ds, _ = load_preferences(str(tmp_path / "p.csv"))
    assert ds[0]["prompt"] == "q" and ds[0]["chosen"] == "a"


def test_trl_formats_explicit_and_implicit():
    conv = datasets.Dataset.from_list([{"prompt": [{"role": "user", "content": "hi"}],
                                        "chosen": [{"role": "assistant", "content": "a"}],
                                        "rejected": [{"role": "assistant", "content": "b"}]}])
    ds, _ = normalise(conv)
    assert ds[0]["prompt"] == [{"role": "user", "content": "hi"}] and ds[0]["rejected"] == "b"
    hh = datasets.Dataset.from_list([{"chosen": "\n\nHuman: hi\n\nAssistant: yes", "rejected": "\n\nHuman: hi\n\nAssistant: no"}])
    ds, _ = normalise(hh)
    assert ds[0]["prompt"] == "\n\nHuman: hi\n\nAssistant:" and ds[0]["chosen"] == "yes"


def test_missing_columns_error_names_them():
    bad = datasets.Dataset.from_list([{"prompt": "q", "good": "a", "bad": "b"}])
    with pytest.raises(DataError, match=r"no known format fits the columns \['bad', 'good', 'prompt'\]: pairs need "
                                         r"chosen and rejected.*data.columns"):
        normalise(bad)


def test_bad_rows_are_counted_by_reason():
    rows = [{"prompt": "q", "chosen": "a", "rejected": "b", "score_chosen": 2.0, "score_rejected": 1.0},
            {"prompt": "q", "chosen": "  ", "rejected": "b", "score_chosen": 2.0, "score_rejected": 1.0},
            {"prompt": "q", "chosen": "same", "rejected": "same", "score_chosen": 2.0, "score_rejected": 1.0},
            {"prompt": "q", "chosen": "c", "rejected": "d", "score_chosen": "n/a", "score_rejected": 1.0},
            {"prompt": "q", "chosen": "e", "rejected": "f", "score_chosen": float("nan"), "score_rejected": 1.0}]
    ds, report = normalise(datasets.Dataset.from_list([{**r, "score_chosen": str(r["score_chosen"])} for r in rows]))
    assert len(ds) == 1 and report.rows_read == 5 and report.rows_dropped == 4
    assert report.dropped == {"empty response": 1, "chosen identical to rejected": 1,
                              "missing, non-numeric or non-finite score": 2}
    assert report.dropped_examples["empty response"] == [1]


def test_malformed_jsonl_line_is_named(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"prompt": "q", "chosen": "a", "rejected": "b"}) + "\n{not json\n")
    with pytest.raises(DataError, match="line 2"):
        load_preferences(str(path))


@pytest.mark.parametrize("name,content,problem", [
    ("empty.jsonl", "", "the file is empty"), ("blank.jsonl", "  \n\n\t\n", "the file is empty"),
    ("empty.csv", "", "the file is empty"), ("header.csv", "prompt,chosen,rejected\n", "only a header line"),
    ("a_directory", None, "is a directory")])
def test_unusable_data_files_get_one_line_errors_naming_path_and_problem(tmp_path, capsys, name, content, problem):
    from mixdpo_kit.interface.cli import main

    path = tmp_path / name
    path.mkdir() if content is None else path.write_text(content)
    with pytest.raises(DataError, match=problem):
        load_preferences(str(path))
    assert main(["analyze", "--data", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(path) in err[0] and problem in err[0], err


@pytest.mark.parametrize("policy,expect_kept,inversions", [("keep", 2, {"keep": 1}), ("swap", 2, {"swap": 1}),
                                                            ("drop", 1, {})])
def test_chosen_score_below_rejected_policy(policy, expect_kept, inversions):
    raw = datasets.Dataset.from_list([
        {"prompt": "q", "chosen": "a", "rejected": "b", "score_chosen": 2.0, "score_rejected": 5.0},
        {"prompt": "q", "chosen": "c", "rejected": "d", "score_chosen": 6.0, "score_rejected": 1.0}])
    ds, report = normalise(raw, score_order=policy)
    assert len(ds) == expect_kept and report.score_inversions == inversions and accounted(report)
    if policy == "swap":
        assert (ds[0]["chosen"], ds[0]["score_chosen"], ds[0]["score_rejected"]) == ("b", 5.0, 2.0)
    if policy == "drop":
        assert report.dropped == {"chosen score below rejected score": 1}


def test_more_bad_rows_counted_by_reason():
    rows = [{"prompt": "q", "chosen": "a", "rejected": "b", "score_chosen": 2.0, "score_rejected": 1.0},
            {"prompt": "q", "chosen": "a", "rejected": "b", "score_chosen": 2.0, "score_rejected": 1.0},
            {"prompt": "q", "chosen": "e", "rejected": "f", "score_chosen": math.inf, "score_rejected": 1.0}]
    ds, report = normalise(datasets.Dataset.from_list(rows))
    assert report.dropped == {"exact duplicate pair": 1, "missing, non-numeric or non-finite score": 1}
    hh = datasets.Dataset.from_list([{"chosen": "\n\nHuman: hi\n\nAssistant: yes",
                                      "rejected": "\n\nHuman: bye\n\nAssistant: no"},
                                     {"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: a\n\nAssistant: c"}])
    ds, report = normalise(hh)
    assert report.dropped == {"no shared prompt prefix ending in 'Assistant:' (HH-RLHF format)": 1} and len(ds) == 1
    with pytest.raises(DataError, match="no usable rows left out of 1"):
        normalise(datasets.Dataset.from_list([{"prompt": "q", "chosen": " ", "rejected": "b"}]))


def test_hh_rlhf_real_split_every_row_accounted(small_cfg, tmp_path):
    if not HH.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{HH} is missing")
        pytest.skip(f"{HH} is missing")
    ds, report = load_preferences(str(HH))
    assert report.rows_read == 2312 and accounted(report)
    assert isinstance(ds[0]["prompt"], str) and ds[0]["prompt"].endswith("Assistant:")
    cfg = small_cfg.override(data={"source": str(HH), "max_rows": None, "max_length": 48, "max_prompt_length": 32,
                                   "eval_source": None},
                             margins={"source": "likelihood_gap"}, split={"quantile": 0.2},
                             train={"max_steps": 3, "per_device_train_batch_size": 4})
    trainer, policy, prep = train(cfg, tmp_path / "hh")
    saved = json.loads((tmp_path / "hh" / "data_report.json").read_text())
    assert saved["rows_read"] == 2312
    assert saved["rows_kept"] + saved["rows_dropped"] == 2312
    assert saved["rows_kept"] == len(prep.dataset) and saved["truncated"] > 0
    assert saved["split"]["n_hard"] > 0 and saved["split"]["n_easy"] > 0
    assert len([h for h in trainer.state.log_history if "loss" in h]) == 3
