"""Turn canonical pairs into token ids, with the prompt/response boundary resolved in token space.

Rules (each guards against a known trap):
- Conversational prompts are rendered with the tokenizer's own chat template; the response is
  the text the template adds after the generation prompt, so no hand-written template is used.
- Prompt and response are tokenised separately, so no token merges across the boundary.
- Rendered templates already carry their special tokens: they are tokenised with
  ``add_special_tokens=False`` (no second BOS). Plain-text prompts get the tokenizer's BOS.
- Responses end with exactly one EOS (the template's end-of-turn when it is the EOS, else
  appended); text the template adds after that EOS (e.g. a newline) is not trained on.
- Over-long pairs: the prompt keeps its end (at most ``max_prompt_length`` tokens), the response
  keeps its start; pairs whose response would vanish are dropped and counted.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import datasets

from mixdpo_kit.core.config import DataConfig
from mixdpo_kit.data.loading import DataError, DataReport

# The token-id columns tokenize_pairs adds: what the trainer, the reference cache and the
# model-based margins read of a tokenised pair.
TOKEN_COLUMNS = ("prompt_ids", "chosen_ids", "rejected_ids")


@dataclass(frozen=True)
class TokenizationSettings:
    """Everything that changes token ids; part of the reference-cache key."""

    max_length: int
    max_prompt_length: int
    truncation: str = DataConfig.truncation  # "truncate" or "drop"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_config(cls, data_cfg) -> "TokenizationSettings":
        """The settings of a :class:`~mixdpo_kit.core.config.DataConfig`."""
        return cls(data_cfg.max_length, data_cfg.max_prompt_length, data_cfg.truncation)


def render_prompt(tokenizer, prompt) -> str:
    """The prompt as text the model sees before its answer (chat template with generation prompt)."""
    if isinstance(prompt, str):
        return prompt
    if not getattr(tokenizer, "chat_template", None):
        raise DataError("conversational data needs a tokenizer with a chat template; this tokenizer has none")
    return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)


def render_response(tokenizer, prompt, response: str) -> str:
    """The text the chat template appends for ``response`` after the rendered prompt."""
    if isinstance(prompt, str):
        return response
    head = render_prompt(tokenizer, prompt)
    full = tokenizer.apply_chat_template(prompt + [{"role": "assistant", "content": response}], tokenize=False)
    if not full.startswith(head):
        raise DataError(
            "the chat template renders the prompt differently with and without the answer, so the "
            f"response boundary is ambiguous: {head[-60:]!r} vs {full[len(head) - 60:len(head)]!r}"
        )
    return full[len(head):]


def encode_prompt(tokenizer, prompt) -> list[int]:
    """Prompt token ids, with exactly the BOS the model expects."""
    if isinstance(prompt, str):
        ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    else:
        ids = tokenizer(render_prompt(tokenizer, prompt), add_special_tokens=False)["input_ids"]
    bos = tokenizer.bos_token_id
    while bos is not None and len(ids) > 1 and ids[0] == bos and ids[1] == bos:
        ids = ids[1:]
    return ids


def encode_response(tokenizer, prompt, response: str) -> list[int]:
    """Response token ids ending in one EOS."""
    ids = tokenizer(render_response(tokenizer, prompt, response), add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    if eos in ids:
        ids = ids[: len(ids) - ids[::-1].index(eos)]  # cut what the template adds after the last EOS
    else:
        ids = ids + [eos]
    return ids


def truncate(prompt_ids: list[int], response_ids: list[int], s: TokenizationSettings):
    """Apply the truncation rules; returns (prompt, response, was_truncated)."""
    p, r = prompt_ids, response_ids
    if len(p) + len(r) <= s.max_length and len(p) <= s.max_prompt_length:
        return p, r, False
    p = p[-s.max_prompt_length:]
    r = r[: max(0, s.max_length - len(p))]
    return p, r, True


def tokenize_pairs(ds: datasets.Dataset, tokenizer, settings: TokenizationSettings,
                   report: DataReport | None = None, with_rejected: bool = True) -> tuple[datasets.Dataset, list[int]]:
    """Add ``prompt_ids``, ``chosen_ids`` and ``rejected_ids``; returns (dataset, kept positions).

    Dropped pairs (over-long under ``truncation="drop"``, or a response truncated away) are
    counted in ``report``; the kept positions let callers keep margins and masks aligned.
    """
    rows, kept = [], []
    for pos, row in enumerate(ds):
        p = encode_prompt(tokenizer, row["prompt"])
        c = encode_response(tokenizer, row["prompt"], row["chosen"])
        r = encode_response(tokenizer, row["prompt"], row["rejected"]) if with_rejected else []
        pc, c2, tc = truncate(p, c, settings)
        pr, r2, tr = truncate(p, r, settings) if with_rejected else (pc, r, False)
        row_id = row.get("row_id", pos)
        if (tc or tr) and settings.truncation == "drop":
            if report:
                report.drop("longer than max_length / max_prompt_length", row_id)
            continue
        if not c2 or (with_rejected and not r2):
            if report:
                report.drop("response truncated away (prompt fills max_length)", row_id)
            continue
        if tc or tr:
            if report:
                report.truncated += 1
        # Both responses share the (possibly truncated) prompt: keep the shorter one.
        prompt_ids = pc if len(pc) <= len(pr) else pr
        rows.append({"prompt_ids": prompt_ids, "chosen_ids": c2, "rejected_ids": r2})
        kept.append(pos)
    if report is not None:
        report.rows_kept = len(kept)
    if not rows:
        raise DataError("no pairs left after tokenisation and truncation; raise max_length")
    tokenized = ds.select(kept)
    for column in TOKEN_COLUMNS:
        tokenized = tokenized.add_column(column, [r[column] for r in rows])
    return tokenized, kept
