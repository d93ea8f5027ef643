"""Evaluation prompt sets: every file layout, bad files refused with the row, unknown names listing the known ones."""
import json
import pytest

from mixdpo_kit.data.loading import DataError
from mixdpo_kit.data.prompt_sets import load_prompts


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_prompt_files_of_every_layout(tmp_path):
    alpaca = tmp_path / "alpaca.json"
    alpaca.write_text(json.dumps([{"instruction": "Say hi", "dataset": "helpful_base", "output": "x", "generator": "g"},
                                  {"instruction": "Add", "input": "1 and 2"}]))
    rows = load_prompts(str(alpaca))
    assert [r["instruction"] for r in rows] == ["Say hi", "Add\n\n1 and 2"]
    assert [r["dataset"] for r in rows] == ["helpful_base", "alpaca"] and rows[1]["id"] == "1"
    v01 = _write_jsonl(tmp_path / "q01.jsonl", [{"question_id": "q1", "category": "c", "turns": [{"content": "Why?"}]}])
    assert load_prompts(str(v01))[0] | {} == {"id": "q1", "instruction": "Why?", "dataset": "q01",
                                                "id_field": "question_id", "category": "c"}
    v2 = _write_jsonl(tmp_path / "q2.jsonl", [{"uid": "u1", "category": "hard_prompt", "prompt": "How?"}])
    assert load_prompts(str(v2))[0]["id_field"] == "uid"
    trl = _write_jsonl(tmp_path / "trl.jsonl", [{"prompt": [{"role": "system", "content": "be brief"},
                                                            {"role": "user", "content": "Hello"}]}])
    assert load_prompts(str(trl))[0]["instruction"] == "Hello"
    builtin = load_prompts("builtin", limit=5)
    assert len(builtin) == 5 and builtin[0]["id"] == "eval-00000"


@pytest.mark.parametrize("rows, message", [
    ([{"text": "no prompt field"}], "row 1: no prompt field"),
    ([{"prompt": "a"}, {"prompt": "  "}], "row 2: the prompt is empty"),
    ([{"turns": [{"content": "one"}, {"content": "two"}]}], "multi-turn"),
    ([{"id": 1, "prompt": "a"}, {"id": 1, "prompt": "b"}], "row 2 repeats the id .1. of row 1"),
])
def test_bad_prompt_files_are_refused_with_the_row(tmp_path, rows, message):
    with pytest.raises(DataError, match=message):
        load_prompts(str(_write_jsonl(tmp_path / "p.jsonl", rows)))


def test_unknown_prompt_set_names_the_known_ones():
    with pytest.raises(FileNotFoundError, match="alpaca_eval, arena_hard"):
        load_prompts("alpaca-eval-typo")
