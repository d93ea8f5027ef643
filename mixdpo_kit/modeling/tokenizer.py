"""A model folder's tokenizer, loaded as it was saved."""
from __future__ import annotations

from transformers import AutoTokenizer, PreTrainedTokenizerFast


def auto_tokenizer(name_or_path: str, revision: str | None = None, trust_remote_code: bool = False):
    """``AutoTokenizer.from_pretrained``, except that a tokenizer saved as a plain ``tokenizers``
    pipeline (``tokenizer_class: TokenizersBackend``, what transformers 5 writes for one) loads as
    saved: for some model types (Qwen2) transformers would rebuild it with that family's own
    pre-tokenizer, and a word-level vocabulary would lose most of its words."""
    from transformers.models.auto.tokenization_auto import get_tokenizer_config

    declared = get_tokenizer_config(name_or_path, revision=revision).get("tokenizer_class")
    if declared == "TokenizersBackend":
        return PreTrainedTokenizerFast.from_pretrained(name_or_path, revision=revision)
    return AutoTokenizer.from_pretrained(name_or_path, revision=revision, trust_remote_code=trust_remote_code)
