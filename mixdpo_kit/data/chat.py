"""Prompts and responses are plain text or chat messages (``[{"role", "content"}, ...]``): the
few ways the kit turns either into text, written once."""
from __future__ import annotations


def as_text(value, last_turn: bool = False, sep: str = " / ") -> str:
    """A prompt or response as one string: plain text as it is, chat messages joined by ``sep``
    (``last_turn``: only the last message, e.g. the question a multi-turn prompt ends on)."""
    if not isinstance(value, list):
        return str(value)
    if last_turn:
        return value[-1]["content"] if value else ""
    return sep.join(m["content"] for m in value)


def conversation_text(tokenizer, prompt, response: str, templated: bool) -> str:
    """What a reward model reads for one answer: the chat template's rendering of the conversation
    when ``templated``, else the prompt and the answer joined."""
    if templated:
        messages = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
        return tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": response}], tokenize=False)
    if isinstance(prompt, list):
        return as_text(prompt, sep="\n") + "\n" + response
    return prompt + response
