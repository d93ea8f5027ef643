"""One row per pair, the prompt computed once: the same log-probs and gradients as one row per
sequence (fp32, 1e-5) on every tiny architecture, tied and untied heads, LoRA, full fine-tuning
and 4-bit QLoRA, with gradient checkpointing, padding, one-token responses, SFT-only pairs and
truncated pairs; the mask and positions that make it so; the fallback where attention cannot take
the mask; the trainer's loss and gradients either way."""
import pytest
import torch
from test_logprobs import VOCAB
from test_logprobs import _model as tiny_model  # tests/ is on sys.path under pytest

from mixdpo_kit.modeling import pairbatch
from mixdpo_kit.modeling.logprobs import score_pairs, token_logps
from mixdpo_kit.modeling.pairbatch import PromptSharing, layout_flops, pair_rows, prompt_sharing, shared_rows
from mixdpo_kit.modeling.shape import ModelShape
from mixdpo_kit.modeling.tiny import ARCHITECTURES

SHARED, SEPARATE = PromptSharing(True), PromptSharing(False)


def _pairs():
    """Four pairs: different prompt and response lengths (padding), one-token responses, and an
    SFT-only pair (no rejected response) in the middle."""
    g = torch.Generator().manual_seed(3)
    ids = lambda n: torch.randint(3, VOCAB, (n,), generator=g).tolist()  # noqa: E731
    prompts = [ids(n) for n in (5, 9, 1, 7)]
    chosen = [ids(n) for n in (6, 1, 11, 4)]
    rejected = [ids(3), ids(8), None, ids(1)]
    return prompts, chosen, rejected


def _model(arch: str, tied: bool, lora: bool, attn: str = "sdpa", **config_kw):
    model = tiny_model(arch, tied, lora, attn, **config_kw)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if lora:
        model.enable_input_require_grads()
    return model.train()


def _logps_and_grads(model, batch):
    model.zero_grad()
    logps, mask = token_logps(model, batch)
    (logps.sum(-1) / mask.sum(-1)).pow(2).mean().backward()  # any loss that weights responses unevenly
    return logps.detach(), mask, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _assert_same(model, pairs, pad_id=0, sharing=SHARED):
    shared, shared_mask, shared_grads = _logps_and_grads(model, pair_rows(*pairs, pad_id, sharing))
    separate, separate_mask, separate_grads = _logps_and_grads(model, pair_rows(*pairs, pad_id, SEPARATE))
    torch.testing.assert_close(shared_mask, separate_mask, rtol=0, atol=0)
    torch.testing.assert_close(shared, separate, rtol=0, atol=1e-5)
    assert set(shared_grads) == set(separate_grads) and separate_grads
    for name, g in separate_grads.items():
        torch.testing.assert_close(shared_grads[name], g, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
@pytest.mark.parametrize("lora", [True, False], ids=["lora", "full"])
def test_shared_prompt_equals_separate_rows(arch, tied, lora):
    _assert_same(_model(arch, tied, lora), _pairs())


def test_eager_attention_takes_the_mask_additively():
    _assert_same(_model("qwen2", False, True, attn="eager"), _pairs())


def test_4bit_qlora_policy_and_its_adapter_off_reference(tiny_llama):
    from mixdpo_kit.core.config import ModelConfig
    from mixdpo_kit.modeling.model import build_policy

    policy = build_policy(ModelConfig(name_or_path=tiny_llama, mode="qlora", gradient_checkpointing=True))
    with torch.no_grad():
        for name, p in policy.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    pairs, pad = _pairs(), policy.tokenizer.pad_token_id
    pairs = tuple([[t % len(policy.tokenizer) for t in x] if x else x for x in side] for side in pairs)
    _assert_same(policy.model.train(), pairs, pad)
    with policy.reference() as ref, torch.no_grad():
        shared, _ = token_logps(ref, pair_rows(*pairs, pad, SHARED))
        separate, _ = token_logps(ref, pair_rows(*pairs, pad, SEPARATE))
    torch.testing.assert_close(shared, separate, rtol=0, atol=1e-5)


def test_scoring_truncated_real_pairs_either_way(tiny_llama, chat_pairs):
    """The path of the reference cache, the evaluation and the likelihood-gap margins, on pairs
    cut by the tokenisation limits (prompt kept at its end, responses at their start)."""
    from mixdpo_kit.data.loading import normalise
    from mixdpo_kit.modeling.model import build_policy
    from mixdpo_kit.core.config import ModelConfig
    from mixdpo_kit.data.tokenization import TokenizationSettings, tokenize_pairs

    policy = build_policy(ModelConfig(name_or_path=tiny_llama, mode="lora"))
    ds, _ = tokenize_pairs(normalise(chat_pairs)[0], policy.tokenizer,
                           TokenizationSettings(max_length=8, max_prompt_length=5))
    full, _ = tokenize_pairs(normalise(chat_pairs)[0], policy.tokenizer, TokenizationSettings(1024, 512))
    assert sum(map(len, ds["chosen_ids"])) + sum(map(len, ds["prompt_ids"])) < \
        sum(map(len, full["chosen_ids"])) + sum(map(len, full["prompt_ids"]))  # really truncated
    columns = [list(ds[c]) for c in ("prompt_ids", "chosen_ids", "rejected_ids")]
    pad = policy.tokenizer.pad_token_id
    shared = score_pairs(policy.model, *columns, pad, batch_size=4, share_prompt=True)
    separate = score_pairs(policy.model, *columns, pad, batch_size=4, share_prompt=False)
    for a, b in zip(shared, separate):
        assert abs(a - b).max() < 1e-5


def test_mask_and_positions_of_a_shared_row():
    batch = shared_rows([[11, 12, 13]], [[21, 22]], [[31, 32, 33]], pad_id=0)
    mask = batch.pair_mask[0, 0]
    assert batch.input_ids[0].tolist() == [11, 12, 13, 21, 22, 31, 32, 33]
    assert batch.position_ids[0].tolist() == [0, 1, 2, 3, 4, 3, 4, 5]  # the rejected restart after the prompt
    assert not mask[5:, 3:5].any()  # rejected queries never see the chosen keys
    assert mask[5:, :3].all() and mask[3:5, :5].tril(3).bool()[:, :5].any()
    assert mask[7].tolist() == [True, True, True, False, False, True, True, True]
    # the first response token of each side is predicted from the prompt's last token
    firsts = batch.token_pos == 0
    assert batch.source_col[firsts].tolist() == [2, 2] and batch.token_col[firsts].tolist() == [3, 5]


def _causal_everywhere(segment):
    width = segment.shape[1]
    return torch.ones(width, width, dtype=torch.bool).tril().expand(len(segment), 1, width, width).clone()


def test_the_comparison_fails_on_a_leaking_mask_or_positions_that_do_not_restart(monkeypatch):
    model, pairs = _model("llama", False, True), _pairs()
    with monkeypatch.context() as m:
        m.setattr(pairbatch, "_shared_mask", _causal_everywhere)  # the rejected tokens see the chosen ones
        with pytest.raises(AssertionError):
            _assert_same(model, pairs)
    original = pairbatch._rows

    def positions_run_on(rows, pad_id, shared):
        batch = original(rows, pad_id, shared)
        if shared:
            batch.position_ids = torch.arange(batch.input_ids.shape[1]).expand_as(batch.input_ids).clone()
        return batch
    monkeypatch.setattr(pairbatch, "_rows", positions_run_on)
    with pytest.raises(AssertionError):
        _assert_same(model, pairs)


def test_attention_without_masks_falls_back_to_separate_rows_saying_so_once(capsys, monkeypatch):
    import warnings

    model = _model("llama", False, True)
    monkeypatch.setattr(model.get_base_model().config, "_attn_implementation", "flash_attention_2")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")  # Python's own filter: a note is shown once
        assert prompt_sharing(model) == SEPARATE and prompt_sharing(model) == SEPARATE
    said = [str(w.message) for w in caught if "shared-prompt mask" in str(w.message)]
    assert len(said) == 1 and "flash_attention_2" in said[0] and not capsys.readouterr().out
    assert not pair_rows(*_pairs(), 0, prompt_sharing(model)).shared
    assert prompt_sharing(model, requested=False) == SEPARATE  # the config switch


def test_a_sliding_window_shorter_than_the_batch_keeps_separate_rows():
    model = _model("mistral", False, True, sliding_window=10)
    sharing = prompt_sharing(model)
    assert (sharing.enabled, sharing.max_positions) == (True, 10)
    pairs = _pairs()
    assert not pair_rows(*pairs, 0, sharing).shared  # 9 + 8 tokens > 10: the window would be bypassed
    short = ([pairs[0][0][:3]], [pairs[1][0][:4]], [pairs[2][0][:2]])  # 3 + 4 tokens
    assert pair_rows(*short, 0, sharing).shared
    _assert_same(model, pairs, sharing=sharing)
    _assert_same(model, short, sharing=sharing)
    with pytest.raises(AssertionError):  # the window is real: a shared row past it would change the numbers
        _assert_same(model, pairs, sharing=PromptSharing(True))


def test_decoder_flops_by_hand():
    shape = ModelShape(hidden=8, layers=2, intermediate=16, vocab=10, heads=2, kv_heads=1)
    # q and o 8x8 each, k and v 8x4 each (one kv head of 4), gate/up/down 8x16 each
    assert shape.linear_params_per_layer() == 2 * 64 + 2 * 32 + 3 * 128 == 576
    # 2 layers x 3 rows x (linear 2 * 576 * 5 positions + attention 4 * 8 * 5 * 5 query-key pairs)
    assert shape.decoder_flops(rows=3, width=5) == 2 * 3 * (2 * 576 * 5 + 4 * 8 * 25)
    flops = layout_flops([[1] * 2, [1] * 4], [[1] * 3, [1]], [[1] * 5, None], shape)
    assert flops == {"shared": shape.decoder_flops(2, 10), "separate": shape.decoder_flops(3, 7)}


def test_each_batch_shares_its_prompts_only_where_the_decoder_does_less_work():
    """A short prompt before two long responses on a narrow model: the shared row's attention over
    prompt + chosen + rejected outweighs the prompt pass it saves, so the batch keeps separate rows;
    the same batch on a wide model, or with a long prompt, shares. Either way the numbers agree."""
    narrow = ModelShape(hidden=64, layers=2, intermediate=128, vocab=VOCAB, heads=4, kv_heads=2)
    wide = ModelShape(hidden=4096, layers=2, intermediate=14336, vocab=VOCAB, heads=32, kv_heads=8)
    short_prompt = ([[5] * 2] * 2, [[6] * 60] * 2, [[7] * 60] * 2)
    long_prompt = ([[5] * 60] * 2, [[6] * 20] * 2, [[7] * 20] * 2)
    choice = lambda pairs, shape: pair_rows(*pairs, 0, PromptSharing(True, None, shape)).shared  # noqa: E731
    assert not choice(short_prompt, narrow)
    assert choice(short_prompt, wide) and choice(long_prompt, narrow) and choice(long_prompt, wide)
    assert choice(short_prompt, None)  # no shape known: share whenever allowed
    assert not pair_rows(*short_prompt, 0, PromptSharing(False, None, wide)).shared  # the switch wins
    model = _model("llama", False, True)
    sharing = prompt_sharing(model)
    assert sharing.shape == ModelShape.from_config(model.get_base_model().config)
    assert not pair_rows(*short_prompt, 0, sharing).shared and pair_rows(*long_prompt, 0, sharing).shared
    torch.testing.assert_close(token_logps(model, pair_rows(*short_prompt, 0, sharing))[0],
                               token_logps(model, pair_rows(*short_prompt, 0, SHARED))[0], rtol=0, atol=1e-5)


def test_trainer_loss_and_gradients_are_the_same_either_way(small_cfg, tmp_path):
    from mixdpo_kit.modeling.model import build_policy
    from mixdpo_kit.training.pipeline import analyze_data, build_trainer
    from mixdpo_kit.training.trainer import PairCollator

    cfg = small_cfg.override(train={"precompute_reference": False}, split={"quantile": 0.5})
    policy = build_policy(cfg.model)
    prep = analyze_data(cfg, policy.tokenizer)
    trainer, _ = build_trainer(cfg, policy, prep, tmp_path)
    assert trainer.data_collator.sharing.enabled  # the default
    features = [trainer.train_dataset[i] for i in range(6)]
    assert {f["preference_weight"] > 0 for f in features} == {True, False}  # both routes in the batch
    results = []
    for sharing in (SHARED, SEPARATE):
        inputs = PairCollator(policy.tokenizer.pad_token_id, sharing)(features)
        assert inputs["input_ids"].shape[0] == (6 if sharing.enabled else 6 + sum(f["preference_weight"] > 0
                                                                                   for f in features))
        policy.model.zero_grad()
        loss = trainer.compute_loss(policy.model, inputs)
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in policy.model.named_parameters()
                                        if p.grad is not None}))
    (shared_loss, shared_grads), (separate_loss, separate_grads) = results
    torch.testing.assert_close(shared_loss, separate_loss, rtol=0, atol=1e-5)
    for name, g in separate_grads.items():
        torch.testing.assert_close(shared_grads[name], g, rtol=1e-4, atol=1e-5, msg=name)
