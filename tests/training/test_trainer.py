"""The routed Trainer on a real 4-bit QLoRA tiny Llama: order, routing, reference cache, GA, resume."""
import json

import numpy as np
import pytest
import torch
from transformers import TrainerCallback

from mixdpo_kit.modeling.model import build_policy
from mixdpo_kit.modeling.refcache import ReferenceCache
from mixdpo_kit.training.pipeline import analyze_data, build_trainer
from mixdpo_kit.training.trainer import RoutedPairTrainer, PairCollator


class Recorder(TrainerCallback):
    """Stops training after ``stop_at`` steps (an interruption) when set."""

    def __init__(self, stop_at=None):
        self.stop_at = stop_at

    def on_step_end(self, args, state, control, **kw):
        if self.stop_at is not None and state.global_step >= self.stop_at:
            control.should_training_stop = True


def record_rows(trainer: RoutedPairTrainer):
    """Wrap compute_loss to record the row indices of every micro-batch."""
    seen = []
    original = trainer.compute_loss

    def compute_loss(model, inputs, *a, **kw):
        if model.training:
            seen.append(inputs["row_index"].tolist())
        return original(model, inputs, *a, **kw)

    trainer.compute_loss = compute_loss
    return seen


def make_trainer(cfg, out, **over):
    policy = build_policy(cfg.model)
    prep = analyze_data(cfg, policy.tokenizer)
    trainer, prep = build_trainer(cfg, policy, prep, out, **over)
    return policy, prep, trainer


def test_collator_sends_only_chosen_for_sft_pairs():
    feats = [{"prompt_ids": [1, 2], "chosen_ids": [3, 4], "rejected_ids": [5], "sft_weight": float(h),
              "preference_weight": float(not h), "margin": 1.0, "row_index": i,
              "ref_chosen_logps": float("nan"), "ref_rejected_logps": float("nan")}
             for i, h in enumerate([True, False, True])]
    batch = PairCollator(pad_id=0)(feats)
    assert batch["input_ids"].shape[0] == 4  # 3 chosen + 1 rejected (the easy pair)
    assert batch["input_ids"][3].tolist()[:3] == [1, 2, 5]


@pytest.mark.parametrize("order", ["easy_to_hard", "staged"])
def test_trainer_consumes_planned_order_with_grad_accum_and_epochs(small_cfg, tmp_path, order):
    cfg = small_cfg.override(curriculum={"order": order}, data={"max_rows": 12},
                             train={"max_steps": -1, "num_train_epochs": 2, "gradient_accumulation_steps": 2,
                                    "per_device_train_batch_size": 3, "save_steps": 1000})
    policy, prep, trainer = make_trainer(cfg, tmp_path)
    seen = record_rows(trainer)
    trainer.train()
    row_ids = np.asarray(prep.dataset["row_id"])
    planned = [row_ids[prep.plan.indices(e)].tolist() for e in range(2)]
    assert [r for batch in seen for r in batch] == planned[0] + planned[1]
    if order == "easy_to_hard":
        margins = prep.margins[prep.plan.indices(0)]
        assert (np.diff(margins) <= 0).all()


@pytest.mark.parametrize("share_prompt", [True, False], ids=["shared", "separate"])
def test_sft_routed_pairs_skip_rejected_and_reference_passes(small_cfg, tmp_path, share_prompt):
    cfg = small_cfg.override(train={"precompute_reference": False, "max_steps": 3}, curriculum={"order": "random"},
                             split={"quantile": 0.5}, model={"share_prompt": share_prompt})
    policy, prep, trainer = make_trainer(cfg, tmp_path)
    responses = []
    collate = trainer.data_collator
    trainer.data_collator = lambda features: (lambda b: responses.append(len(b["response_lengths"])) or b)(
        collate(features))
    rows = []
    # Every forward, policy or adapter-off reference, embeds its input ids once.
    policy.model.get_input_embeddings().register_forward_pre_hook(lambda module, args: rows.append(args[0].shape[0]))
    seen = record_rows(trainer)
    trainer.train()
    hard_by_row = dict(zip(prep.dataset["row_id"], prep.split.hard))
    expected, expected_responses = [], []
    for batch in seen:
        n_easy = sum(not hard_by_row[r] for r in batch)
        expected_responses.append(len(batch) + n_easy)  # chosen of all + rejected of easy
        # policy rows: one per pair when shared, else one per response; reference: easy pairs only, adapter off
        expected.append(len(batch) if share_prompt else len(batch) + n_easy)
        if n_easy:
            expected.append(n_easy if share_prompt else 2 * n_easy)
    assert responses[: len(seen)] == expected_responses  # the loader may collate one batch ahead
    assert rows == expected
    assert any(hard_by_row[r] for b in seen for r in b), "the test data must contain SFT-routed pairs"


def test_reference_cache_second_run_computes_nothing(small_cfg, tmp_path):
    policy = build_policy(small_cfg.model)
    prep = analyze_data(small_cfg, policy.tokenizer)
    first, second = ReferenceCache(small_cfg.cache.dir), ReferenceCache(small_cfg.cache.dir)
    t1, _ = build_trainer(small_cfg, policy, prep, tmp_path / "a", cache=first)
    assert first.computed == prep.split.n_easy > 0
    t2, _ = build_trainer(small_cfg, policy, prep, tmp_path / "b", cache=second)
    assert second.computed == 0
    a, b = np.array(t1.train_dataset["ref_chosen_logps"], dtype=float), np.array(t2.train_dataset["ref_chosen_logps"], dtype=float)
    assert np.array_equal(np.isnan(a), prep.split.hard)
    np.testing.assert_array_equal(a[~np.isnan(a)], b[~np.isnan(b)])
    # A different tokenisation is a different key: computed again.
    other = small_cfg.override(data={"max_length": 20})
    third = ReferenceCache(small_cfg.cache.dir)
    build_trainer(other, policy, analyze_data(other, policy.tokenizer), tmp_path / "c", cache=third)
    assert third.computed > 0


def test_precomputed_reference_equals_on_the_fly(small_cfg, tmp_path):
    cfg = small_cfg.override(train={"max_steps": 1})
    policy, prep, trainer = make_trainer(cfg, tmp_path)
    batch = trainer.data_collator([trainer.train_dataset[int(i)] for i in prep.plan.indices(0)[:4]])
    with torch.no_grad():
        pre = trainer.compute_loss(policy.model, batch)
        batch["ref_chosen_logps"][:] = float("nan")
        fly = trainer.compute_loss(policy.model, batch)
    assert torch.allclose(pre, fly, atol=1e-4)


class GradientRecorder(TrainerCallback):
    """Keeps the accumulated gradients the optimizer is about to apply (after any clipping)."""

    def __init__(self, model):
        self.model, self.grads = model, None

    def on_pre_optimizer_step(self, args, state, control, **kw):
        self.grads = {n: p.grad.detach().clone() for n, p in self.model.named_parameters() if p.requires_grad}


def test_gradient_accumulation_gives_the_same_update(small_cfg, tmp_path):
    # Gradients, not Adam steps: Adam's first step is about ±lr whatever the gradient's size, so it
    # would hide a loss that GA scales by 4 and flip sign on near-zero elements across CPUs.
    # Clipping is off for the same reason (a clipped gradient hides its scale).
    grads = []
    for bs, ga in [(4, 1), (1, 4)]:
        cfg = small_cfg.override(model={"mode": "lora"}, loss={"beta": 0.5}, split={"quantile": 0.3},
                                 curriculum={"order": "random"},
                                 train={"per_device_train_batch_size": bs, "gradient_accumulation_steps": ga,
                                        "max_steps": 1, "learning_rate": 1e-2, "warmup_ratio": 0.0,
                                        "lr_scheduler_type": "constant"})
        torch.manual_seed(0)
        policy = build_policy(cfg.model)
        recorder = GradientRecorder(policy.model)
        trainer, _ = build_trainer(cfg, policy, analyze_data(cfg, policy.tokenizer), tmp_path / f"{bs}_{ga}",
                                   callbacks=[recorder], save_strategy="no", max_grad_norm=0.0)
        seen = record_rows(trainer)
        trainer.train()
        grads.append(recorder.grads)
    assert len(seen) == 4 and sum(len(b) for b in seen) == 4
    norm = lambda g: torch.sqrt(sum((v ** 2).sum() for v in g.values()))  # noqa: E731
    assert norm(grads[0]) > 0
    assert norm(grads[1]) / norm(grads[0]) == pytest.approx(1.0, rel=1e-4)
    scale = max(v.abs().max() for v in grads[0].values())
    for name, g in grads[0].items():
        torch.testing.assert_close(grads[1][name], g, rtol=1e-4, atol=1e-5 * float(scale), msg=name)


def test_warmup_ratio_becomes_warmup_steps(small_cfg, tmp_path):
    from mixdpo_kit.training.pipeline import training_arguments

    args = training_arguments(small_cfg.override(train={"warmup_ratio": 0.1}), tmp_path, torch.float32)
    assert args.get_warmup_steps(200) == 20
    assert training_arguments(small_cfg.override(train={"warmup_ratio": 0.0}), tmp_path,
                              torch.float32).get_warmup_steps(200) == 0


def test_logged_metrics_per_route(small_cfg, tmp_path):
    cfg = small_cfg.override(data={"max_rows": 40}, train={"max_steps": 10}, split={"quantile": 0.5})
    policy, prep, trainer = make_trainer(cfg, tmp_path)
    trainer.train()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r]
    assert len(steps) == 10
    for key in ("loss", "learning_rate", "route/sft_fraction", "logps/chosen"):
        assert all(key in r for r in steps), key
    pure_dpo = [r for r in steps if r["route/sft_fraction"] == 0]
    pure_sft = [r for r in steps if r["route/sft_fraction"] == 1]
    assert pure_dpo and pure_sft  # easy->hard: DPO stage then SFT stage
    assert all("loss/sft" not in r and "rewards/accuracy" in r and "rewards/chosen" in r for r in pure_dpo)
    assert all("loss/preference" not in r and "rewards/accuracy" not in r for r in pure_sft)


def test_resume_reproduces_uninterrupted_losses(small_cfg, tmp_path):
    cfg = small_cfg.override(train={"max_steps": 6, "save_steps": 3})
    _, _, full = make_trainer(cfg, tmp_path / "full")
    full.train()
    _, _, part = make_trainer(cfg, tmp_path / "part", callbacks=[Recorder(stop_at=3)])
    part.train()
    assert part.state.global_step == 3
    _, _, resumed = make_trainer(cfg, tmp_path / "part")
    seen = record_rows(resumed)
    resumed.train(resume_from_checkpoint=str(tmp_path / "part" / "checkpoints" / "checkpoint-3"))
    losses = lambda t: {h["step"]: h["loss"] for h in t.state.log_history if "loss" in h}  # noqa: E731
    a, b = losses(full), losses(resumed)
    assert set(range(1, 7)) <= set(a) and set(range(4, 7)) <= set(b)
    for step in range(4, 7):
        assert b[step] == pytest.approx(a[step], rel=1e-4, abs=1e-5), step
    assert len(seen) == 3  # only the remaining steps were run


def test_planned_lr_schedule_is_the_one_the_trainer_runs(small_cfg, tmp_path):
    from mixdpo_kit.margins.curriculum import lr_schedule

    class StepRates(TrainerCallback):  # the rate each optimiser step actually applies
        def __init__(self):
            self.rates = []

        def on_pre_optimizer_step(self, args, state, control, optimizer=None, **kw):
            self.rates.append(optimizer.param_groups[0]["lr"])

    cfg = small_cfg.override(train={"max_steps": 8, "warmup_ratio": 0.25, "learning_rate": 1e-3})
    recorder = StepRates()
    _, _, trainer = make_trainer(cfg, tmp_path, save_strategy="no", callbacks=[recorder])
    trainer.train()
    planned = lr_schedule(8, cfg.train.lr_scheduler_type, cfg.train.warmup_ratio) * 1e-3
    np.testing.assert_allclose(recorder.rates, planned, rtol=1e-6, atol=1e-12)


def test_each_training_step_holds_the_models_lock(small_cfg, tmp_path):
    """While a step runs (here: inside its loss), another thread cannot take the model's lock, so a
    panel's evaluation or generation on the same model waits for the step instead of interleaving."""
    import threading

    from mixdpo_kit.modeling.logprobs import model_lock

    cfg = small_cfg.override(train={"max_steps": 2})
    policy, prep, trainer = make_trainer(cfg, tmp_path)
    original, free_during_step = trainer.compute_loss, []

    def probing(model, inputs, *a, **kw):
        got = []
        probe = threading.Thread(target=lambda: got.append(model_lock(model).acquire(blocking=False)))
        probe.start()
        probe.join()
        if got[0]:
            model_lock(model).release()
        free_during_step.append(got[0])
        return original(model, inputs, *a, **kw)

    trainer.compute_loss = probing
    trainer.train()
    assert free_during_step == [False, False]
    assert model_lock(policy.model).acquire(blocking=False)  # released between steps and after training
    model_lock(policy.model).release()
