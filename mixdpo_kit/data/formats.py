"""Published preference-data schemas, each a small registered function from one raw row to pairs.

A format is recognised by its columns (or named with ``data.format``) and turns a row into
canonical pairs — ``prompt`` (text or chat messages), ``chosen`` and ``rejected`` (texts), the
ratings ``score_chosen`` / ``score_rejected`` where the data rates each response, and the
format's own margin signal as a ``margin_<signal>`` column — by the dataset's own rules. A row
that cannot be used raises :class:`RowDrop` with the reason, which the loader counts.

K-wise data (raw UltraFeedback's four rated completions, Nectar's seven ranked answers) becomes
pairs by a rule, ``data.pairing``: ``best_vs_random`` (UltraFeedback-binarized's: the best
against a random other, seeded), ``best_vs_worst`` or ``all_pairs``; raw UltraFeedback's rating
is ``data.rating``: ``overall_score`` or ``fine_grained`` (the mean of the four aspect ratings).
Both choices move the margin distribution and the hard share (``docs/data_formats.md``).

Adding a format is one decorated function: ``@register_format(name, title, columns, signals)``.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any, Callable

from mixdpo_kit.core.errors import UserError

PAIRINGS = ("best_vs_random", "best_vs_worst", "all_pairs")
RATINGS = ("overall_score", "fine_grained")
PREFERENCE_LABELS = ("better", "safer")
ULTRAFEEDBACK_ASPECTS = ("helpfulness", "honesty", "instruction_following", "truthfulness")


class RowDrop(Exception):
    """This row gives no usable pair; the message is the reason it is counted under."""


@dataclass(frozen=True)
class Signal:
    """A margin signal a format carries: what one unit is, what the number means, and where a
    threshold on it sits by the dataset's own conventions (``tau_hint``)."""

    name: str
    unit: str
    meaning: str
    tau_hint: str = ""


SIGNALS = {s.name: s for s in (
    Signal("rating_gap", "rating points", "how much higher the chosen response was rated than the rejected one"),
    Signal("preference_strength", "strength points, 1–3",
           "how strongly the annotators preferred the chosen response (|preference strength|)",
           "strengths are whole numbers from 1 (slightly better) to 3 (much better): --tau 2 makes the slight "
           "preferences hard"),
    Signal("score_ratio", "vote ratio",
           "how many times the rejected comment's score the chosen comment's score is",
           "SHP's authors keep pairs with a ratio of at least 2: --tau 2 makes the pairs they would drop hard"),
    Signal("log_score_ratio", "log vote ratio", "the natural log of the chosen comment's score over the rejected one's",
           "--tau 0.693 (log 2) makes the pairs SHP's authors would drop hard"),
    Signal("rank_gap", "rank places", "how many places apart the two answers were ranked (1 = best)",
           "--tau 2 makes the pairs of neighbouring ranks hard"),
)}


@dataclass(frozen=True)
class DataOptions:
    """The choices a format's conversion takes (the ``data`` section of the config)."""

    pairing: str = "best_vs_random"
    rating: str = "overall_score"
    preference_label: str = "better"
    pairing_seed: int = 0
    columns: dict = field(default_factory=dict)

    @classmethod
    def from_config(cls, data_cfg) -> "DataOptions":
        """The options of a ``DataConfig``."""
        return cls(pairing=data_cfg.pairing, rating=data_cfg.rating, preference_label=data_cfg.preference_label,
                   pairing_seed=data_cfg.pairing_seed, columns=dict(data_cfg.columns or {}))


@dataclass(frozen=True)
class DataFormat:
    """A registered schema: the columns that identify it, its conversion and its margin signals
    (the first is the default; none: the data carries no margin of its own)."""

    name: str
    title: str
    columns: tuple[str, ...]
    pairs: Callable[[dict, DataOptions, random.Random], list[dict]]
    signals: tuple[str, ...] = ()
    kwise: bool = False
    published: tuple[str, ...] = ()  # hub datasets published in this schema

    def describe(self, options: DataOptions | None = None) -> str:
        """The format in a few words, with its K-wise choices."""
        text = self.title + (f" ({', '.join(self.published)})" if 0 < len(self.published) <= 2 else "")
        if self.kwise and options is not None:
            rating = f", rating {options.rating}" if self.name == "ultrafeedback" else ""
            text += f", pairing {options.pairing}{rating}"
        return text


FORMATS: dict[str, DataFormat] = {}


def register_format(name: str, title: str, columns: tuple[str, ...], signals: tuple[str, ...] = (),
                    kwise: bool = False, published: tuple[str, ...] = ()):
    """Decorator: register ``fn(row, options, rng) -> [pair, ...]`` as the format ``name``,
    recognised when a dataset has all of ``columns``. Formats are tried in registration order."""
    def wrap(fn):
        FORMATS[name] = DataFormat(name, title, tuple(columns), fn, tuple(signals), kwise, tuple(published))
        return fn
    return wrap


def detect_format(column_names, name: str = "auto", options: DataOptions | None = None) -> DataFormat:
    """The format named ``name``, or (``auto``) the first whose columns the data has; a column map
    in ``options`` selects the ``columns`` format. Raises ``ValueError`` saying what is missing."""
    have = set(column_names)
    if options is not None and options.columns and name == "auto":
        name = "columns"
    if name != "auto":
        if name not in FORMATS:
            raise UserError(f"unknown data format {name!r}; choose one of {['auto', *FORMATS]}")
        fmt = FORMATS[name]
        needed = mapped_columns(options) if name == "columns" else fmt.columns
        missing = [c for c in needed if c not in have]
        if missing:
            raise UserError(f"format {name!r} needs column(s) {missing}; columns found: {sorted(have)}")
        return fmt
    for fmt in FORMATS.values():
        if fmt.columns and set(fmt.columns) <= have:
            return fmt
    raise UserError(f"no known format fits the columns {sorted(have)}: pairs need chosen and rejected, or a "
                    "published schema's columns (mixdpo-kit formats lists them); map yours with data.columns, e.g. "
                    "--data.columns prompt=question,chosen=good,rejected=bad")


def number(value: Any, what: str) -> float:
    """A finite float, or a :class:`RowDrop` naming ``what`` is not a number."""
    if isinstance(value, bool) or value is None:
        raise RowDrop(f"{what} missing or not a number")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise RowDrop(f"{what} missing or not a number") from None
    if not math.isfinite(x):
        raise RowDrop(f"{what} missing or not a number")
    return x


def user_prompt(text: Any) -> list[dict]:
    """A single-turn chat prompt."""
    return [{"role": "user", "content": str(text)}]


def messages(value: Any, what: str) -> list[dict]:
    """Chat messages with role and content only, or a :class:`RowDrop`."""
    if not isinstance(value, list) or not all(isinstance(m, dict) and "role" in m and "content" in m for m in value):
        raise RowDrop(f"{what} is not a list of chat messages")
    return [{"role": m["role"], "content": m["content"]} for m in value]


def kwise_pairs(prompt, answers: list[tuple[str, float]], options: DataOptions, rng: random.Random,
                higher_is_better: bool, signal: str | None) -> list[dict]:
    """Pairs from K answers with a value each (a rating, or a rank where lower is better), by
    ``options.pairing``. Ratings become ``score_chosen`` / ``score_rejected``; with ``signal``
    (ranks), the gap is that signal's column instead. Equal values are never a pair in
    ``all_pairs``; in ``best_vs_*`` a rejected answer may tie with the best (a margin of 0)."""
    if len(answers) < 2:
        raise RowDrop("fewer than two usable answers")
    if options.pairing not in PAIRINGS:
        raise UserError(f"data.pairing must be one of {PAIRINGS}, got {options.pairing!r}")
    key = (lambda a: a[1]) if higher_is_better else (lambda a: -a[1])
    ordered = sorted(answers, key=key, reverse=True)  # best first; stable, so ties keep the data's order
    if options.pairing == "all_pairs":
        chosen_rejected = [(a, b) for i, a in enumerate(ordered) for b in ordered[i + 1:] if key(a) > key(b)]
        if not chosen_rejected:
            raise RowDrop("all answers tied: no pair under all_pairs")
    elif options.pairing == "best_vs_worst":
        chosen_rejected = [(ordered[0], ordered[-1])]
    else:
        chosen_rejected = [(ordered[0], rng.choice(ordered[1:]))]
    pairs = []
    for (c, vc), (r, vr) in chosen_rejected:
        pair = {"prompt": prompt, "chosen": c, "rejected": r}
        if signal is None:
            pair.update(score_chosen=vc, score_rejected=vr)
        else:
            pair[f"margin_{signal}"] = abs(vc - vr)
        pairs.append(pair)
    return pairs


def two_responses(prompt, first: str, second: str, chosen_index: Any, what: str) -> dict:
    """The pair of two responses where ``chosen_index`` (0 or 1) picks the chosen one."""
    if isinstance(chosen_index, bool) or chosen_index not in (0, 1, "0", "1"):
        raise RowDrop(f"{what} is not 0 or 1")
    chosen_first = int(chosen_index) == 0
    return {"prompt": prompt, "chosen": first if chosen_first else second, "rejected": second if chosen_first else first}


# ---------------------------------------------------------------- the formats (most specific first)

@register_format("ultrafeedback", "raw UltraFeedback (an instruction and rated completions)",
                 ("instruction", "completions"), signals=("rating_gap",), kwise=True, published=("openbmb/UltraFeedback",))
def ultrafeedback_pairs(row: dict, options: DataOptions, rng: random.Random) -> list[dict]:
    """Each completion's ``overall_score`` or the mean of its four aspect ratings (``fine_grained``:
    annotations' ``Rating``, "N/A" left out, else the row's ``fine-grained_score``), then pairs."""
    if options.rating not in RATINGS:
        raise UserError(f"data.rating must be one of {RATINGS}, got {options.rating!r}")
    completions = row["completions"]
    if not isinstance(completions, list):
        raise RowDrop("completions is not a list")
    answers = []
    for c in completions:
        if not isinstance(c, dict) or not str(c.get("response") or "").strip():
            continue
        if options.rating == "overall_score":
            rating = number(c.get("overall_score"), "a completion's overall_score")
        else:
            rating = fine_grained_rating(c)
        answers.append((c["response"], rating))
    return kwise_pairs(user_prompt(row["instruction"]), answers, options, rng, higher_is_better=True, signal=None)


def fine_grained_rating(completion: dict) -> float:
    """The mean of an UltraFeedback completion's aspect ratings ("N/A" left out)."""
    annotations = completion.get("annotations") or {}
    ratings = []
    for aspect in ULTRAFEEDBACK_ASPECTS:
        value = (annotations.get(aspect) or {}).get("Rating") if isinstance(annotations, dict) else None
        if value not in (None, "N/A", ""):
            ratings.append(number(value, f"a completion's {aspect} rating"))
    if ratings:
        return sum(ratings) / len(ratings)
    return number(completion.get("fine-grained_score"), "a completion's fine-grained_score")


@register_format("nectar", "Nectar (a prompt and ranked answers)", ("prompt", "answers"), signals=("rank_gap",),
                 kwise=True, published=("berkeley-nest/Nectar",))
def nectar_pairs(row: dict, options: DataOptions, rng: random.Random) -> list[dict]:
    """Answers ranked 1 (best) to K; every rank present and distinct, else the row is dropped."""
    answers = row["answers"]
    if not isinstance(answers, list):
        raise RowDrop("answers is not a list")
    ranked = []
    for a in answers:
        if not isinstance(a, dict):
            raise RowDrop("an answer is not an object with answer and rank")
        rank = a.get("rank")
        if rank is None or isinstance(rank, bool) or not isinstance(rank, (int, float)) or not math.isfinite(rank):
            raise RowDrop("tied or missing ranks")
        ranked.append((str(a.get("answer") or ""), float(rank)))
    if len(ranked) >= 2 and len({r for _, r in ranked}) < len(ranked):
        raise RowDrop("tied or missing ranks")
    usable = [(text, rank) for text, rank in ranked if text.strip()]
    return kwise_pairs(str(row["prompt"]), usable, options, rng, higher_is_better=False, signal="rank_gap")


@register_format("helpsteer2", "HelpSteer2 preference (a prompt, two responses, a preference strength)",
                 ("prompt", "response_1", "response_2", "preference_strength"), signals=("preference_strength",),
                 published=("nvidia/HelpSteer2",))
def helpsteer2_pairs(row: dict, options: DataOptions, rng: random.Random) -> list[dict]:
    """Strength −3…3: negative prefers response 1, positive response 2; 0 has no chosen response."""
    return [helpsteer_pair(user_prompt(row["prompt"]), row["response_1"], row["response_2"], row["preference_strength"])]


@register_format("helpsteer3", "HelpSteer3 preference (a conversation, two responses, an overall preference)",
                 ("context", "response1", "response2", "overall_preference"), signals=("preference_strength",),
                 published=("nvidia/HelpSteer3",))
def helpsteer3_pairs(row: dict, options: DataOptions, rng: random.Random) -> list[dict]:
    """As HelpSteer2, the prompt a conversation (``context``)."""
    return [helpsteer_pair(messages(row["context"], "context"), row["response1"], row["response2"],
                           row["overall_preference"])]


def helpsteer_pair(prompt, first, second, strength) -> dict:
    s = number(strength, "the preference strength")
    if s == 0:
        raise RowDrop("no preference (strength 0): no chosen response")
    chosen, rejected = (first, second) if s < 0 else (second, first)
    return {"prompt": prompt, "chosen": str(chosen), "rejected": str(rejected), "margin_preference_strength": abs(s)}


@register_format("shp", "SHP (a post, two comments, a label and their score ratio)",
                 ("history", "human_ref_A", "human_ref_B", "labels"), signals=("score_ratio", "log_score_ratio"),
                 published=("stanfordnlp/SHP", "stanfordnlp/SHP-2"))
def shp_pairs(row: dict, options: DataOptions, rng: random.Random) -> list[dict]:
    """``labels`` 1 prefers comment A, 0 comment B; the margin is ``score_ratio`` (the preferred
    comment's score over the other's), or computed from ``score_A`` / ``score_B``."""
    label = row["labels"]
    if isinstance(label, bool) or label not in (0, 1, "0", "1"):
        raise RowDrop("labels is not 0 or 1")
    a_preferred = int(label) == 1
    ratio = row.get("score_ratio")
    if ratio is None:
        a, b = number(row.get("score_A"), "score_A"), number(row.get("score_B"), "score_B")
        ratio = (a / b if a_preferred else b / a) if min(a, b) > 0 else None
    ratio = number(ratio, "score_ratio")
    if ratio <= 0:
        raise RowDrop("score_ratio is not positive")
    chosen, rejected = (row["human_ref_A"], row["human_ref_B"]) if a_preferred else (row["human_ref_B"], row["human_ref_A"])
    return [{"prompt": user_prompt(row["history"]), "chosen": str(chosen), "rejected": str(rejected),
             "margin_score_ratio": ratio, "margin_log_score_ratio": math.log(ratio)}]


@register_format("pku_saferlhf", "PKU-SafeRLHF (a prompt, two responses, the better and the safer one's id)",
                 ("prompt", "response_0", "response_1", "better_response_id", "safer_response_id"),
                 published=("PKU-Alignment/PKU-SafeRLHF",))
def pku_pairs(row: dict, options: DataOptions, rng: random.Random) -> list[dict]:
    """``data.preference_label`` ``better`` (``better_response_id``) or ``safer`` picks the chosen
    response; the data has no rating, so no margin of its own."""
    if options.preference_label not in PREFERENCE_LABELS:
        raise UserError(f"data.preference_label must be one of {PREFERENCE_LABELS}, got {options.preference_label!r}")
    column = f"{options.preference_label}_response_id"
    return [two_responses(user_prompt(row["prompt"]), str(row["response_0"]), str(row["response_1"]), row[column],
                          column)]


@register_format("argilla_ultrafeedback", "Argilla's UltraFeedback preferences (chosen-rating, rejected-rating)",
                 ("chosen", "rejected", "chosen-rating", "rejected-rating"), signals=("rating_gap",),
                 published=("argilla/ultrafeedback-binarized-preferences-cleaned",))
def argilla_ultrafeedback_pairs(row: dict, options: DataOptions, rng: random.Random) -> list[dict]:
    """Chosen and rejected conversations with their ratings in hyphenated columns."""
    return [rated_pair(row, "chosen-rating", "rejected-rating")]


@register_format("argilla_dpo_mix", "Argilla's DPO mixes (chosen_rating, rejected_rating)",
                 ("chosen", "rejected", "chosen_rating", "rejected_rating"), signals=("rating_gap",),
                 published=("argilla/dpo-mix-7k",))
def argilla_dpo_mix_pairs(row: dict, options: DataOptions, rng: random.Random) -> list[dict]:
    """Chosen and rejected conversations with their ratings."""
    return [rated_pair(row, "chosen_rating", "rejected_rating")]


def rated_pair(row: dict, chosen_rating: str, rejected_rating: str) -> dict:
    pair = preference_pair(row)
    pair.update(score_chosen=number(row[chosen_rating], chosen_rating),
                score_rejected=number(row[rejected_rating], rejected_rating))
    return pair


@register_format("preference", "preference pairs (TRL's formats, UltraFeedback-binarized, HH-RLHF)",
                 ("chosen", "rejected"), signals=("rating_gap",),
                 published=("HuggingFaceH4/ultrafeedback_binarized", "Anthropic/hh-rlhf", "trl-lib/*"))
def preference_pairs(row: dict, options: DataOptions, rng: random.Random) -> list[dict]:
    """TRL's standard and conversational formats (explicit or implicit prompt), UltraFeedback-
    binarized's message lists, HH-RLHF transcripts; ``score_chosen`` / ``score_rejected`` when present."""
    pair = preference_pair(row)
    for key in ("score_chosen", "score_rejected"):
        if key in row:
            try:
                pair[key] = number(row[key], key)
            except RowDrop:
                raise RowDrop("missing, non-numeric or non-finite score") from None
    return [pair]


@register_format("columns", "your columns (data.columns)", (), signals=("rating_gap",))
def mapped_pairs(row: dict, options: DataOptions, rng: random.Random) -> list[dict]:
    """``data.columns`` maps ``prompt``, ``chosen``, ``rejected`` (and ``score_chosen`` /
    ``score_rejected``), or ``prompt``, ``response_a``, ``response_b`` and ``label`` (0 or "a":
    response A is chosen; 1 or "b": B), to your column names."""
    m = options.columns
    prompt = row[m["prompt"]] if "prompt" in m else None
    if "label" in m:
        label = row[m["label"]]
        label = {"a": 0, "b": 1}.get(str(label).strip().lower(), label)
        pair = two_responses(prompt, row[m["response_a"]], row[m["response_b"]], label, f"column {m['label']!r}")
        return [preference_pair(pair)]
    pair = preference_pair({"chosen": row[m["chosen"]], "rejected": row[m["rejected"]],
                            **({"prompt": prompt} if "prompt" in m else {})})
    for key in ("score_chosen", "score_rejected"):
        if key in m:
            pair[key] = number(row[m[key]], f"column {m[key]!r}")
    return [pair]


COLUMN_MAP_KEYS = ("prompt", "chosen", "rejected", "score_chosen", "score_rejected", "response_a", "response_b", "label")


def mapped_columns(options: DataOptions | None) -> list[str]:
    """The data's columns a column map names; checks the map's keys and shape."""
    m = dict(options.columns) if options is not None else {}
    unknown = sorted(set(m) - set(COLUMN_MAP_KEYS))
    if unknown:
        raise UserError(f"data.columns: unknown key(s) {unknown}; use {list(COLUMN_MAP_KEYS)}")
    shape_ab, shape_cr = {"response_a", "response_b", "label"}, {"chosen", "rejected"}
    if not (shape_ab <= set(m) or shape_cr <= set(m)):
        raise UserError("data.columns must map chosen and rejected, or response_a, response_b and label "
                        f"(each to a column of the data); got {m}")
    return list(m.values())


# ---------------------------------------------------------------- TRL's formats and HH-RLHF

HH_ASSISTANT = "\n\nAssistant:"


def is_messages(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(m, dict) and "role" in m and "content" in m for m in value)


def _split_conversation(chosen: list, rejected: list) -> tuple[list, str, str] | None:
    """Shared prompt turns plus the final assistant texts, or None when they do not share them."""
    if not chosen or not rejected or chosen[-1]["role"] != "assistant" or rejected[-1]["role"] != "assistant":
        return None
    if chosen[:-1] != rejected[:-1]:
        return None
    return [dict(role=m["role"], content=m["content"]) for m in chosen[:-1]], chosen[-1]["content"], rejected[-1]["content"]


def split_hh_transcripts(chosen: str, rejected: str) -> tuple[str, str, str] | None:
    """HH-RLHF: prompt = shared text up to and including the last ``Assistant:`` turn marker."""
    cut = chosen.rfind(HH_ASSISTANT)
    if cut < 0:
        return None
    prefix = chosen[: cut + len(HH_ASSISTANT)]
    if not rejected.startswith(prefix):
        return None
    return prefix, chosen[len(prefix):].strip(), rejected[len(prefix):].strip()


def preference_pair(row: dict[str, Any]) -> dict[str, Any]:
    """One row of TRL's formats or HH-RLHF → ``{prompt, chosen, rejected}``, or a :class:`RowDrop`."""
    chosen, rejected, prompt = row["chosen"], row["rejected"], row.get("prompt")
    if is_messages(chosen) and is_messages(rejected):
        if is_messages(prompt):  # TRL conversational with an explicit prompt
            if not (len(chosen) == 1 and len(rejected) == 1 and chosen[0]["role"] == "assistant"
                    and rejected[0]["role"] == "assistant"):
                raise RowDrop("chosen/rejected are not a single assistant turn")
            return {"prompt": [dict(role=m["role"], content=m["content"]) for m in prompt],
                    "chosen": chosen[0]["content"], "rejected": rejected[0]["content"]}
        parts = _split_conversation(chosen, rejected)  # implicit prompt (UltraFeedback-binarized)
        if parts is None:
            raise RowDrop("chosen and rejected conversations do not share the prompt turns")
        return dict(zip(("prompt", "chosen", "rejected"), parts))
    if isinstance(chosen, str) and isinstance(rejected, str):
        if isinstance(prompt, str):
            return {"prompt": prompt, "chosen": chosen, "rejected": rejected}
        if prompt is None:
            parts = split_hh_transcripts(chosen, rejected)
            if parts is None:
                raise RowDrop("no shared prompt prefix ending in 'Assistant:' (HH-RLHF format)")
            return dict(zip(("prompt", "chosen", "rejected"), parts))
        raise RowDrop("prompt is neither text nor a message list")
    raise RowDrop("chosen/rejected are neither text nor message lists")
