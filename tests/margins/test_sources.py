"""Margin sources beyond ratings: a reward model's gap (cached, batch-independent), the reference's likelihood gap, columns, callables and normalisation."""
import math
import numpy as np
import pytest
import torch

from mixdpo_kit.data.loading import normalise
from mixdpo_kit.margins.scoring import reward_model_margins
from mixdpo_kit.margins.sources import compute_margins, normalize_margins, rank_correlation
from mixdpo_kit.modeling.model import build_policy
from mixdpo_kit.modeling.tiny import build_tiny_reward_model
from mixdpo_kit.training.pipeline import analyze_data


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
    assert report.dropped == {"missing or non-numeric value in column 'rm_gap'": 2}
    assert report.rows_read == report.rows_kept + sum(report.dropped.values())
    assert compute_margins(ds, "column:rm_gap").tolist() == [0.5, 2.0, 1.0, 3.0]
    assert compute_margins(ds, lambda d: np.arange(len(d))).tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="finite"):
        compute_margins(ds, lambda d: [1.0, math.nan, 0.0, 0.0])
    z = normalize_margins([1.0, 2.0, 3.0], "zscore")
    assert z.mean() == pytest.approx(0) and z.std() == pytest.approx(1)
    assert normalize_margins([5.0, 1.0, 1.0, 9.0], "rank").tolist() == pytest.approx([2 / 3, 1 / 6, 1 / 6, 1.0])
    assert rank_correlation([1, 2, 3], [3, 2, 1]) == pytest.approx(-1)
