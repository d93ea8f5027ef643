"""Tokenisation traps: one BOS, one EOS, the prompt/response boundary in token space, truncation and drops counted."""
import pytest

from mixdpo_kit.data.loading import DataError, normalise
from mixdpo_kit.data.tokenization import TokenizationSettings, encode_prompt, encode_response, tokenize_pairs
from mixdpo_kit.modeling.tiny import build_tokenizer


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


def test_pairs_whose_response_is_truncated_away_are_dropped_and_counted(chat_pairs):
    tok = build_tokenizer()
    ds, report = normalise(chat_pairs)
    # Every rendered prompt has at least 6 tokens; with max_length 6 nothing is left for any response.
    with pytest.raises(DataError, match="no pairs left"):
        tokenize_pairs(ds, tok, TokenizationSettings(max_length=6, max_prompt_length=6), report)
    assert report.dropped["response truncated away (prompt fills max_length)"] == 6
