"""Judge two sets of answers with a local reward model: win rate, length-controlled win rate.

For every instruction answered in both files, the reward model scores A's and B's answer; A wins
when its score is higher (a tie counts one half). Reported:

- the **win rate** of A over B, with a percentile-bootstrap 95 % interval over prompts;
- a **length-controlled win rate** in the spirit of AlpacaEval 2: a logistic model
  ``P(A wins on prompt i) = σ(θ₀ + θ₁ · tanh(Δℓᵢ / s))``, with ``Δℓᵢ`` A's answer length minus
  B's in characters and ``s`` the standard deviation of the ``Δℓᵢ``, fitted by maximum likelihood;
  the LC win rate is ``σ(θ₀)``, the win rate the model predicts at equal lengths (bootstrap
  interval too). Limits: it removes only the part of the judge's preference that a monotone
  function of length difference explains, so a judge that rewards what longer answers also
  contain (more steps, more detail) loses that too; with few prompts, or when length alone
  separates wins from losses, ``θ`` is poorly determined (a small ridge keeps it finite) and the
  interval is wide. AlpacaEval's own GLM also has an instruction-difficulty term, fitted across
  many models; with one pair of models it cannot be fitted, so it is left out;
- mean lengths (characters and words) and a plotly figure of score difference against length
  difference.

On the built-in task the ground-truth reward of each answer is known, so the judge's verdict on
each prompt can be checked: ``builtin`` reports the true-reward win rate and the share of prompts
(where the true rewards differ) on which the judge picked the truly better answer.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mixdpo_kit.core.config import CacheConfig, JudgeConfig
from mixdpo_kit.core.distributed import on_main
from mixdpo_kit.core.errors import MissingFile
from mixdpo_kit.data.loading import DataError, read_records
from mixdpo_kit.objectives.routing import logistic

RIDGE = 1e-3  # on θ₁ only, per prompt: keeps the fit finite when length separates wins from losses


def read_answers(path: str | Path) -> list[dict]:
    """Answer rows ``{instruction, output, id}`` of any answer file the evaluations use, as
    published: an AlpacaEval ``model_outputs`` JSON list (``instruction``, ``output``), an
    Arena-Hard answer file (v2.0: ``uid`` and ``messages``, the answer in ``{"answer": ...}``;
    v0.1: ``question_id`` and ``choices``), JSONL or gzipped, or a kit ``.generations.jsonl``
    record. ``id`` is the row's ``uid`` / ``question_id`` / ``id`` (None without one); a repeated id
    is an error naming the rows."""
    path = Path(path)
    if not path.exists():
        raise MissingFile(f"answers file not found: {path}")
    rows = read_records(path)
    if path.name.endswith(".generations.jsonl"):
        rows = rows[1:]  # the record's first line is its header
    if not rows:
        raise DataError(f"{path}: no answers in the file")
    out, first_row = [], {}
    for number, row in enumerate(rows, start=1):
        answer = _answer_row(row, f"{path}: row {number}")
        if answer["id"] is not None:
            if answer["id"] in first_row:
                raise DataError(f"{path}: row {number} repeats the id {answer['id']!r} of row {first_row[answer['id']]}")
            first_row[answer["id"]] = number
        out.append(answer)
    return out


def _answer_row(row: dict, where: str) -> dict:
    key = next((k for k in ("uid", "question_id", "id") if k in row), None)
    if "messages" in row:  # Arena-Hard v2.0 (also its v0.1 data in the current repository)
        users = [m["content"] for m in row["messages"] if m.get("role") == "user"]
        answers = [m["content"] for m in row["messages"] if m.get("role") == "assistant"]
        instruction = users[0] if users else None
        output = answers[-1].get("answer") if answers and isinstance(answers[-1], dict) else \
            (answers[-1] if answers else None)
    elif "choices" in row:  # Arena-Hard v0.1 as gen_answer.py wrote it
        instruction, output = row.get("instruction"), row["choices"][0]["turns"][-1]["content"]
    else:
        instruction, output = row.get("instruction"), row.get("output")
    if not isinstance(output, str) or (not isinstance(instruction, str) and key is None):
        raise DataError(f"{where}: no answer text with an instruction or an id (instruction/output, Arena-Hard "
                        f"messages or choices); it has {sorted(row)}")
    return {"instruction": instruction if isinstance(instruction, str) else None, "output": output,
            "id": None if key is None else str(row[key]),
            "generator": row.get("generator") or row.get("model") or row.get("model_id")}


def match_answers(a: list[dict], b: list[dict]) -> tuple[list[str], list[str], list[str], dict]:
    """(instructions, A's outputs, B's outputs) for the prompts both answered, in A's order, and a
    count of what was left out and why. Rows are matched by id (Arena-Hard's ``uid``) when every
    row of both files has one, else by instruction text, exactly as written."""
    by_id = all(r.get("id") is not None for r in a + b)
    key = (lambda r: r["id"]) if by_id else (lambda r: r["instruction"])
    by_b = {}
    for r in b:
        by_b.setdefault(key(r), r)
    seen, keep = set(), []
    for r in a:
        if key(r) in by_b and key(r) not in seen:
            seen.add(key(r))
            keep.append(r)
    report = {"matched_by": "id" if by_id else "instruction", "matched": len(keep),
              "only_in_a": len({key(r) for r in a} - set(by_b)), "only_in_b": len(set(by_b) - {key(r) for r in a}),
              "duplicates_in_a": len(a) - len({key(r) for r in a}), "duplicates_in_b": len(b) - len(by_b)}
    if not keep:
        raise DataError(f"the two answer files share no {report['matched_by']}; were they made on the same prompt set?")
    instructions = [r.get("instruction") or by_b[key(r)]["instruction"] for r in keep]
    return instructions, [r["output"] for r in keep], [by_b[key(r)]["output"] for r in keep], report


def wins_from_scores(score_a, score_b) -> np.ndarray:
    """1 where A scored higher, 0 where lower, 0.5 on a tie."""
    a, b = np.asarray(score_a, float), np.asarray(score_b, float)
    return (a > b) + 0.5 * (a == b)


def fit_length_logistic(wins, length_diff, ridge: float = RIDGE, iterations: int = 50) -> tuple[float, float]:
    """``(θ₀, θ₁)`` of ``P(win) = σ(θ₀ + θ₁·tanh(Δℓ/s))`` by Newton's method on the (soft-label)
    log-likelihood, with ``ridge · n · θ₁²/2`` added; ``s`` is the standard deviation of ``Δℓ``."""
    y = np.asarray(wins, float)
    d = np.asarray(length_diff, float)
    s = d.std()
    x = np.tanh(d / s) if s > 0 else np.zeros_like(d)
    X = np.stack([np.ones_like(x), x], axis=1)
    penalty = np.diag([0.0, ridge * len(y)])
    theta = np.zeros(2)
    for _ in range(iterations):
        p = logistic(X @ theta)
        grad = X.T @ (y - p) - penalty @ theta
        hess = (X * (p * (1 - p))[:, None]).T @ X + penalty + 1e-9 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        theta = theta + step
        if np.abs(step).max() < 1e-10:
            break
    return float(theta[0]), float(theta[1])


def length_controlled_win_rate(wins, length_diff) -> float:
    """The win rate the length logistic predicts at equal lengths, ``σ(θ₀)``."""
    return float(logistic(fit_length_logistic(wins, length_diff)[0]))


def bootstrap_interval(statistic, *columns, n_boot: int, seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap 95 % interval of ``statistic(*columns)``, resampling prompts."""
    rng = np.random.default_rng(seed)
    cols = [np.asarray(c, float) for c in columns]
    n = len(cols[0])
    values = [statistic(*(c[idx] for c in cols)) for idx in (rng.integers(0, n, n) for _ in range(n_boot))]
    lo, hi = np.percentile(values, [2.5, 97.5])
    return float(lo), float(hi)


def compare_answers(instructions, out_a, out_b, score_a, score_b, n_boot: int) -> dict:
    """Every number of the verdict from the matched answers and their scores."""
    wins = wins_from_scores(score_a, score_b)
    len_a = np.array([len(o) for o in out_a], float)
    len_b = np.array([len(o) for o in out_b], float)
    theta0, theta1 = fit_length_logistic(wins, len_a - len_b)
    result = {
        "prompts": len(wins),
        "win_rate": float(wins.mean()),
        "win_rate_ci": bootstrap_interval(np.mean, wins, n_boot=n_boot),
        "lc_win_rate": float(logistic(theta0)),
        "lc_win_rate_ci": bootstrap_interval(length_controlled_win_rate, wins, len_a - len_b, n_boot=n_boot),
        "length_coefficient": theta1,
        "ties": int((wins == 0.5).sum()),
        "mean_length_chars": {"a": float(len_a.mean()), "b": float(len_b.mean())},
        "mean_length_words": {"a": float(np.mean([len(o.split()) for o in out_a])),
                              "b": float(np.mean([len(o.split()) for o in out_b]))},
        "mean_score": {"a": float(np.mean(score_a)), "b": float(np.mean(score_b))},
    }
    truth = builtin_truth(instructions, out_a, out_b, wins, n_boot)
    if truth:
        result["builtin"] = truth
    return result


def builtin_truth(instructions, out_a, out_b, judge_wins, n_boot: int) -> dict | None:
    """On built-in task prompts: the true-reward win rate and how often the judge agreed with it
    (None when any prompt is not a built-in task prompt)."""
    from mixdpo_kit.data import synthetic

    try:
        true_a = np.array([synthetic.true_reward(p, o) for p, o in zip(instructions, out_a)])
        true_b = np.array([synthetic.true_reward(p, o) for p, o in zip(instructions, out_b)])
    except ValueError:
        return None
    true_wins = wins_from_scores(true_a, true_b)
    decided = true_a != true_b
    agree = (judge_wins[decided] == true_wins[decided]).astype(float)
    return {"true_win_rate": float(true_wins.mean()),
            "true_win_rate_ci": bootstrap_interval(np.mean, true_wins, n_boot=n_boot),
            "mean_true_reward": {"a": float(true_a.mean()), "b": float(true_b.mean())},
            "prompts_decided": int(decided.sum()),
            "agreement": float(agree.mean()) if decided.any() else float("nan"),
            "agreement_ci": bootstrap_interval(np.mean, agree, n_boot=n_boot) if decided.any() else (np.nan, np.nan)}


def judge_files(a_path, b_path, reward_model: str, out_dir=None, cache_dir: str | Path | None = None,
                settings: JudgeConfig | None = None, trust_remote_code: bool = False,
                models_dir: str | Path | None = None) -> dict:
    """Judge answer file A against B with ``reward_model``; with ``out_dir``, write ``judgement.json``
    (the verdict and every prompt's scores) and ``judgement.html`` (the figure and the verdict).
    ``settings``: the judge's batch, length and bootstrap settings (default: the config's defaults);
    ``cache_dir``: where reward scores are cached (default: the default cache's ``judge`` folder);
    ``models_dir``: where a ``tiny-reward*`` judge is built (default: the default cache's ``models``)."""
    settings = settings or JudgeConfig()
    cache_dir = cache_dir if cache_dir is not None else CacheConfig().path("judge")
    from mixdpo_kit.data.chat import conversation_text
    from mixdpo_kit.margins.scoring import RewardModelScorer

    a_rows, b_rows = read_answers(a_path), read_answers(b_path)
    instructions, out_a, out_b, left_out = match_answers(a_rows, b_rows)
    scorer = RewardModelScorer(reward_model, cache_dir, settings.score_batch_size, settings.max_length,
                               trust_remote_code, models_dir=models_dir)
    templated = scorer.has_template
    texts = lambda outs: [conversation_text(scorer.tokenizer, p, o, templated)  # noqa: E731
                          for p, o in zip(instructions, outs)]
    score_a, score_b = scorer.scores(texts(out_a), templated), scorer.scores(texts(out_b), templated)
    verdict = {"a": {"file": str(a_path), "generator": a_rows[0].get("generator") or Path(a_path).stem},
               "b": {"file": str(b_path), "generator": b_rows[0].get("generator") or Path(b_path).stem},
               "reward_model": reward_model, "left_out": left_out,
               **compare_answers(instructions, out_a, out_b, score_a, score_b, settings.bootstrap)}
    if out_dir is not None:
        on_main(write_judgement, out_dir, verdict, instructions, out_a, out_b, score_a, score_b)
    return verdict


def verdict_lines(v: dict) -> list[str]:
    """The verdict in a few sentences."""
    a, b = v["a"]["generator"], v["b"]["generator"]
    lines = [f"{a} vs {b} on {v['prompts']} prompts, judged by {v['reward_model']}:",
             f"win rate {100 * v['win_rate']:.1f} % (95 % bootstrap interval {100 * v['win_rate_ci'][0]:.1f}–"
             f"{100 * v['win_rate_ci'][1]:.1f}); length-controlled {100 * v['lc_win_rate']:.1f} % "
             f"({100 * v['lc_win_rate_ci'][0]:.1f}–{100 * v['lc_win_rate_ci'][1]:.1f})",
             f"mean length {v['mean_length_chars']['a']:.0f} vs {v['mean_length_chars']['b']:.0f} characters; "
             f"{v['ties']} ties (equal scores, e.g. identical answers; each counts one half)"]
    m = v["left_out"]
    left = {k: n for k, n in m.items() if k not in ("matched", "matched_by") and n}
    if "matched" in m:
        lines.append(f"matched {m['matched']} prompts of the two files by {m['matched_by']}" +
                     ("; left out: " + ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in left.items()) if left else
                      "; none left out"))
    elif left:
        lines.append("left out: " + ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in left.items()))
    if "builtin" in v:
        t = v["builtin"]
        checked = (f"the judge picked the truly better answer on {100 * t['agreement']:.1f} % of the "
                   f"{t['prompts_decided']} prompts whose true rewards differ" if t["prompts_decided"]
                   else "the two answers have the same true reward on every prompt")
        lines.append(f"true-reward win rate {100 * t['true_win_rate']:.1f} % ({100 * t['true_win_rate_ci'][0]:.1f}–"
                     f"{100 * t['true_win_rate_ci'][1]:.1f}); {checked}")
    return lines


def write_judgement(out_dir, verdict: dict, instructions, out_a, out_b, score_a, score_b) -> None:
    """``judgement.json`` and ``judgement.html`` in ``out_dir``."""
    from mixdpo_kit.reports.report import write_html

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = [{"instruction": p, "score_a": float(sa), "score_b": float(sb), "length_a": len(oa), "length_b": len(ob)}
            for p, oa, ob, sa, sb in zip(instructions, out_a, out_b, score_a, score_b)]
    (out / "judgement.json").write_text(json.dumps({**verdict, "per_prompt": rows}, indent=1))
    write_html(out / "judgement.html", "mixdpo-kit judgement", [judgement_figure(out)],
               {"Verdict": [{"": line} for line in verdict_lines(verdict)]})


def judge_policy(cfg, policy, out_dir) -> dict:
    """A run's judged verdict against its SFT model (``cfg.judge``): the policy answers the prompt
    set into ``<out_dir>/answers/``, the reference (adapter off) into the shared cache (so every run
    of a comparison reuses one set of SFT answers), and the reward model judges the two."""
    from mixdpo_kit.core.cache import digest
    from mixdpo_kit.evaluation.generation import Decoding, generate_answers, run_name
    from mixdpo_kit.data.prompt_sets import load_prompts

    jc, out_dir = cfg.judge, Path(out_dir)
    prompts = load_prompts(jc.prompts, jc.max_prompts)
    decoding = Decoding(max_new_tokens=jc.max_new_tokens)
    mine = out_dir / "answers" / f"{run_name(out_dir)}.json"
    generate_answers(policy.model, policy.tokenizer, prompts, mine, run_name(out_dir), decoding, jc.batch_size)
    key = digest(policy.identity(), [p["instruction"] for p in prompts], vars(decoding))
    theirs = cfg.cache.path("sft_answers") / key / "sft.json"
    with policy.reference() as ref:
        generate_answers(ref, policy.tokenizer, prompts, theirs, "sft", decoding, jc.batch_size, policy.identity())
    return judge_files(mine, theirs, jc.reward_model, out_dir / "judge", cfg.cache.path("judge"), jc,
                       models_dir=cfg.cache.path("models"))


def judgement_figure(out_dir):
    """The score-difference vs length-difference figure of a judgement written to ``out_dir``."""
    from mixdpo_kit.reports import viz

    v = json.loads((Path(out_dir) / "judgement.json").read_text())
    rows = v["per_prompt"]
    return viz.judge_scatter([r["score_a"] - r["score_b"] for r in rows], [r["length_a"] - r["length_b"] for r in rows],
                             v["a"]["generator"], v["b"]["generator"])
