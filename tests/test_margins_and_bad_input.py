"""Margin sources beyond ratings, the real HH-RLHF split, and bad input that is never lost silently."""
import json
import math
import os
import re
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch

from mixdpo_kit.data.loading import DataError, load_preferences, normalise
from mixdpo_kit.margins.scoring import reward_model_margins
from mixdpo_kit.margins.sources import compute_margins, normalize_margins, rank_correlation
from mixdpo_kit.modeling.model import build_policy
from mixdpo_kit.modeling.tiny import build_tiny_reward_model
from mixdpo_kit.training.pipeline import analyze_data, build_trainer, train

ROOT = Path(__file__).resolve().parent.parent
HH = ROOT.parent / "shared" / "data" / "hh-rlhf-harmless-base-test.jsonl.gz"


def accounted(report) -> bool:
    return report.rows_read == report.rows_kept + sum(report.dropped.values())


def test_reward_model_margins_are_cached_and_independent_of_batching(chat_pairs, tmp_path, monkeypatch):
    rm = str(build_tiny_reward_model(tmp_path / "rm"))
    ds, _ = normalise(chat_pairs)
    first = reward_model_margins(ds, rm, tmp_path / "cache", batch_size=2, max_length=64)
    assert first.shape == (6,) and np.isfinite(first).all() and np.abs(first).max() > 0
    # Different batch size (other padding) gives the same scores: padding is masked.
    again = reward_model_margins(ds, rm, tmp_path / "other", batch_size=6, max_length=64)
    np.testing.assert_allclose(first, again, atol=1e-5)
    # The second call on the same data reads the cache: no model is loaded.
    import mixdpo_kit.margins.scoring as scoring

    monkeypatch.setattr(scoring.AutoModelForSequenceClassification, "from_pretrained",
                        lambda *a, **k: (_ for _ in ()).throw(AssertionError("scored again")))
    np.testing.assert_array_equal(reward_model_margins(ds, rm, tmp_path / "cache", 2, 64), first)


def test_likelihood_gap_margins_equal_reference_per_token_gap(small_cfg):
    from mixdpo_kit.modeling.logprobs import sequence_logps
    from mixdpo_kit.modeling.pairbatch import separate_rows

    cfg = small_cfg.override(margins={"source": "likelihood_gap"}, data={"max_rows": 12})
    policy = build_policy(cfg.model)
    prep = analyze_data(cfg, policy=policy)
    ds = prep.dataset
    p, c, r = (list(ds[k]) for k in ("prompt_ids", "chosen_ids", "rejected_ids"))
    with torch.no_grad(), policy.reference() as ref:
        lc, nc = sequence_logps(ref.eval(), separate_rows(p, c, 0))
        lr, nr = sequence_logps(ref, separate_rows(p, r, 0))
    np.testing.assert_allclose(prep.margins, (lc / nc - lr / nr).numpy(), atol=1e-4)
    # Without a policy the source builds the configured model itself (as `mixdpo-kit analyze` does).
    np.testing.assert_allclose(analyze_data(cfg).margins, prep.margins, atol=1e-6)


def test_column_callable_and_normalised_sources(chat_pairs):
    rows = chat_pairs.add_column("rm_gap", ["0.5", "x", "2.0", None, "1.0", "3.0"])
    ds, report = normalise(rows, keep_columns=("rm_gap",))
    assert report.dropped == {"missing or non-numeric value in column 'rm_gap'": 2} and accounted(report)
    assert compute_margins(ds, "column:rm_gap").tolist() == [0.5, 2.0, 1.0, 3.0]
    assert compute_margins(ds, lambda d: np.arange(len(d))).tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="finite"):
        compute_margins(ds, lambda d: [1.0, math.nan, 0.0, 0.0])
    z = normalize_margins([1.0, 2.0, 3.0], "zscore")
    assert z.mean() == pytest.approx(0) and z.std() == pytest.approx(1)
    assert normalize_margins([5.0, 1.0, 1.0, 9.0], "rank").tolist() == pytest.approx([2 / 3, 1 / 6, 1 / 6, 1.0])
    assert rank_correlation([1, 2, 3], [3, 2, 1]) == pytest.approx(-1)


@pytest.mark.parametrize("policy,expect_kept,inversions", [("keep", 2, {"keep": 1}), ("swap", 2, {"swap": 1}),
                                                            ("drop", 1, {})])
def test_chosen_score_below_rejected_policy(policy, expect_kept, inversions):
    raw = datasets.Dataset.from_list([
        {"prompt": "q", "chosen": "a", "rejected": "b", "score_chosen": 2.0, "score_rejected": 5.0},
        {"prompt": "q", "chosen": "c", "rejected": "d", "score_chosen": 6.0, "score_rejected": 1.0}])
    ds, report = normalise(raw, score_order=policy)
    assert len(ds) == expect_kept and report.score_inversions == inversions and accounted(report)
    if policy == "swap":
        assert (ds[0]["chosen"], ds[0]["score_chosen"], ds[0]["score_rejected"]) == ("b", 5.0, 2.0)
    if policy == "drop":
        assert report.dropped == {"chosen score below rejected score": 1}


def test_more_bad_rows_counted_by_reason():
    rows = [{"prompt": "q", "chosen": "a", "rejected": "b", "score_chosen": 2.0, "score_rejected": 1.0},
            {"prompt": "q", "chosen": "a", "rejected": "b", "score_chosen": 2.0, "score_rejected": 1.0},
            {"prompt": "q", "chosen": "e", "rejected": "f", "score_chosen": math.inf, "score_rejected": 1.0}]
    ds, report = normalise(datasets.Dataset.from_list(rows))
    assert report.dropped == {"exact duplicate pair": 1, "missing, non-numeric or non-finite score": 1}
    hh = datasets.Dataset.from_list([{"chosen": "\n\nHuman: hi\n\nAssistant: yes",
                                      "rejected": "\n\nHuman: bye\n\nAssistant: no"},
                                     {"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: a\n\nAssistant: c"}])
    ds, report = normalise(hh)
    assert report.dropped == {"no shared prompt prefix ending in 'Assistant:' (HH-RLHF format)": 1} and len(ds) == 1
    with pytest.raises(DataError, match="no usable rows left out of 1"):
        normalise(datasets.Dataset.from_list([{"prompt": "q", "chosen": " ", "rejected": "b"}]))


def test_hh_rlhf_real_split_every_row_accounted(small_cfg, tmp_path):
    if not HH.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{HH} is missing")
        pytest.skip(f"{HH} is missing")
    ds, report = load_preferences(str(HH))
    assert report.rows_read == 2312 and accounted(report)
    assert isinstance(ds[0]["prompt"], str) and ds[0]["prompt"].endswith("Assistant:")
    cfg = small_cfg.override(data={"source": str(HH), "max_rows": None, "max_length": 48, "max_prompt_length": 32,
                                   "eval_source": None},
                             margins={"source": "likelihood_gap"}, split={"quantile": 0.2},
                             train={"max_steps": 3, "per_device_train_batch_size": 4})
    trainer, policy, prep = train(cfg, tmp_path / "hh")
    saved = json.loads((tmp_path / "hh" / "data_report.json").read_text())
    assert saved["rows_read"] == 2312
    assert saved["rows_kept"] + saved["rows_dropped"] == 2312
    assert saved["rows_kept"] == len(prep.dataset) and saved["truncated"] > 0
    assert saved["split"]["n_hard"] > 0 and saved["split"]["n_easy"] > 0
    assert len([h for h in trainer.state.log_history if "loss" in h]) == 3


def test_tau_leaving_one_route_still_trains(small_cfg, tmp_path):
    for tau, route in ((100.0, "loss/sft"), (-100.0, "loss/preference")):
        cfg = small_cfg.override(split={"tau": tau}, train={"max_steps": 2})
        policy = build_policy(cfg.model)
        with pytest.warns(UserWarning, match="no (easy|hard) pairs"):
            prep = analyze_data(cfg, policy=policy)
        trainer, _ = build_trainer(cfg, policy, prep, tmp_path / str(tau))
        trainer.train()
        assert all(route in h for h in trainer.state.log_history if "loss" in h)


def test_nonfinite_loss_stops_with_step_rows_and_kept_weights(small_cfg, tmp_path):
    cfg = small_cfg.override(train={"max_steps": 4})
    policy = build_policy(cfg.model)
    prep = analyze_data(cfg, policy=policy)
    trainer, _ = build_trainer(cfg, policy, prep, tmp_path)
    poisoned = trainer.train_dataset.map(lambda r: {"ref_chosen_logps": math.inf if r["ref_chosen_logps"] == r[
        "ref_chosen_logps"] else math.nan})
    trainer.train_dataset = poisoned
    with pytest.raises(FloatingPointError, match=r"non-finite loss .* at step 0; source rows of the batch: \[\d"):
        trainer.train()
    kept = tmp_path / "checkpoints" / "checkpoint-nonfinite-step0"
    assert (kept / "adapter_model.safetensors").exists()


def test_out_of_memory_names_the_settings_to_lower(small_cfg, tmp_path, monkeypatch):
    from mixdpo_kit.training.trainer import MixDPOTrainer

    def oom(self, *a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(MixDPOTrainer, "train", oom)
    with pytest.raises(RuntimeError, match=r"per_device_train_batch_size \(now 4.*max_length \(now 64\).*lora_r"):
        train(small_cfg, tmp_path / "oom")


def test_no_pickle_unsafe_yaml_or_remote_code_by_default():
    from mixdpo_kit.core.config import RunConfig

    sources = {p.name: p.read_text() for p in (ROOT / "mixdpo_kit").rglob("*.py")}
    for name, text in sources.items():
        assert not re.search(r"^\s*import pickle|torch\.load\(|yaml\.load\(|yaml\.unsafe_load", text, re.M), name
    assert RunConfig().model.trust_remote_code is False
    assert "trust_remote_code=cfg.trust_remote_code" in sources["model.py"]
