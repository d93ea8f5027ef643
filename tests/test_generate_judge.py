"""Generating answers on prompt sets (formats, resume) and judging them with a local reward model."""
import json

import numpy as np
import pytest
import torch

from mixdpo_kit.core.config import JudgeConfig
from mixdpo_kit.data import synthetic
from mixdpo_kit.data.loading import DataError
from mixdpo_kit.data.prompt_sets import load_prompts
from mixdpo_kit.evaluation import generation
from mixdpo_kit.evaluation.judge import (bootstrap_interval, compare_answers, fit_length_logistic, judge_files, verdict_lines,
                                         length_controlled_win_rate, match_answers, wins_from_scores)
from mixdpo_kit.interface.cli import main
from mixdpo_kit.modeling.tiny import build_tiny_reward_model

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


# --- the judge -------------------------------------------------------------------------------------

def test_wins_and_bootstrap():
    assert wins_from_scores([2, 1, 3], [1, 1, 5]).tolist() == [1.0, 0.5, 0.0]
    wins = np.r_[np.ones(60), np.zeros(40)]
    lo, hi = bootstrap_interval(np.mean, wins, n_boot=2000)
    assert lo < 0.6 < hi and hi - lo == pytest.approx(2 * 1.96 * np.sqrt(0.24 / 100), rel=0.15)
    assert bootstrap_interval(np.mean, wins, n_boot=200) == bootstrap_interval(np.mean, wins, n_boot=200)


def test_length_controlled_win_rate_by_hand():
    # Equal lengths: the length term is silent and the LC win rate is the plain win rate.
    wins = np.r_[np.ones(7), np.zeros(3)]
    assert length_controlled_win_rate(wins, np.zeros(10)) == pytest.approx(0.7, abs=1e-9)
    # Two groups at Δℓ = ±c: unpenalised, σ(θ₀ ± θ₁·tanh(1)) equals each group's win rate, so
    # θ₀ = (logit 0.8 + logit 0.4) / 2 and the LC win rate is σ(θ₀) — not the raw 0.6.
    wins = np.r_[np.ones(8), np.zeros(2), np.ones(4), np.zeros(6)]
    diff = np.r_[np.full(10, 50.0), np.full(10, -50.0)]
    theta0, theta1 = fit_length_logistic(wins, diff, ridge=0.0)
    logit = lambda p: np.log(p / (1 - p))  # noqa: E731
    assert theta0 == pytest.approx((logit(0.8) + logit(0.4)) / 2, abs=1e-8)
    assert theta1 == pytest.approx((logit(0.8) - logit(0.4)) / 2 / np.tanh(1.0), abs=1e-8)


def test_length_logistic_matches_an_independent_fit():
    """Newton's solution equals torch's L-BFGS on the same penalised soft-label likelihood."""
    rng = np.random.default_rng(0)
    diff = rng.normal(100, 300, 200)
    x = np.tanh(diff / diff.std())
    wins = (rng.random(200) < 1 / (1 + np.exp(-(0.3 + 1.2 * x)))).astype(float)
    wins[:10] = 0.5
    theta = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    X, y = torch.tensor(np.c_[np.ones(200), x]), torch.tensor(wins)
    opt = torch.optim.LBFGS([theta], max_iter=500, tolerance_grad=1e-12, tolerance_change=1e-14,
                            line_search_fn="strong_wolfe")

    def nll():
        opt.zero_grad()
        z = X @ theta
        loss = -(y * torch.nn.functional.logsigmoid(z) + (1 - y) * torch.nn.functional.logsigmoid(-z)).sum() \
            + 1e-3 * 200 * theta[1] ** 2 / 2
        loss.backward()
        return loss

    opt.step(nll)
    assert fit_length_logistic(wins, diff) == pytest.approx(theta.detach().numpy().tolist(), abs=1e-6)


def test_a_length_loving_judge_is_corrected():
    """Wins driven by length alone: the raw win rate favours the longer model, the LC one is near 1/2."""
    rng = np.random.default_rng(1)
    diff = rng.normal(150, 200, 2000)  # A writes longer answers
    wins = (rng.random(2000) < 1 / (1 + np.exp(-2.0 * np.tanh(diff / diff.std())))).astype(float)
    assert wins.mean() > 0.65
    assert length_controlled_win_rate(wins, diff) == pytest.approx(0.5, abs=0.05)


def test_match_answers_counts_what_it_leaves_out():
    a = [{"instruction": "p1", "output": "a1"}, {"instruction": "p2", "output": "a2"}, {"instruction": "p2", "output": "x"}]
    b = [{"instruction": "p2", "output": "b2"}, {"instruction": "p3", "output": "b3"}]
    prompts, out_a, out_b, left = match_answers(a, b)
    assert (prompts, out_a, out_b) == (["p2"], ["a2"], ["b2"])
    assert left == {"matched_by": "instruction", "matched": 1, "only_in_a": 1, "only_in_b": 1, "duplicates_in_a": 1,
                    "duplicates_in_b": 0}
    with pytest.raises(DataError, match="share no instruction"):
        match_answers(a, [{"instruction": "other", "output": "o"}])


def test_judge_end_to_end_with_a_tiny_reward_model(tmp_path, capsys):
    rm = build_tiny_reward_model(tmp_path / "rm")
    exact = [{"instruction": p, "output": " ".join(synthetic.solve(p)), "generator": "exact"} for p in TASKS]
    sloppy = [{"instruction": p, "output": " ".join(synthetic.solve(p)[:1]) + " ok ok", "generator": "sloppy"}
              for p in TASKS]
    (tmp_path / "a.json").write_text(json.dumps(exact))
    (tmp_path / "b.json").write_text(json.dumps(sloppy))
    out = tmp_path / "judged"
    code = main(["judge", "--a", str(tmp_path / "a.json"), "--b", str(tmp_path / "b.json"), "--reward-model", str(rm),
                 "--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--bootstrap", "200"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "exact vs sloppy on 10 prompts" in printed and "length-controlled" in printed
    verdict = json.loads((out / "judgement.json").read_text())
    assert verdict["prompts"] == 10 and len(verdict["per_prompt"]) == 10
    assert verdict["win_rate_ci"][0] <= verdict["win_rate"] <= verdict["win_rate_ci"][1]
    # On built-in task prompts the truth is known: exact answers beat sloppy ones on every prompt.
    truth = verdict["builtin"]
    assert truth["true_win_rate"] == 1.0 and truth["prompts_decided"] == 10
    judge_wins = wins_from_scores([r["score_a"] for r in verdict["per_prompt"]], [r["score_b"] for r in verdict["per_prompt"]])
    assert truth["agreement"] == pytest.approx(judge_wins.mean())
    assert "plotly" in (out / "judgement.html").read_text()


def test_judge_scores_come_from_the_cache_the_second_time(tmp_path, monkeypatch):
    rm = build_tiny_reward_model(tmp_path / "rm")
    rows = [{"instruction": p, "output": " ".join(synthetic.solve(p)), "generator": "g"} for p in TASKS[:4]]
    (tmp_path / "a.json").write_text(json.dumps(rows))
    (tmp_path / "b.json").write_text(json.dumps([{**r, "output": "0"} for r in rows]))
    first = judge_files(tmp_path / "a.json", tmp_path / "b.json", str(rm), cache_dir=tmp_path / "c",
                        settings=JudgeConfig(bootstrap=50))
    from mixdpo_kit.margins import scoring

    monkeypatch.setattr(scoring, "score_texts", lambda *a, **k: pytest.fail("scored again despite the cache"))
    second = judge_files(tmp_path / "a.json", tmp_path / "b.json", str(rm), cache_dir=tmp_path / "c",
                        settings=JudgeConfig(bootstrap=50))
    assert second["mean_score"] == first["mean_score"]


def test_compare_answers_outside_the_builtin_task_has_no_truth():
    v = compare_answers(["Write a poem"] * 3, ["aaa", "bb", "c"], ["a", "bb", "ccc"], [1.0, 0.0, 0.2], [0.0, 0.0, 0.5],
                        n_boot=50)
    assert "builtin" not in v and v["ties"] == 1 and v["win_rate"] == pytest.approx(0.5)


def test_identical_answers_are_all_ties():
    outs = [" ".join(synthetic.solve(p)) for p in TASKS]
    v = compare_answers(TASKS, outs, outs, np.ones(10), np.ones(10), n_boot=50)
    assert (v["win_rate"], v["ties"], v["builtin"]["prompts_decided"]) == (0.5, 10, 0)
    assert v["lc_win_rate"] == pytest.approx(0.5)
    lines = verdict_lines({"a": {"generator": "a"}, "b": {"generator": "b"}, "reward_model": "rm", "left_out": {}, **v})
    assert "same true reward on every prompt" in lines[-1]
