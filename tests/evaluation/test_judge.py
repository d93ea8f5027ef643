"""Judging answers with a local reward model: win rate and length-controlled win rate by hand and against an independent fit, matching, caching, ties."""
import json
import numpy as np
import pytest
import torch

from mixdpo_kit.core.config import JudgeConfig
from mixdpo_kit.data import synthetic
from mixdpo_kit.data.loading import DataError
from mixdpo_kit.evaluation.judge import (bootstrap_interval, compare_answers, fit_length_logistic, judge_files, verdict_lines,
                                         length_controlled_win_rate, match_answers, wins_from_scores)
from mixdpo_kit.interface.cli import main
from mixdpo_kit.modeling.tiny import build_tiny_reward_model


TASKS = ["sort 3 1 2", "reverse 4 5 6", "count 1 : 1 2 1", "sort 9 8", "reverse 1 2 3 4", "sort 5 5 1",
         "reverse 7 0", "count 3 : 3 3 3 1", "sort 2 1", "reverse 6 5 4 3 2"]


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _generate(tiny_llama, prompts, out, *extra):
    return main(["generate", "--model", tiny_llama, "--prompts", str(prompts), "--out", str(out),
                 "--batch-size", "4", "--max-new-tokens", "6", *extra])


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
