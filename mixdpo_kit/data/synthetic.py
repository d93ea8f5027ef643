"""The built-in task: small digit puzzles with an exact, computable reward.

Why this task: MixDPO's mechanism needs (1) a true reward we can compute for any response,
(2) a noisy judge whose small rating gaps often disagree with the true reward, and
(3) UltraFeedback-style binarisation (best-rated candidate vs a random other one). Then a
small-margin pair is an unreliable comparison whose chosen response is still a decent
demonstration — the case MixDPO routes to SFT. Everything here is generated from a seed;
nothing is copied from another dataset.

Prompts look like ``sort 3 1 2`` / ``reverse 4 0 7`` / ``count 3 : 3 1 3``; answers are
space-separated digits. The vocabulary is tiny so a model of a few hundred thousand
parameters learns the task on a CPU in a minute.
"""
from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

from mixdpo_kit.data.shipped import shipped_file

DIGITS = [str(d) for d in range(10)]
TASKS = ("sort", "reverse", "count")
FILLER = ("ok", "so", "the", "answer", "is", "well", ".")
# Words the tokenizer must know (besides special tokens).
VOCAB_WORDS = DIGITS + list(TASKS) + [":"] + list(FILLER)
LENGTH_PENALTY = 0.03  # per token beyond the exact answer's length: mild, like a judge's taste


def solve(prompt: str) -> list[str]:
    """The exact answer to a task prompt, as a list of digit tokens."""
    words = prompt.split()
    if not words or words[0] not in TASKS:
        raise ValueError(f"not a task prompt: {prompt!r}")
    task, args = words[0], words[1:]
    if task == "sort":
        return sorted(args)
    if task == "reverse":
        return args[::-1]
    target, items = args[0], args[2:]  # "count T : items..."
    return list(str(items.count(target)))


def true_reward(prompt: str, response: str) -> float:
    """Ground-truth reward in [0, 1]: positional correctness minus a mild length penalty.

    Non-digit words are ignored for correctness but still cost length, so verbose answers
    score a little below exact ones, truncated answers get partial credit and wrong digits
    lose their positions.
    """
    answer = solve(prompt)
    words = re.findall(r"[0-9]|[^\s0-9]+", response)  # "9." is the digit 9 and a full stop
    digits = [w for w in words if w in DIGITS]
    hits = sum(a == b for a, b in zip(answer, digits))
    correctness = hits / max(len(answer), len(digits), 1)
    extra = max(0, len(words) - len(answer))
    return max(0.0, min(1.0, correctness - LENGTH_PENALTY * extra))


def _prompt(rng: random.Random) -> str:
    task = rng.choice(TASKS)
    n = rng.randint(3, 6)
    items = [rng.choice(DIGITS) for _ in range(n)]
    if task == "count":
        return f"count {rng.choice(items)} : " + " ".join(items)
    return f"{task} " + " ".join(items)


def response_kinds(prompt: str, rng: random.Random) -> dict[str, str]:
    """One response of each kind: the exact answer, a brief one (answer plus a full stop, nearly as
    good), a verbose one, a partly wrong one, a truncated one, and one that copies the input."""
    answer = solve(prompt)
    wrong = list(answer)
    for i in rng.sample(range(len(wrong)), k=min(len(wrong), rng.randint(1, 2))):
        wrong[i] = rng.choice(DIGITS)
    verbose = rng.choice(["the answer is", "ok so", "well the answer is", "so"]).split() + answer + ["."]
    truncated = answer[: max(1, len(answer) - rng.randint(1, 2))] if len(answer) > 1 else [rng.choice(DIGITS)]
    copied = [w for w in prompt.split()[1:] if w in DIGITS][: len(answer) + 1]  # ignores the task
    kinds = {"exact": answer, "brief": answer + ["."], "verbose": verbose, "wrong": wrong, "truncated": truncated,
             "copied": copied}
    return {k: " ".join(v) for k, v in kinds.items()}


def _candidates(prompt: str, rng: random.Random) -> list[str]:
    """Four responses of varied quality, like the four models UltraFeedback compares: the exact
    answer and three distinct others (a near-tie with the brief answer is common, as in UltraFeedback)."""
    kinds = response_kinds(prompt, rng)
    exact = kinds.pop("exact")
    texts = list(kinds.values())
    # Distinct texts only: a pair whose two responses are identical carries no preference.
    others = [t for i, t in enumerate(texts) if t and t != exact and t not in texts[:i]]
    picks = [exact] + rng.sample(others, k=min(3, len(others)))
    rng.shuffle(picks)
    return picks


def judge_rating(reward: float, rng: random.Random, noise: float) -> float:
    """A noisy 1–10 judge: the true reward plus Gaussian noise, rounded to 0.5 like UltraFeedback."""
    raw = 1.0 + 9.0 * reward + rng.gauss(0.0, noise)
    return min(10.0, max(1.0, round(raw * 2) / 2))


@dataclass(frozen=True)
class SyntheticSpec:
    """Sizes and noise of the built-in task."""

    n_sft: int = 2000
    n_train_prefs: int = 2000
    n_test_prefs: int = 200
    n_eval_prompts: int = 256
    n_dev_prompts: int = 256  # held out for choosing hyper-parameters, never for reporting
    judge_noise: float = 1.0
    # The SFT demonstrations come from mixed sources, like a real SFT set: mostly right, not all.
    sft_sources: tuple[tuple[str, float], ...] = (("exact", 0.5), ("verbose", 0.2), ("truncated", 0.15),
                                                  ("wrong", 0.15))
    seed: int = 0


def _chat(text: str, role: str = "user") -> list[dict]:
    return [{"role": role, "content": text}]


def generate(spec: SyntheticSpec = SyntheticSpec()) -> dict[str, list[dict]]:
    """Generate every split of the built-in task deterministically from ``spec``.

    Returns ``{"sft", "train_prefs", "test_prefs", "eval_prompts", "dev_prompts"}``; prompts are disjoint
    across splits so held-out evaluation is held out.
    """
    rng = random.Random(spec.seed)
    seen: set[str] = set()

    def fresh_prompt() -> str:
        while True:
            p = _prompt(rng)
            if p not in seen:
                seen.add(p)
                return p

    def pref_row(i: int, split: str) -> dict:
        prompt = fresh_prompt()
        cands = _candidates(prompt, rng)
        ratings = [judge_rating(true_reward(prompt, c), rng, spec.judge_noise) for c in cands]
        best = max(ratings)
        chosen_i = rng.choice([k for k, r in enumerate(ratings) if r == best])
        rejected_i = rng.choice([k for k in range(len(cands)) if k != chosen_i])  # cands are distinct
        return {
            "prompt_id": f"{split}-{i:05d}",
            "prompt": prompt,
            "chosen": _chat(prompt) + _chat(cands[chosen_i], "assistant"),
            "rejected": _chat(prompt) + _chat(cands[rejected_i], "assistant"),
            "score_chosen": ratings[chosen_i],
            "score_rejected": ratings[rejected_i],
        }

    out: dict[str, list[dict]] = {"sft": [], "train_prefs": [], "test_prefs": [], "eval_prompts": [],
                                  "dev_prompts": []}
    names, weights = zip(*spec.sft_sources)
    for i in range(spec.n_sft):
        p = fresh_prompt()
        kind = rng.choices(names, weights)[0]
        out["sft"].append({"prompt_id": f"sft-{i:05d}", "prompt": p, "source": kind,
                           "messages": _chat(p) + _chat(response_kinds(p, rng)[kind], "assistant")})
    out["train_prefs"] = [pref_row(i, "train") for i in range(spec.n_train_prefs)]
    out["test_prefs"] = [pref_row(i, "test") for i in range(spec.n_test_prefs)]
    for i in range(spec.n_eval_prompts):
        out["eval_prompts"].append({"prompt_id": f"eval-{i:05d}", "prompt": fresh_prompt()})
    for i in range(spec.n_dev_prompts):
        out["dev_prompts"].append({"prompt_id": f"dev-{i:05d}", "prompt": fresh_prompt()})
    return out


def write(directory: str | Path, spec: SyntheticSpec = SyntheticSpec()) -> dict[str, Path]:
    """Write every split as ``<split>.jsonl`` under ``directory``; returns the paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, rows in generate(spec).items():
        path = directory / f"{split}.jsonl"
        with path.open("w") as f:
            for row in rows:
                f.write(json.dumps(row, sort_keys=True) + "\n")
        paths[split] = path
    return paths


def builtin_path(split: str) -> Path:
    """Path of a built-in split: the shipped ``data/synthetic`` file (``write`` regenerates them)."""
    return shipped_file(f"synthetic/{split}.jsonl")


def response_text(value) -> str:
    """The text of a field that is plain text or a chat message list (its last message)."""
    return value[-1]["content"] if isinstance(value, list) else value


def true_reward_margins(dataset) -> list[float]:
    """Ground-truth reward of chosen minus rejected for every pair of the built-in task.

    Set beside the rating margins it shows how reliable each rating margin is as a comparison.
    """
    out = []
    for row in dataset:
        prompt = response_text(row["prompt"])  # the (last) user turn holds the task
        out.append(true_reward(prompt, response_text(row["chosen"])) - true_reward(prompt, response_text(row["rejected"])))
    return out


def chosen_rewards(dataset) -> list[float]:
    """Ground-truth reward of every pair's chosen response: is a pair's chosen answer a good demonstration?"""
    return [true_reward(response_text(row["prompt"]), response_text(row["chosen"])) for row in dataset]


def label_lines(pairs: list[dict]) -> list[str]:
    """For worked pairs of the built-in task (``summary["worked_pairs"]``): the true rewards of each
    pair's two answers and whether its rating label is right, one sentence per pair."""
    lines = []
    for p in pairs:
        prompt = response_text(p["prompt"])
        chosen, rejected = (response_text(p[k]) for k in ("chosen", "rejected"))
        rc, rr = true_reward(prompt, chosen), true_reward(prompt, rejected)
        verdict = ("the label is right: the chosen answer is the better one" if rc > rr else
                   "the label is wrong: the rejected answer is the better one" if rc < rr else
                   "the two answers are equally good: the label says nothing")
        side = "hard" if p["hard (m < tau)"] else "easy"
        lines.append(f"{side} pair (m = {p['margin m']:g}): chosen {chosen!r} true reward {rc:.3f}, rejected "
                     f"{rejected!r} {rr:.3f}: {verdict}")
    return lines


def agreement_by_margin(margins, true_margins, edges=(0.0, 0.5, 1.5, 3.0, 5.0, 11.0)) -> list[dict]:
    """Per margin bin: pairs, and the share whose chosen response truly is better (true margin > 0)."""
    import numpy as np

    m, t = np.asarray(margins, dtype=float), np.asarray(true_margins, dtype=float)
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (m >= lo) & (m < hi)
        rows.append({"margin_bin": f"[{lo:g}, {hi:g})", "pairs": int(sel.sum()),
                     "chosen_truly_better": float((t[sel] > 0).mean()) if sel.any() else float("nan"),
                     "tie_in_true_reward": float((t[sel] == 0).mean()) if sel.any() else float("nan")})
    return rows
