"""Tiny, locally built tokenizers and models for the demo and the tests.

No hub is needed: the tokenizer is a word-level ``tokenizers`` model wrapped in
``PreTrainedTokenizerFast`` with a chat template, and the models are real transformers
architectures (Llama, Qwen2, Mistral) with a few hundred thousand parameters. They are saved
with ``save_pretrained`` so every later step loads them through the same
``from_pretrained`` code path a hub model takes.
"""
from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

from mixdpo_kit.core.errors import UserError
from mixdpo_kit.data.synthetic import VOCAB_WORDS

SPECIAL = ["<pad>", "<unk>", "<s>", "<|end|>", "<|user|>", "<|assistant|>", "<|system|>"]

# A Llama-style template that emits BOS itself (so tokenising the rendered text must not add
# another one) and ends each turn with the EOS token.
CHAT_TEMPLATE_WITH_BOS = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} <|end|> {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|> {% endif %}"
)
# A Qwen-style template with no BOS at all.
CHAT_TEMPLATE_NO_BOS = (
    "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} <|end|> {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|> {% endif %}"
)


def build_tokenizer(words=VOCAB_WORDS, with_bos_in_template: bool = True) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over ``words`` with pad/unk/bos/eos and a chat template.

    Like Llama's tokenizers it prepends BOS when asked for special tokens, so rendered chat
    text tokenised with ``add_special_tokens=True`` would carry two BOS tokens; with
    ``with_bos_in_template=False`` the template behaves like Qwen's (no BOS at all).
    """
    vocab = {tok: i for i, tok in enumerate(SPECIAL + [w for w in words if w not in SPECIAL])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    # Joins words with spaces, and keeps the space before punctuation ("1 2 ." stays "1 2 ."),
    # so decoded text tokenises back to the same words.
    backend.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", vocab["<s>"])]
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="<|end|>", pad_token="<pad>", unk_token="<unk>",
        additional_special_tokens=SPECIAL[4:],
    )
    tok.chat_template = CHAT_TEMPLATE_WITH_BOS if with_bos_in_template else CHAT_TEMPLATE_NO_BOS
    return tok


def build_text_tokenizer(texts, vocab_size: int = 4000) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on ``texts`` in seconds, with the same special tokens
    and chat template as :func:`build_tokenizer`: it represents any real text (long, multi-paragraph
    answers, code, any script), so tests can train on real data at real lengths without a hub."""
    from tokenizers import trainers

    backend = Tokenizer(models.BPE(unk_token=None))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    backend.train_from_iterator(texts, trainer=trainer)
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", backend.token_to_id("<s>"))])
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="<|end|>", pad_token="<pad>", unk_token="<unk>",
        additional_special_tokens=SPECIAL[4:],
    )
    tok.chat_template = CHAT_TEMPLATE_WITH_BOS
    return tok


ARCHITECTURES = ("llama", "qwen2", "mistral")


def tiny_config(arch: str, vocab_size: int, hidden: int = 128, layers: int = 2, heads: int = 4,
                max_positions: int = 256):
    """A transformers config of ``arch`` small enough for a CPU; dropout off."""
    from transformers import LlamaConfig, MistralConfig, Qwen2Config

    common = dict(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=max(1, heads // 2), max_position_embeddings=max_positions,
        tie_word_embeddings=False, attention_dropout=0.0,
    )
    if arch == "llama":
        return LlamaConfig(**common)
    if arch == "qwen2":
        return Qwen2Config(**common)
    if arch == "mistral":
        return MistralConfig(**common, sliding_window=None)
    raise UserError(f"unknown tiny architecture {arch!r}; choose one of {ARCHITECTURES}")


def build_tiny_model(directory: str | Path, arch: str = "llama", seed: int = 0, tokenizer=None, **sizes) -> Path:
    """Create a randomly initialised tiny model plus tokenizer (the built-in task's word-level one
    unless ``tokenizer`` is given) and save both to ``directory``."""
    directory = Path(directory)
    tok = tokenizer or build_tokenizer()
    torch.manual_seed(seed)
    config = tiny_config(arch, vocab_size=len(tok), **sizes)
    config.bos_token_id, config.eos_token_id, config.pad_token_id = tok.bos_token_id, tok.eos_token_id, tok.pad_token_id
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory


def build_tiny_reward_model(directory: str | Path, seed: int = 0, **sizes) -> Path:
    """A randomly initialised tiny Llama reward model (one score per sequence) plus tokenizer."""
    from transformers import AutoModelForSequenceClassification

    directory = Path(directory)
    tok = build_tokenizer()
    torch.manual_seed(seed)
    config = tiny_config("llama", vocab_size=len(tok), **sizes)
    config.num_labels = 1
    config.pad_token_id = tok.pad_token_id
    AutoModelForSequenceClassification.from_config(config).save_pretrained(directory)
    tok.save_pretrained(directory)
    return directory
