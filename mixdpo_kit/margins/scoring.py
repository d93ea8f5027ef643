"""Margins from a model: a reward model's score gap, the reference model's likelihood gap, and CHES.

All three register themselves as margin sources (see :mod:`mixdpo_kit.margins.sources`).

Reward models: any ``AutoModelForSequenceClassification`` with one output works (ArmoRM-style
multi-output heads use their first output). Conversations are rendered with the reward model's
own chat template when it has one. Texts are scored in length-sorted batches (far less padding,
same numbers); scores are cached under a key of the model and the exact texts.

Likelihood gap: the reference's mean per-token log-likelihood of chosen minus rejected, read from
(or added to) the reference log-prob cache the trainer uses.

CHES (Razin et al., "Unintentional Unalignment", arXiv 2410.08847): how alike the reference's
hidden states of the chosen and the rejected response are. With ``H+`` / ``H−`` the sums of the
final hidden states that predict each response's tokens, CHES = <H+, H−> − ||H+||²; the
length-normalised form (the default) divides by the lengths: <H+, H−>/(|y+| |y−|) − ||H+||²/|y+|².
A high CHES marks a pair on which DPO tends to lower the chosen response's likelihood, so the
margin is minus CHES (larger = easier, as for every source). Cached per data and model.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from transformers import AutoModelForSequenceClassification

from mixdpo_kit.core.cache import JsonCache, cached_items, digest
from mixdpo_kit.core.config import CacheConfig
from mixdpo_kit.core.errors import UserError
from mixdpo_kit.core.progress import bar
from mixdpo_kit.data.chat import conversation_text
from mixdpo_kit.data.tokenization import TOKEN_COLUMNS, TokenizationSettings
from mixdpo_kit.margins.sources import register_margin_source
from mixdpo_kit.modeling.logprobs import eval_mode, hidden_products_pair_batch, score_pairs
from mixdpo_kit.modeling.refcache import ReferenceCache, cache_key, reference_logps


def reward_texts(ds, tokenizer) -> tuple[list[str], list[str], bool]:
    """(chosen texts, rejected texts, rendered-with-template) for every pair."""
    templated = bool(getattr(tokenizer, "chat_template", None)) and len(ds) > 0 and isinstance(ds[0]["prompt"], list)
    chosen = [conversation_text(tokenizer, row["prompt"], row["chosen"], templated) for row in ds]
    rejected = [conversation_text(tokenizer, row["prompt"], row["rejected"], templated) for row in ds]
    return chosen, rejected, templated


def score_texts(model, tokenizer, texts: list[str], batch_size: int, max_length: int,
                add_special_tokens: bool = True, sort_by_length: bool = True) -> np.ndarray:
    """One scalar score per text from a sequence-classification model."""
    device = next(model.parameters()).device
    order = np.argsort([len(t) for t in texts], kind="stable") if sort_by_length else np.arange(len(texts))
    scores = np.empty(len(texts))
    with eval_mode(model):
        for start in bar(range(0, len(texts), batch_size), "reward model"):
            idx = order[start: start + batch_size]
            enc = tokenizer([texts[i] for i in idx], return_tensors="pt", padding=True, truncation=True,
                            max_length=max_length, add_special_tokens=add_special_tokens).to(device)
            scores[idx] = model(**enc).logits[:, 0].float().cpu().numpy()
    return scores


class RewardModelScorer:
    """A reward model's scores of lists of texts, cached on disk per list (keyed by the model, its
    weights and the exact texts); the model is loaded only when a list is not in the cache."""

    def __init__(self, name: str, cache_dir: str | Path, batch_size: int, max_length: int,
                 trust_remote_code: bool = False, device=None, models_dir: str | Path | None = None):
        from mixdpo_kit.modeling.model import resolve_model_path, weights_fingerprint
        from mixdpo_kit.modeling.tokenizer import auto_tokenizer

        self.name, self.path = name, resolve_model_path(name, models_dir)
        self.batch_size, self.max_length, self.device = batch_size, max_length, device
        self.trust_remote_code = trust_remote_code
        self.tokenizer = auto_tokenizer(self.path, trust_remote_code=trust_remote_code)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.cache = JsonCache(Path(cache_dir) / "reward_scores")
        self.fingerprint = weights_fingerprint(self.path)
        self.model = None

    @property
    def has_template(self) -> bool:
        """Whether the reward model's tokenizer has a chat template."""
        return bool(getattr(self.tokenizer, "chat_template", None))

    def scores(self, texts: list[str], templated: bool) -> np.ndarray:
        """One score per text (``templated``: rendered by the template, which adds its own special tokens)."""
        key = digest([self.name, self.fingerprint, self.max_length, templated, "per_item"], texts)
        stored = cached_items(self.cache, key, range(len(texts)), lambda share: score_texts(
            self._model(), self.tokenizer, [texts[i] for i in share], self.batch_size, self.max_length,
            not templated).tolist())
        return np.asarray([stored[str(i)] for i in range(len(texts))])

    def _model(self):
        from mixdpo_kit.modeling.model import default_device

        if self.model is None:
            self.model = AutoModelForSequenceClassification.from_pretrained(
                self.path, trust_remote_code=self.trust_remote_code)
            self.model.config.pad_token_id = self.tokenizer.pad_token_id  # finds each sequence's last token
            self.model.to(self.device or default_device())
        return self.model


def reward_model_margins(ds, model_name: str, cache_dir: str | Path, batch_size: int, max_length: int,
                         trust_remote_code: bool = False, device=None) -> np.ndarray:
    """``score(chosen) − score(rejected)`` under a reward model, cached on disk."""
    scorer = RewardModelScorer(model_name, cache_dir, batch_size, max_length, trust_remote_code, device,
                               CacheConfig(dir=str(cache_dir)).path("models"))
    chosen, rejected, templated = reward_texts(ds, scorer.tokenizer)
    return scorer.scores(chosen, templated) - scorer.scores(rejected, templated)


@register_margin_source("reward_model", "a reward model's score gap (margins.reward_model: NAME_OR_PATH)",
                        unit="reward-model score")
def reward_model_source(ds, ctx, arg=None) -> np.ndarray:
    mc = ctx.cfg.margins
    if not mc.reward_model:
        raise UserError("margin source 'reward_model' needs margins.reward_model (a model name or path)")
    return reward_model_margins(ds, mc.reward_model, ctx.cfg.cache.dir, mc.batch_size, ctx.cfg.data.max_length,
                                ctx.cfg.model.trust_remote_code)


@register_margin_source("likelihood_gap", "the reference's per-token log-likelihood gap, chosen − rejected",
                        needs_tokens=True, unit="nats per token")
def likelihood_gap_source(ds, ctx, arg=None) -> np.ndarray:
    cfg = ctx.cfg
    chosen, rejected = reference_logps(ctx.policy, ds, list(range(len(ds))), _token_settings(cfg.data),
                                       ReferenceCache(cfg.cache.dir), cfg.eval.batch_size)
    n_c = np.array([len(x) for x in ds["chosen_ids"]], float)
    n_r = np.array([len(x) for x in ds["rejected_ids"]], float)
    return np.asarray(chosen) / n_c - np.asarray(rejected) / n_r


def ches_scores(dot, chosen_sq, n_chosen, n_rejected, length_normalized: bool = True) -> np.ndarray:
    """CHES per pair from ``<H+, H->`` (``dot``), ``||H+||²`` (``chosen_sq``) and the response lengths
    in tokens: ``dot − chosen_sq``, or ``dot/(n+ n−) − chosen_sq/n+²`` when ``length_normalized``."""
    dot, sq = np.asarray(dot, np.float64), np.asarray(chosen_sq, np.float64)
    n_c, n_r = np.asarray(n_chosen, np.float64), np.asarray(n_rejected, np.float64)
    return dot / (n_c * n_r) - sq / n_c ** 2 if length_normalized else dot - sq


def reference_hidden_products(policy, ds, settings: dict, cache_dir: str | Path, batch_size: int
                              ) -> tuple[np.ndarray, np.ndarray]:
    """``<H+, H->`` and ``||H+||²`` of every tokenised pair under the policy's reference (adapter off),
    in length-sorted batches, cached under ``cache_dir/ches`` by model identity and token ids."""
    key = cache_key(policy.identity(), settings, *(ds[c] for c in TOKEN_COLUMNS))
    columns = [list(ds[c]) for c in TOKEN_COLUMNS]
    device = next(policy.model.parameters()).device

    def products(rows: list[int]) -> list[tuple[float, float]]:
        with policy.reference() as ref:
            dot, sq = score_pairs(ref, *columns, policy.tokenizer.pad_token_id, batch_size, indices=rows, device=device,
                                  desc="CHES (reference hidden states)", share_prompt=policy.config.share_prompt,
                                  pair_batch=hidden_products_pair_batch)
        return list(zip(dot.tolist(), sq.tolist()))

    stored = cached_items(JsonCache(Path(cache_dir) / "ches"), key, range(len(ds)), products)
    values = np.asarray([stored[str(i)] for i in range(len(ds))], dtype=float).reshape(len(ds), 2)
    return values[:, 0], values[:, 1]


@register_margin_source("ches", "minus the reference's CHES score (hidden-state similarity of chosen and rejected; "
                        "ches:raw without length normalisation)", needs_tokens=True,
                        unit="−CHES (hidden-state inner product)")
def ches_source(ds, ctx, arg=None) -> np.ndarray:
    if arg not in (None, "raw"):
        raise UserError(f"margin source 'ches' takes no argument or 'raw' (ches:raw), got {arg!r}")
    cfg = ctx.cfg
    dot, sq = reference_hidden_products(ctx.policy, ds, _token_settings(cfg.data), cfg.cache.dir,
                                        cfg.eval.batch_size)
    n_c = [len(x) for x in ds["chosen_ids"]]
    n_r = [len(x) for x in ds["rejected_ids"]]
    return -ches_scores(dot, sq, n_c, n_r, length_normalized=arg is None)


def _token_settings(data_cfg) -> dict:
    return TokenizationSettings.from_config(data_cfg).to_dict()

