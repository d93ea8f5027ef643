"""Generating answers to prompt sets: the AlpacaEval and Arena-Hard files as published, resuming, one decoding per file, from a run and its reference."""
import json
import pytest

from mixdpo_kit.evaluation import generation
from mixdpo_kit.interface.cli import main


TASKS = ["sort 3 1 2", "reverse 4 5 6", "count 1 : 1 2 1", "sort 9 8", "reverse 1 2 3 4", "sort 5 5 1",
         "reverse 7 0", "count 3 : 3 3 3 1", "sort 2 1", "reverse 6 5 4 3 2"]


# Fields each format documents. AlpacaEval: README, "model_outputs ... each dictionary should contain
# instruction and output", plus generator and dataset as in its released outputs. Arena-Hard-Auto:
# gen_answer.py of v0.1 (question_id, answer_id, model_id, choices[].turns[].content, tstamp) and
# of v2.0 (uid, ans_id, model, messages with the assistant's content {"answer": ...}, tstamp, metadata.token_len).
ALPACA_EVAL_FIELDS = {"instruction": str, "output": str, "generator": str, "dataset": str}


ARENA_V01_FIELDS = {"question_id": str, "answer_id": str, "model_id": str, "choices": list, "tstamp": float}


ARENA_V2_FIELDS = {"uid": str, "ans_id": str, "model": str, "messages": list, "tstamp": float, "metadata": dict}


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _has_fields(row, fields):
    return all(isinstance(row.get(k), t) for k, t in fields.items())


def _generate(tiny_llama, prompts, out, *extra):
    return main(["generate", "--model", tiny_llama, "--prompts", str(prompts), "--out", str(out),
                 "--batch-size", "4", "--max-new-tokens", "6", *extra])


def test_generate_writes_alpaca_eval_and_arena_hard_files(tiny_llama, tmp_path):
    prompts = _write_jsonl(tmp_path / "q.jsonl", [{"question_id": f"q{i}", "turns": [{"content": t}]}
                                                  for i, t in enumerate(TASKS)])
    out = tmp_path / "answers" / "tiny.json"
    assert _generate(tiny_llama, prompts, out, "--generator", "tiny") == 0
    alpaca = json.loads(out.read_text())
    assert [r["instruction"] for r in alpaca] == TASKS  # prompt order, though batches ran longest first
    assert all(_has_fields(r, ALPACA_EVAL_FIELDS) and r["generator"] == "tiny" for r in alpaca)
    assert json.loads(alpaca[0]["decoding"]) == {"max_new_tokens": 6, "do_sample": False, "temperature": 1.0,
                                                 "top_p": 1.0, "seed": 0, "chat_template": True}
    arena = [json.loads(line) for line in (tmp_path / "answers" / "model_answer" / "tiny.jsonl").read_text().splitlines()]
    assert [a["question_id"] for a in arena] == [f"q{i}" for i in range(len(TASKS))]
    assert all(_has_fields(a, ARENA_V01_FIELDS) for a in arena)
    assert [a["choices"][0]["turns"][0]["content"] for a in arena] == [r["output"] for r in alpaca]
    assert all(isinstance(a["choices"][0]["turns"][0]["token_len"], int) for a in arena)
    header = json.loads(generation.record_path(out).read_text().splitlines()[0])
    assert header["generator"] == "tiny" and header["decoding"]["max_new_tokens"] == 6

    v2 = _write_jsonl(tmp_path / "q2.jsonl", [{"uid": f"u{i}", "prompt": t} for i, t in enumerate(TASKS[:3])])
    assert _generate(tiny_llama, v2, tmp_path / "v2" / "tiny.json", "--generator", "tiny") == 0
    arena2 = [json.loads(line) for line in (tmp_path / "v2" / "model_answer" / "tiny.jsonl").read_text().splitlines()]
    assert all(_has_fields(a, ARENA_V2_FIELDS) for a in arena2)
    assert [m["role"] for m in arena2[0]["messages"]] == ["user", "assistant"]
    assert isinstance(arena2[0]["messages"][1]["content"]["answer"], str)


def test_generate_resumes_losing_at_most_the_batch_in_flight(tiny_llama, tmp_path, monkeypatch):
    prompts = _write_jsonl(tmp_path / "q.jsonl", [{"prompt": t} for t in TASKS])
    out = tmp_path / "tiny.json"
    real, calls = generation.generate, []

    def crash_on_second_batch(model, tok, inputs, *args, **kw):
        calls.append(len(inputs))
        if len(calls) == 2:
            raise KeyboardInterrupt  # the run is stopped while the second batch generates
        return real(model, tok, inputs, *args, **kw)

    monkeypatch.setattr(generation, "generate", crash_on_second_batch)
    with pytest.raises(KeyboardInterrupt):
        _generate(tiny_llama, prompts, out)
    record = generation.record_path(out)
    kept = [json.loads(line) for line in record.read_text().splitlines()[1:]]
    assert len(kept) == 4  # the first batch is on disk; only the batch in flight is lost
    with record.open("a") as f:
        f.write('{"id": "3", "instruct')  # and a line cut off mid-write is tolerated

    calls.clear()
    monkeypatch.setattr(generation, "generate", lambda *a, **kw: (calls.append(len(a[2])), real(*a, **kw))[1])
    assert _generate(tiny_llama, prompts, out) == 0
    assert sum(calls) == len(TASKS) - 4  # only the missing prompts were generated
    final = {r["instruction"]: r["output"] for r in json.loads(out.read_text())}
    assert len(final) == len(TASKS) and all(final[r["instruction"]] == r["output"] for r in kept)

    calls.clear()
    assert _generate(tiny_llama, prompts, out) == 0 and calls == []  # finished: nothing to redo


def test_generate_refuses_to_mix_decoding_settings(tiny_llama, tmp_path, capsys):
    prompts = _write_jsonl(tmp_path / "q.jsonl", [{"prompt": t} for t in TASKS[:2]])
    out = tmp_path / "tiny.json"
    assert _generate(tiny_llama, prompts, out) == 0
    assert _generate(tiny_llama, prompts, out, "--temperature", "0.7") == 2
    assert "made with other settings" in capsys.readouterr().err


def test_generate_from_a_run_and_its_reference(small_cfg, tmp_path, monkeypatch):
    """A trained run answers with its adapter on; --reference answers as the SFT model (adapter off):
    the same greedy answers the run's own evaluation recorded after and before training."""
    from mixdpo_kit.workflows.runs import run

    cfg = small_cfg.override(train={"learning_rate": 5e-2, "max_steps": 8})  # enough to move the answers
    summary = run(cfg, tmp_path / "run")
    common = ["--prompts", "builtin", "--max-prompts", "8", "--max-new-tokens", "6", "--batch-size", "8"]
    answers = tmp_path / "answers"
    assert main(["generate", "--run", str(tmp_path / "run"), "--out", str(answers / "run.json"), *common]) == 0
    assert main(["generate", "--run", str(tmp_path / "run"), "--reference", "--out", str(answers / "run-reference.json"),
                 *common]) == 0
    policy, sft = (json.loads((answers / f).read_text()) for f in ("run.json", "run-reference.json"))
    assert (policy[0]["generator"], sft[0]["generator"]) == ("run", "run-reference")
    shown = summary["evaluation"]["generations"]
    assert any(g["before"] != g["after"] for g in shown)
    assert [(g["before"], g["after"]) for g in shown] == [(s["output"], p["output"]) for s, p in zip(sft, policy)][:len(shown)]
    # The notebook's one-load helper writes the same files with the same record headers: it resumes
    # the CLI's answers and generates nothing.
    monkeypatch.setattr(generation, "generate", lambda *a, **k: pytest.fail("generated again"))
    files = generation.answer_with_run_and_reference(tmp_path / "run", "builtin", answers, max_prompts=8,
                                                     decoding=generation.Decoding(max_new_tokens=6), batch_size=8)
    assert files == (answers / "run.json", answers / "run-reference.json")


def test_generation_pads_left_without_changing_the_tokenizer(tiny_llama, monkeypatch):
    """The padding side is the call's: the tokenizer (which another thread may be using) is never
    changed, and a batch of prompts of different lengths answers as each prompt alone does."""
    from mixdpo_kit.core.config import ModelConfig
    from mixdpo_kit.evaluation.evaluate import generate
    from mixdpo_kit.modeling.model import build_policy

    policy = build_policy(ModelConfig(name_or_path=tiny_llama, mode="full"), with_reference=False)
    tok = policy.tokenizer
    tok.padding_side = "right"
    setattr_ = type(tok).__setattr__

    def guarded(self, name, value):
        if name == "padding_side":
            raise AssertionError("the tokenizer's padding side was changed")
        setattr_(self, name, value)

    monkeypatch.setattr(type(tok), "__setattr__", guarded)
    prompts = ["sort: 3 1 2", "reverse: 9 8 7 6 5 4 3"]
    together = generate(policy.model, tok, prompts, 6, batch_size=2)
    alone = [generate(policy.model, tok, [p], 6, batch_size=1)[0] for p in prompts]
    assert together == alone and tok.padding_side == "right"
