"""Loading, normalising, dropping with reasons, and tokenisation traps (BOS, EOS, boundary, padding)."""
import json

import datasets
import pytest
import torch

from mixdpo_kit.data.loading import DataError, load_preferences, normalise
from mixdpo_kit.data.tokenization import TokenizationSettings, encode_prompt, encode_response, tokenize_pairs
from mixdpo_kit.modeling.logprobs import sequence_logps
from mixdpo_kit.modeling.pairbatch import separate_rows
from mixdpo_kit.modeling.tiny import build_tokenizer


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
    with pytest.raises(DataError, match=r"missing required column\(s\) \['chosen', 'rejected'\].*good"):
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


def test_single_bos_with_and_without_template_bos():
    for with_bos in (True, False):
        tok = build_tokenizer(with_bos_in_template=with_bos)
        ids = encode_prompt(tok, [{"role": "user", "content": "sort 1 2"}])
        assert ids.count(tok.bos_token_id) == (1 if with_bos else 0)
    tok = build_tokenizer()
    assert encode_prompt(tok, "sort 1 2").count(tok.bos_token_id) == 1  # plain text gets exactly one


def test_response_ends_with_one_eos_and_prompt_boundary_is_exact():
    tok = build_tokenizer()
    prompt = [{"role": "user", "content": "sort 2 1"}]
    p, r = encode_prompt(tok, prompt), encode_response(tok, prompt, "1 2")
    assert r[-1] == tok.eos_token_id and r.count(tok.eos_token_id) == 1
    full = tok(tok.apply_chat_template(prompt + [{"role": "assistant", "content": "1 2"}], tokenize=False),
               add_special_tokens=False)["input_ids"]
    assert p + r == full  # same ids as the whole rendered conversation: no merge across the boundary
    assert tok.decode(r, skip_special_tokens=True) == "1 2"
    assert encode_response(tok, "plain", "1 2")[-1] == tok.eos_token_id  # plain text: EOS appended


def test_truncation_and_drop_are_counted(chat_pairs):
    tok = build_tokenizer()
    ds, report = normalise(chat_pairs)
    _, kept = tokenize_pairs(ds, tok, TokenizationSettings(max_length=9, max_prompt_length=7), report)
    assert report.truncated > 0 and len(kept) == 6
    ds, report = normalise(chat_pairs)
    _, kept = tokenize_pairs(ds, tok, TokenizationSettings(max_length=9, max_prompt_length=7, truncation="drop"), report)
    assert report.dropped["longer than max_length / max_prompt_length"] == 6 - len(kept) > 0
    assert report.rows_kept == len(kept)


def test_padding_does_not_change_sequence_logps(tiny_llama):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).eval()
    prompts, responses = [[2, 4, 17, 8, 9]], [[9, 8, 3]]
    alone = sequence_logps(model, separate_rows(prompts, responses, 0))
    padded = sequence_logps(model, separate_rows(prompts + [[2, 4, 17, 8, 9, 10, 11, 12]],
                                                  responses + [[9, 8, 10, 11, 12, 3]], 0))
    assert torch.allclose(alone[0][0], padded[0][0], atol=1e-5)
    assert alone[1][0] == padded[1][0] == 3


def test_pairs_whose_response_is_truncated_away_are_dropped_and_counted(chat_pairs):
    tok = build_tokenizer()
    ds, report = normalise(chat_pairs)
    # Every rendered prompt has at least 6 tokens; with max_length 6 nothing is left for any response.
    with pytest.raises(DataError, match="no pairs left"):
        tokenize_pairs(ds, tok, TokenizationSettings(max_length=6, max_prompt_length=6), report)
    assert report.dropped["response truncated away (prompt fills max_length)"] == 6


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
